//! The drivers: how a volume's data is stored and made reachable at its mount point.
//! `bind`, `named` and `loop` keep everything in the volume's directory; `xfsquota` keeps
//! its data in a directory with a project quota under a base of the user's, `thin` in a
//! device-mapper thin pool shared by the volumes of a state directory.
//!
//! A driver only provides storage, and reads its own options. Names, metadata, locking and
//! the reference counting of mounts by mount ID live once, in [`crate::store`], above all
//! drivers; a driver never opens the store (a snapshot's origin is handed to it).

mod bind;
mod loopback;
mod named;
pub mod thin;
mod xfsquota;

pub use bind::BindDriver;
pub use loopback::{LoopDriver, MIN_LOOP_SIZE};
pub use named::NamedDriver;
pub use thin::{ThinDevice, ThinDriver, ThinFs};
pub use xfsquota::{XfsQuotaDriver, MIN_QUOTA_SIZE};

use crate::error::VolumeResult;
use crate::spec::{Bytes, DriverKind, DriverOptions, OptionMap, VolumeName};
use crate::sys::MountTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where one volume lives: `<state>/volumes/NAME/` with `volume.json`, `_data` (the data or
/// the mount point) and, for `loop`, `disk.img`.
#[derive(Debug, Clone)]
pub struct VolumeLayout {
    pub name: VolumeName,
    pub dir: PathBuf,
}

impl VolumeLayout {
    pub fn new(name: VolumeName, dir: PathBuf) -> Self {
        VolumeLayout { name, dir }
    }
    pub fn data(&self) -> PathBuf {
        self.dir.join("_data")
    }
    pub fn image(&self) -> PathBuf {
        self.dir.join("disk.img")
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("volume.json")
    }
    /// The state directory the volume belongs to (`<state>/volumes/NAME` -> `<state>`),
    /// where what volumes share lives (thin pools).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.ancestors().nth(2).map(Path::to_path_buf).unwrap_or_default()
    }
}

/// How much room a volume takes and has, as far as its driver can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Usage {
    /// The most the volume can hold (loop: its size), when it is limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<Bytes>,
    /// Disk space the loop image really takes on the host (it is sparse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_allocated: Option<Bytes>,
    /// xfsquota: the project ID, files and directories counted, and their limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode_limit: Option<u64>,
    /// thin: how full the pool is (while the pool is active).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<thin::pool::PoolUsage>,
}

pub trait Driver {
    fn kind(&self) -> DriverKind;
    /// The settings as `key=value` options, for display.
    fn options(&self) -> BTreeMap<String, String>;
    /// Prepares the storage in `layout.dir`, a fresh directory not yet visible under the name.
    fn create(&self, layout: &VolumeLayout) -> VolumeResult<()>;
    /// Makes the data reachable at `layout.data()`: the first Mount.
    fn activate(&self, layout: &VolumeLayout) -> VolumeResult<()>;
    /// Undoes `activate`: the last Unmount. Succeeds when nothing is active.
    fn deactivate(&self, layout: &VolumeLayout) -> VolumeResult<()>;
    /// Whether the data must be mounted to be reachable; `named` data always is.
    fn mounts_on_demand(&self) -> bool {
        true
    }
    /// Whether the kernel holds what `activate` sets up.
    fn is_active(&self, layout: &VolumeLayout, mounts: &MountTable) -> bool;
    /// Lets go of kernel objects other than mounts (loop devices, thin devices) that nobody
    /// holds: before the volume's directory is deleted, and for unmounted volumes when the
    /// store is reconciled. Never deletes data.
    fn release(&self, _layout: &VolumeLayout) -> VolumeResult<()> {
        Ok(())
    }
    /// Deletes the data a driver keeps outside the volume's directory (xfsquota's
    /// directory and project, thin's device in its pool), after `release`, when the volume
    /// is removed or a half-made one is discarded. Succeeds when it is already gone.
    fn destroy(&self, _layout: &VolumeLayout) -> VolumeResult<()> {
        Ok(())
    }
    /// Undoes a create cut short by a crash, from any point of it, before the volume
    /// appeared: lets go of what it made, but never deletes data that may not be its own.
    fn abandon(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        self.release(layout)?;
        self.destroy(layout)
    }
    fn usage(&self, layout: &VolumeLayout, mounts: &MountTable) -> VolumeResult<Usage>;
}

/// A volume's driver and its settings, as persisted in `volume.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum DriverConfig {
    Bind(BindDriver),
    Named(NamedDriver),
    Loop(LoopDriver),
    XfsQuota(XfsQuotaDriver),
    Thin(ThinDriver),
}

/// The volume a new one is made from (a thin snapshot's `from`): its record, read by the
/// store under the origin's lock, which it holds until the new volume is made.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub name: &'a VolumeName,
    pub config: &'a DriverConfig,
}

impl DriverConfig {
    /// Turns the options a user gave (`-o key=value`, with `type=` choosing the driver unless
    /// `driver` is given) into a checked driver configuration. Every key must be known to
    /// the chosen driver; `type` is accepted by all.
    pub fn from_options(volume: &VolumeName, driver: Option<&str>, options: &OptionMap) -> VolumeResult<DriverConfig> {
        let options = DriverOptions::new(volume, options);
        let kind = options.kind(driver)?;
        let accepted = match kind {
            DriverKind::Bind => BindDriver::OPTIONS,
            DriverKind::Named => &[],
            DriverKind::Loop => LoopDriver::OPTIONS,
            DriverKind::XfsQuota => XfsQuotaDriver::OPTIONS,
            DriverKind::Thin => ThinDriver::OPTIONS,
        };
        options.check_known(kind, accepted)?;
        Ok(match kind {
            DriverKind::Bind => DriverConfig::Bind(BindDriver::from_options(&options)?),
            DriverKind::Named => DriverConfig::Named(NamedDriver {}),
            DriverKind::Loop => DriverConfig::Loop(LoopDriver::from_options(&options)?),
            DriverKind::XfsQuota => DriverConfig::XfsQuota(XfsQuotaDriver::from_options(&options)?),
            DriverKind::Thin => DriverConfig::Thin(ThinDriver::from_options(&options)?),
        })
    }

    pub fn driver(&self) -> &dyn Driver {
        match self {
            DriverConfig::Bind(driver) => driver,
            DriverConfig::Named(driver) => driver,
            DriverConfig::Loop(driver) => driver,
            DriverConfig::XfsQuota(driver) => driver,
            DriverConfig::Thin(driver) => driver,
        }
    }

    /// The volume this one is to be made from, which the store resolves for [`Self::create`].
    pub fn origin(&self) -> Option<&VolumeName> {
        match self {
            DriverConfig::Thin(thin) => thin.from.as_ref(),
            _ => None,
        }
    }

    /// Prepares the storage (see [`Driver::create`]) and returns the settings to record,
    /// with what creating decided (a thin volume's thin ID and size). `origin` is the
    /// volume [`Self::origin`] names, read by the store.
    pub fn create(&self, layout: &VolumeLayout, origin: Option<&Origin>) -> VolumeResult<DriverConfig> {
        match self {
            DriverConfig::Thin(thin) => thin.create_device(layout, origin).map(DriverConfig::Thin),
            other => other.driver().create(layout).map(|()| other.clone()),
        }
    }

    /// The thin pool and thin ID a created thin volume holds.
    pub fn thin_device(&self) -> Option<(&str, u32)> {
        match self {
            DriverConfig::Thin(thin) => thin.device.map(|device| (thin.pool.as_str(), device.thin_id)),
            _ => None,
        }
    }

    /// Whether a recorded volume was created with these settings (a repeated Create is
    /// then answered with the volume as it is).
    pub fn same_request(&self, requested: &DriverConfig) -> bool {
        match (self, requested) {
            (DriverConfig::Thin(recorded), DriverConfig::Thin(asked)) => recorded.request() == asked.request(),
            (recorded, asked) => recorded == asked,
        }
    }
}

/// Creates an empty directory for a mount point or for data.
fn make_dir(path: &Path) -> VolumeResult<()> {
    std::fs::create_dir(path).map_err(crate::error::VolumeError::io("creating directory", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> OptionMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options_choose_and_configure_a_driver() {
        let v = VolumeName::parse("v").unwrap();
        assert_eq!(DriverConfig::from_options(&v, None, &options(&[])).unwrap(), DriverConfig::Named(NamedDriver {}));
        assert_eq!(
            DriverConfig::from_options(&v, None, &options(&[("type", "loop"), ("size", "64M"), ("usrquota", "")])).unwrap(),
            DriverConfig::Loop(LoopDriver { size: Bytes(64 << 20), usrquota: true, grpquota: false })
        );
        assert_eq!(
            DriverConfig::from_options(&v, Some("bind"), &options(&[("source", "/srv/x"), ("ro", "true")])).unwrap(),
            DriverConfig::Bind(BindDriver { source: "/srv/x".into(), read_only: true })
        );
    }

    #[test]
    fn bad_options_are_named_in_the_error() {
        let v = VolumeName::parse("v").unwrap();
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (None, &[("type", "zfs")], "\"zfs\""),
            (Some("nfs"), &[], "\"nfs\""),
            (None, &[("type", "named"), ("size", "1G")], "size"),
            (None, &[("type", "loop"), ("size", "1G"), ("color", "red"), ("mode", "1")], "color, mode"),
            (None, &[("type", "loop")], "\"size\""),
            (None, &[("type", "loop"), ("size", "lots")], "\"lots\""),
            (None, &[("type", "loop"), ("size", "1M")], "smallest"),
            (None, &[("type", "bind")], "\"source\""),
            (None, &[("type", "bind"), ("source", "rel/dir")], "absolute"),
            (None, &[("type", "bind"), ("source", "/x"), ("ro", "maybe")], "\"maybe\""),
            (Some("named"), &[("type", "loop")], "contradicts"),
        ];
        for (driver, pairs, expected) in cases {
            let err = DriverConfig::from_options(&v, *driver, &options(pairs)).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn xfsquota_and_thin_options_are_parsed() {
        let v = VolumeName::parse("v").unwrap();
        assert_eq!(
            DriverConfig::from_options(
                &v,
                Some("xfsquota"),
                &options(&[("base", "/srv/xfs"), ("size", "10M"), ("inodes", "500")])
            )
            .unwrap(),
            DriverConfig::XfsQuota(XfsQuotaDriver { base: "/srv/xfs".into(), size: Bytes(10 << 20), inodes: Some(500) })
        );
        let DriverConfig::Thin(plain) = DriverConfig::from_options(&v, None, &options(&[("type", "thin")])).unwrap() else {
            panic!("thin")
        };
        assert_eq!((plain.pool.as_str(), plain.size, plain.fs, plain.device), ("berth", None, None, None));
        assert!(plain.setup.is_empty());
        let given = options(&[
            ("type", "thin"),
            ("size", "1G"),
            ("fs", "xfs"),
            ("pool", "fast"),
            ("loopdatasize", "256M"),
            ("loopmetadatasize", "16M"),
            ("basesize", "2G"),
        ]);
        let DriverConfig::Thin(thin) = DriverConfig::from_options(&v, None, &given).unwrap() else { panic!("thin") };
        assert_eq!((thin.pool.as_str(), thin.size, thin.fs), ("fast", Some(Bytes(1 << 30)), Some(ThinFs::Xfs)));
        assert_eq!((thin.setup.loopdatasize, thin.setup.basesize), (Some(Bytes(256 << 20)), Some(Bytes(2 << 30))));
        let DriverConfig::Thin(snapshot) =
            DriverConfig::from_options(&v, None, &options(&[("type", "thin"), ("from", "origin")])).unwrap()
        else {
            panic!("thin")
        };
        assert_eq!(snapshot.from, Some(VolumeName::parse("origin").unwrap()));
    }

    #[test]
    fn bad_xfsquota_and_thin_options_are_named_in_the_error() {
        let v = VolumeName::parse("v").unwrap();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("type", "xfsquota"), ("size", "1G")], "\"base\""),
            (&[("type", "xfsquota"), ("base", "rel"), ("size", "1G")], "absolute"),
            (&[("type", "xfsquota"), ("base", "/x")], "\"size\""),
            (&[("type", "xfsquota"), ("base", "/x"), ("size", "1K")], "smallest"),
            (&[("type", "xfsquota"), ("base", "/x"), ("size", "1G"), ("inodes", "0")], "\"0\""),
            (&[("type", "xfsquota"), ("base", "/x"), ("size", "1G"), ("pool", "p")], "pool"),
            (&[("type", "thin"), ("fs", "btrfs")], "\"btrfs\""),
            (&[("type", "thin"), ("fs", "xfs"), ("size", "100M")], "smallest is 300M"),
            (&[("type", "thin"), ("pool", "a/b")], "\"a/b\""),
            (&[("type", "thin"), ("from", "../x")], "\"../x\""),
            (&[("type", "thin"), ("from", "v")], "itself"),
            (&[("type", "thin"), ("datadev", "sdb")], "absolute"),
            (&[("type", "thin"), ("loopmetadatasize", "1M")], "smallest is 2M"),
            (&[("type", "thin"), ("base", "/x")], "base"),
        ];
        for (pairs, expected) in cases {
            let err = DriverConfig::from_options(&v, None, &options(pairs)).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }
}
