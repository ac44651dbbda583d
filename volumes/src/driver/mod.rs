//! The drivers: how a volume's data is stored and made reachable at its mount point.
//! `bind`, `named` and `loop` keep everything in the volume's directory; `xfsquota` keeps
//! its data in a directory with a project quota under a base of the user's, `thin` in a
//! device-mapper thin pool shared by the volumes of a state directory.
//!
//! A driver only provides storage. Names, metadata, locking and the reference counting of
//! mounts by mount ID live once, in [`crate::store`], above all drivers.

mod bind;
mod loopback;
mod named;
pub mod thin;
mod xfsquota;

pub use bind::BindDriver;
pub use loopback::LoopDriver;
pub use named::NamedDriver;
pub use thin::{ThinDevice, ThinDriver, ThinFs};
pub use xfsquota::XfsQuotaDriver;

use crate::error::VolumeResult;
use crate::spec::{Bytes, DriverKind, VolumeName};
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

impl DriverConfig {
    pub fn driver(&self) -> &dyn Driver {
        match self {
            DriverConfig::Bind(driver) => driver,
            DriverConfig::Named(driver) => driver,
            DriverConfig::Loop(driver) => driver,
            DriverConfig::XfsQuota(driver) => driver,
            DriverConfig::Thin(driver) => driver,
        }
    }

    /// Prepares the storage (see [`Driver::create`]) and returns the settings to record,
    /// with what creating decided (a thin volume's thin ID and size).
    pub fn create(&self, layout: &VolumeLayout) -> VolumeResult<DriverConfig> {
        match self {
            DriverConfig::Thin(thin) => thin.create_device(layout).map(DriverConfig::Thin),
            other => other.driver().create(layout).map(|()| other.clone()),
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
