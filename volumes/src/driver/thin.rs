//! `thin`: a thin device of a device-mapper thin pool (see [`pool`]), of a virtual `size`,
//! formatted (ext4 or xfs) on create and mounted on the first Mount; it takes pool blocks
//! only as it is written. `from=VOL` makes a snapshot of another thin volume of the same
//! pool instead: it starts with VOL's data and the two then change apart.
//!
//! The pool is `pool=NAME` (default `berth`), made on first use: on the block devices
//! `datadev` and `metadatadev`, or, without them, on sparse files in the state directory
//! behind loop devices (`loopdatasize`, `loopmetadatasize`; Docker's loop-lvm mode, for
//! testing, not production). `basesize` is the size of volumes that name none.
//!
//! The volume record keeps the thin ID, so after a restart (or a reboot, which empties the
//! kernel's device table) the pool and its volumes are found again from the records. A
//! pool that is out of space refuses new volumes with a message saying how full it is;
//! writes into a full pool fail at once (`error_if_no_space`) and leave it consistent.
//! Needs device-mapper (`/dev/mapper/control`): elsewhere every operation fails, saying so.

pub mod pool;

use super::{make_dir, Driver, DriverConfig, Origin, Usage, VolumeLayout};
use crate::error::{VolumeError, VolumeResult};
use crate::spec::{Bytes, DriverKind, DriverOptions, VolumeName};
use crate::sys::{self, MountTable};
use devicemapper::{DmDevice, ThinPoolDev, DM};
use pool::{check_pool_name, dm_context, dm_context_if_present, Pool, PoolSetup, PoolUsage, DEFAULT_POOL};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// mkfs.xfs refuses smaller file systems.
pub const MIN_XFS_SIZE: Bytes = Bytes(300 << 20);
/// Below this mkfs.ext4 leaves almost no room for data.
pub const MIN_EXT4_SIZE: Bytes = Bytes(8 << 20);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinFs {
    #[default]
    Ext4,
    Xfs,
}

impl ThinFs {
    pub fn parse(text: &str) -> Option<ThinFs> {
        match text {
            "ext4" => Some(ThinFs::Ext4),
            "xfs" => Some(ThinFs::Xfs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ThinFs::Ext4 => "ext4",
            ThinFs::Xfs => "xfs",
        }
    }

    pub fn min_size(self) -> Bytes {
        match self {
            ThinFs::Ext4 => MIN_EXT4_SIZE,
            ThinFs::Xfs => MIN_XFS_SIZE,
        }
    }
}

impl fmt::Display for ThinFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The thin device of a created volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinDevice {
    pub thin_id: u32,
    pub size: Bytes,
    pub fs: ThinFs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinDriver {
    pub pool: String,
    /// As asked; `None`: the pool's base size (or the origin's, for a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Bytes>,
    /// As asked; `None`: ext4 (or the origin's, for a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<ThinFs>,
    /// The volume this one is a snapshot of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<VolumeName>,
    /// How to make the pool if it does not exist yet.
    #[serde(default, skip_serializing_if = "PoolSetup::is_empty")]
    pub setup: PoolSetup,
    /// Filled in by create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<ThinDevice>,
}

impl ThinDriver {
    /// What `-o` may set, besides `type`: the volume, then its pool.
    pub const OPTIONS: &'static [&'static str] =
        &["size", "fs", "pool", "from", "datadev", "metadatadev", "loopdatasize", "loopmetadatasize", "basesize"];

    /// `[-o size=SIZE] [-o fs=ext4|xfs] [-o pool=NAME] [-o from=VOLUME]`, and how to make
    /// the pool (see [`PoolSetup::from_options`]).
    pub fn from_options(options: &DriverOptions) -> VolumeResult<ThinDriver> {
        let pool = options.get("pool").unwrap_or(DEFAULT_POOL);
        check_pool_name(pool).map_err(|reason| options.invalid("pool", pool, reason))?;
        let fs = match options.get("fs") {
            None => None,
            Some(text) => Some(ThinFs::parse(text).ok_or_else(|| options.invalid("fs", text, "expected ext4 or xfs"))?),
        };
        let from = match options.get("from") {
            None => None,
            Some(origin) => Some(VolumeName::parse(origin).map_err(|err| options.invalid("from", origin, err.to_string()))?),
        };
        let volume = options.volume();
        if from.as_ref() == Some(volume) {
            return Err(options.invalid("from", volume.as_str(), "a volume cannot be a snapshot of itself"));
        }
        let min_size = fs.unwrap_or_default().min_size();
        let size = options.size("size", min_size, |minimum| format!("the smallest is {minimum}"))?;
        let setup = PoolSetup::from_options(options, min_size)?;
        Ok(ThinDriver { pool: pool.to_string(), size, fs, from, setup, device: None })
    }

    /// The settings asked for, without what create filled in: equal for the same request.
    pub fn request(&self) -> ThinDriver {
        ThinDriver { device: None, ..self.clone() }
    }

    fn device(&self, layout: &VolumeLayout) -> VolumeResult<ThinDevice> {
        self.device.ok_or_else(|| VolumeError::CorruptMetadata {
            volume: layout.name.to_string(),
            detail: "the record of this thin volume has no thin device".into(),
        })
    }

    /// Makes the volume's thin device (new and formatted, or a snapshot of `origin`, which
    /// the store resolved from `from` and holds locked) and returns the settings to record,
    /// with its thin ID.
    pub fn create_device(&self, layout: &VolumeLayout, origin: Option<&Origin>) -> VolumeResult<ThinDriver> {
        let dm = dm_context()?;
        make_dir(&layout.data())?;
        let owner = layout.name.as_str();
        let mut pool = Pool::open(&layout.state_dir(), &self.pool, Some(&self.setup), owner)?;
        let pool_dev = pool.activate(&dm)?;
        // The volume does not exist (the store checked, under its lock): IDs recorded for
        // its name are left by a create that crashed before the volume appeared.
        for stale in pool.stale_ids_of(owner) {
            pool.delete_thin(&dm, &pool_dev, stale, owner)?;
        }
        pool.check_room(&dm, &pool_dev)?;
        let device = match &self.from {
            Some(from) => {
                let origin_device = self.origin_device(from, origin, &pool, layout)?;
                let thin_id = pool.snapshot(&dm, &pool_dev, owner, origin_device.thin_id, origin_device.size)?;
                ThinDevice { thin_id, ..origin_device }
            }
            None => self.create_formatted(&dm, &mut pool, &pool_dev, owner)?,
        };
        Ok(ThinDriver { device: Some(device), ..self.clone() })
    }

    /// A new thin device of the asked (or the pool's base) size, formatted.
    fn create_formatted(&self, dm: &DM, pool: &mut Pool, pool_dev: &ThinPoolDev, owner: &str) -> VolumeResult<ThinDevice> {
        let size = self.size.unwrap_or(pool.record.base_size);
        let fs = self.fs.unwrap_or_default();
        if size < fs.min_size() {
            return Err(VolumeError::InvalidOption {
                volume: owner.to_string(),
                option: "size".into(),
                value: size.to_string(),
                reason: format!("the smallest {fs} thin volume is {}", fs.min_size()),
            });
        }
        let (thin_id, mut thin) = pool.create_thin(dm, pool_dev, owner, size)?;
        let formatted = make_fs(&thin.devnode(), fs);
        let deactivated = thin.teardown(dm).map_err(pool::dm_error("deactivating", thin.name()));
        if let Err(err) = formatted.and(deactivated) {
            let _ = pool.delete_thin(dm, pool_dev, thin_id, owner);
            return Err(match pool.check_room(dm, pool_dev) {
                Err(full) => full,
                Ok(()) => err,
            });
        }
        Ok(ThinDevice { thin_id, size, fs })
    }

    /// The thin device of the origin `from`, which must be a thin volume of the same pool
    /// whose ID the pool still gives to it; size and fs, when asked, must be the origin's.
    fn origin_device(
        &self,
        from: &VolumeName,
        origin: Option<&Origin>,
        pool: &Pool,
        layout: &VolumeLayout,
    ) -> VolumeResult<ThinDevice> {
        let Some(origin) = origin.filter(|origin| origin.name == from) else {
            return Err(VolumeError::BadRequest(format!(
                "thin volume {} is a snapshot of {from}, whose record the store must hand to its create",
                layout.name
            )));
        };
        let invalid = |reason: String| VolumeError::InvalidOption {
            volume: layout.name.to_string(),
            option: "from".into(),
            value: from.to_string(),
            reason,
        };
        let DriverConfig::Thin(thin) = origin.config else {
            return Err(invalid(format!("it is a {} volume, not a thin one", origin.config.driver().kind())));
        };
        if thin.pool != self.pool {
            return Err(invalid(format!("it is in thin pool {}, not {}", thin.pool, self.pool)));
        }
        let device = thin.device(&VolumeLayout::new(from.clone(), PathBuf::new()))?;
        if pool.owner_of(device.thin_id) != Some(from.as_str()) {
            return Err(invalid(format!("thin pool {} does not hold its thin device {}", self.pool, device.thin_id)));
        }
        if self.size.is_some_and(|size| size != device.size) {
            return Err(invalid(format!("a snapshot has its origin's size, {}", device.size)));
        }
        if self.fs.is_some_and(|fs| fs != device.fs) {
            return Err(invalid(format!("a snapshot has its origin's file system, {}", device.fs)));
        }
        Ok(device)
    }

    /// The pool's usage, if the pool is active (asking never activates it).
    pub fn pool_usage(&self, state: &Path, volume: &str) -> VolumeResult<Option<PoolUsage>> {
        let Some(dm) = dm_context_if_present()? else { return Ok(None) };
        let pool = Pool::open(state, &self.pool, None, volume)?;
        if !pool.is_active(&dm)? {
            return Ok(None);
        }
        let pool_dev = pool.activate(&dm)?;
        pool.usage(&dm, &pool_dev).map(Some)
    }
}

impl Driver for ThinDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Thin
    }

    fn options(&self) -> BTreeMap<String, String> {
        let mut options = self.setup.options();
        options.insert("pool".into(), self.pool.clone());
        if let Some(from) = &self.from {
            options.insert("from".into(), from.to_string());
        }
        let size = self.device.map(|d| d.size).or(self.size);
        let fs = self.device.map(|d| d.fs).or(self.fs);
        options.extend(size.map(|s| ("size".to_string(), s.to_string())));
        options.extend(fs.map(|f| ("fs".to_string(), f.to_string())));
        options.extend(self.device.map(|d| ("thin_id".to_string(), d.thin_id.to_string())));
        options
    }

    /// Thin volumes are made through [`DriverConfig::create`], which records the thin ID
    /// that [`ThinDriver::create_device`] returns; made here, the ID would be lost.
    fn create(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        Err(VolumeError::BadRequest(format!(
            "thin volume {} must be created through DriverConfig::create, which records its thin ID",
            layout.name
        )))
    }

    fn activate(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        let device = self.device(layout)?;
        let dm = dm_context()?;
        let pool = Pool::open(&layout.state_dir(), &self.pool, None, layout.name.as_str())?;
        // A Remove cut short after deleting the thin device leaves the volume behind, and
        // its ID may since have gone to another volume, whose data this must never show.
        let owner = pool.owner_of(device.thin_id);
        if owner != Some(layout.name.as_str()) {
            return Err(VolumeError::DeviceMapper {
                action: "activating",
                object: format!("thin device {} of volume {}", device.thin_id, layout.name),
                detail: format!(
                    "thin pool {} holds it for {} (a Remove of {} was cut short): remove the volume again",
                    self.pool,
                    owner.unwrap_or("no volume"),
                    layout.name
                ),
            });
        }
        let pool_dev = pool.activate(&dm)?;
        let thin = pool.activate_thin(&dm, &pool_dev, device.thin_id, device.size)?;
        // Snapshots of an XFS volume share its UUID, which XFS refuses twice without nouuid.
        // discard hands the blocks of deleted files back to the pool.
        let options = match device.fs {
            ThinFs::Xfs => "nouuid,discard",
            ThinFs::Ext4 => "discard",
        };
        if let Err(err) = sys::mount_fs(&thin.devnode(), &layout.data(), device.fs.as_str(), options) {
            let _ = pool.deactivate_thin(&dm, device.thin_id);
            return Err(err);
        }
        Ok(())
    }

    /// Unmounts, then removes the thin device from the kernel's table. The volume is
    /// released once unmounted: a device that someone else still holds open is removed by
    /// the next reconcile instead.
    fn deactivate(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        sys::unmount(&layout.data())?;
        let _ = self.release(layout);
        Ok(())
    }

    fn is_active(&self, layout: &VolumeLayout, mounts: &MountTable) -> bool {
        mounts.is_mount_point(&layout.data())
    }

    /// Removes the thin device from the kernel's table; its data stays in the pool. An ID
    /// the pool gives to another volume now (a Remove was cut short) is that one's: left.
    fn release(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        let (Some(device), Some(dm)) = (self.device, dm_context_if_present()?) else { return Ok(()) };
        let pool = Pool::open(&layout.state_dir(), &self.pool, None, layout.name.as_str())?;
        if pool.owner_of(device.thin_id) != Some(layout.name.as_str()) {
            return Ok(());
        }
        pool.deactivate_thin(&dm, device.thin_id)
    }

    /// Deletes the thin device and its data from the pool.
    fn destroy(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        let Some(device) = self.device else { return Ok(()) };
        delete_thin_id(&dm_context()?, &layout.state_dir(), &self.pool, device.thin_id, layout.name.as_str())
    }

    fn usage(&self, layout: &VolumeLayout, mounts: &MountTable) -> VolumeResult<Usage> {
        let mut usage = Usage {
            size_limit: self.device.map(|d| d.size),
            pool: self.pool_usage(&layout.state_dir(), layout.name.as_str())?,
            ..Usage::default()
        };
        if self.is_active(layout, mounts) {
            let (_, used, available) = sys::fs_usage(&layout.data())?;
            usage.used = Some(Bytes(used));
            usage.available = Some(Bytes(available));
        }
        Ok(usage)
    }
}

/// Deletes thin `id` of `pool` and its data, if the pool gives it to `owner`.
fn delete_thin_id(dm: &DM, state: &Path, pool: &str, id: u32, owner: &str) -> VolumeResult<()> {
    let mut pool = match Pool::open(state, pool, None, owner) {
        Ok(pool) => pool,
        // The pool is gone, and its volumes' data with it.
        Err(VolumeError::NotFound(_)) => return Ok(()),
        Err(err) => return Err(err),
    };
    let pool_dev = pool.activate(dm)?;
    pool.delete_thin(dm, &pool_dev, id, owner)
}

/// Every thin ID the pools of `state` hand out: its pool, the ID and the volume it is for.
pub fn recorded_thin_ids(state: &Path) -> VolumeResult<Vec<(String, u32, String)>> {
    let mut ids = Vec::new();
    for name in pool::pool_names(state)? {
        let pool = Pool::open(state, &name, None, &format!("(thin pool {name})"))?;
        ids.extend(pool.record.thins.iter().map(|(id, owner)| (name.clone(), *id, owner.clone())));
    }
    Ok(ids)
}

/// Deletes thin `id` of `pool`, which no volume holds (a create that a crash cut short after
/// the pool handed the ID out), with its device and data. The caller holds the lock of
/// `owner`, the volume it was handed out for, so no create of it is under way.
/// Whether it did: without device-mapper, nothing can be deleted.
pub fn delete_orphan(state: &Path, pool: &str, id: u32, owner: &str) -> VolumeResult<bool> {
    let Some(dm) = dm_context_if_present()? else { return Ok(false) };
    delete_thin_id(&dm, state, pool, id, owner).map(|()| true)
}

/// Resumes the devices of active pools of `state` that a crash left suspended; returns
/// their names.
pub fn resume_suspended(state: &Path) -> VolumeResult<Vec<String>> {
    // Without a pool there is nothing to resume, and device-mapper may well be absent.
    let names = pool::pool_names(state)?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let Some(dm) = dm_context_if_present()? else { return Ok(Vec::new()) };
    let mut resumed = Vec::new();
    for name in names {
        let pool = Pool::open(state, &name, None, &format!("(thin pool {name})"))?;
        if pool.is_active(&dm)? {
            resumed.extend(pool.resume_suspended(&dm)?);
        }
    }
    Ok(resumed)
}

/// Formats a fresh thin device. It reads as zeros where nothing was written, so neither
/// tool needs to zero or discard anything (which would only cost pool blocks and time).
fn make_fs(device: &Path, fs: ThinFs) -> VolumeResult<()> {
    match fs {
        ThinFs::Ext4 => {
            sys::run_mkfs("mkfs.ext4", &["-q", "-F", "-m", "0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"], device)
        }
        ThinFs::Xfs => sys::run_mkfs("mkfs.xfs", &["-q", "-f", "-K"], device),
    }
}

/// The device-mapper side of a thin pool, for tests and for tearing a pool down: the
/// kernel devices go (thin devices first, refusing while one is mounted), the data stays.
pub fn deactivate_pool(state: &Path, name: &str) -> VolumeResult<()> {
    let Some(dm) = dm_context_if_present()? else { return Ok(()) };
    Pool::open(state, name, None, &format!("(thin pool {name})"))?.deactivate(&dm)
}

/// A pool's usage, activating it if needed.
pub fn pool_usage(state: &Path, name: &str) -> VolumeResult<PoolUsage> {
    let dm = dm_context()?;
    let pool = Pool::open(state, name, None, &format!("(thin pool {name})"))?;
    let pool_dev = pool.activate(&dm)?;
    pool.usage(&dm, &pool_dev)
}

/// Where a pool keeps its metadata (a file in loopback mode), for thin_check once the pool
/// is deactivated.
pub fn pool_metadata(state: &Path, name: &str) -> VolumeResult<PathBuf> {
    Pool::open(state, name, None, &format!("(thin pool {name})")).map(|pool| pool.metadata_path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::NamedDriver;

    fn name(text: &str) -> VolumeName {
        VolumeName::parse(text).unwrap()
    }

    fn thin(pool: &str, from: Option<&str>, device: Option<ThinDevice>) -> ThinDriver {
        ThinDriver { pool: pool.into(), size: None, fs: None, from: from.map(name), setup: PoolSetup::default(), device }
    }

    #[test]
    fn snapshots_are_refused_unless_the_origin_is_a_thin_volume_of_the_pool() {
        let state = std::env::temp_dir().join(format!("berth-thin-origin-{}", std::process::id()));
        let setup =
            PoolSetup { loopdatasize: Some(Bytes(16 << 20)), loopmetadatasize: Some(Bytes(2 << 20)), ..Default::default() };
        let mut pool = Pool::open(&state, "p", Some(&setup), "snap").unwrap();
        pool.record.thins.insert(7, "thin-origin".into());
        let layout = VolumeLayout::new(name("snap"), state.join("volumes/snap"));
        let snapshot = thin("p", Some("thin-origin"), None);
        let refusal = |origin: Option<Origin>| {
            let from = snapshot.from.as_ref().unwrap();
            snapshot.origin_device(from, origin.as_ref(), &pool, &layout).unwrap_err().to_string()
        };
        let (origin_name, named) = (name("thin-origin"), DriverConfig::Named(NamedDriver {}));
        assert!(refusal(None).contains("the store must hand"), "{}", refusal(None));
        let not_thin = refusal(Some(Origin { name: &origin_name, config: &named }));
        assert!(not_thin.contains("it is a named volume, not a thin one"), "{not_thin}");
        let device = ThinDevice { thin_id: 7, size: Bytes(64 << 20), fs: ThinFs::Ext4 };
        let elsewhere = DriverConfig::Thin(thin("q", None, Some(device)));
        let other_pool = refusal(Some(Origin { name: &origin_name, config: &elsewhere }));
        assert!(other_pool.contains("it is in thin pool q, not p"), "{other_pool}");
        let held = DriverConfig::Thin(thin("p", None, Some(device)));
        let origin = Origin { name: &origin_name, config: &held };
        let found = snapshot.origin_device(&origin_name, Some(&origin), &pool, &layout).unwrap();
        assert_eq!(found, device);
        drop(pool);
        let _ = std::fs::remove_dir_all(&state);
    }
}
