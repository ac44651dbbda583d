//! Thin pools: a device-mapper `thin-pool` target that thin volumes take their blocks
//! from, through the devicemapper crate. A pool lives in `STATE/thin/POOL/`:
//!
//! - `pool.json`: how it is made ([`PoolSource`]), its device-mapper names, the size of new
//!   volumes, and which thin ID belongs to which volume (written before a thin device is
//!   made, so an ID is never handed out twice);
//! - `data.img`, `metadata.img`: in loopback mode, the sparse files behind it;
//!
//! and `STATE/thin/POOL.lock` (flock), held for every change to the pool.
//!
//! In the kernel, a pool is four or more devices named `berth-HASH-POOL-*`: `-meta` and
//! `-data` (linear devices over the metadata and data devices), `-pool` (the thin-pool
//! target, with `error_if_no_space`, so that a full pool fails writes at once instead of
//! queueing them for a minute), and `-ID` for each active thin volume. After a reboot they
//! are made again from `pool.json` on first use; the thin devices' data is in the pool's
//! metadata and data devices.

use crate::error::{VolumeError, VolumeResult};
use crate::spec::{Bytes, DriverOptions};
use crate::sys::loopdev;
use berth_util::fs::{remove_staged, write_durably, LockFile};
use berth_util::hash::fnv1a32;
use devicemapper::{
    DevId, Device, DmDevice, DmError, DmFlags, DmName, DmNameBuf, DmOptions, LinearDev, LinearDevTargetParams,
    LinearTargetParams, Sectors, TargetLine, ThinDev, ThinDevId, ThinPoolDev, ThinPoolStatus, ThinPoolStatusSummary, DM,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub const DEFAULT_POOL: &str = "berth";
/// Docker's loop-lvm defaults: sparse files, so they cost only what is written.
pub const DEFAULT_LOOP_DATA_SIZE: Bytes = Bytes(100 << 30);
pub const DEFAULT_LOOP_METADATA_SIZE: Bytes = Bytes(2 << 30);
/// The size of a volume that names none.
pub const DEFAULT_BASE_SIZE: Bytes = Bytes(10 << 30);
/// Smallest thin pool: its metadata and data devices.
pub const MIN_POOL_METADATA: Bytes = Bytes(2 * Bytes::MIB);
pub const MIN_POOL_DATA: Bytes = Bytes(16 * Bytes::MIB);
/// 64 KiB allocation blocks: the smallest the kernel takes, the least wasted per write.
const BLOCK_SECTORS: u64 = 128;
const SECTOR: u64 = 512;
/// dm-thin's metadata blocks are 4 KiB.
const METADATA_BLOCK: u64 = 4096;
/// The kernel uses at most this much of a metadata device.
const MAX_METADATA: Bytes = Bytes(16 << 30);
/// Thin IDs are 24-bit.
const MAX_THIN_ID: u32 = (1 << 24) - 1;
const CONTROL: &str = "/dev/mapper/control";
/// How long removing a thin device waits while it is busy.
const BUSY_PATIENCE: Duration = Duration::from_secs(5);

/// Where a pool's blocks come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum PoolSource {
    /// Block devices the user named: one for data, one for metadata.
    Devices { data: PathBuf, metadata: PathBuf },
    /// Sparse files in the pool's directory, on loop devices: Docker's "loop-lvm", for
    /// testing, not production (a loop device over a file is slow and not crash-safe).
    Loopback { data_size: Bytes, metadata_size: Bytes },
}

/// How to make a pool that does not exist yet, from a volume's options (`datadev`,
/// `metadatadev`, `loopdatasize`, `loopmetadatasize`, `basesize`); what is left out takes
/// the defaults. When the pool exists, what is given must agree with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSetup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadev: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadatadev: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loopdatasize: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loopmetadatasize: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basesize: Option<Bytes>,
}

impl PoolSetup {
    /// The pool options of a thin volume's options; `min_volume` is the least `basesize`.
    pub fn from_options(options: &DriverOptions, min_volume: Bytes) -> VolumeResult<PoolSetup> {
        let device = |key: &str| options.absolute_path(key, "it must be an absolute path to a block device");
        let size = |key: &str, minimum: Bytes| options.size(key, minimum, |minimum| format!("the smallest is {minimum}"));
        Ok(PoolSetup {
            datadev: device("datadev")?,
            metadatadev: device("metadatadev")?,
            loopdatasize: size("loopdatasize", MIN_POOL_DATA)?,
            loopmetadatasize: size("loopmetadatasize", MIN_POOL_METADATA)?,
            basesize: size("basesize", min_volume)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == PoolSetup::default()
    }

    /// The options as given, for display.
    pub fn options(&self) -> BTreeMap<String, String> {
        let mut options = BTreeMap::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                options.insert(key.to_string(), value);
            }
        };
        put("datadev", self.datadev.as_ref().map(|p| p.display().to_string()));
        put("metadatadev", self.metadatadev.as_ref().map(|p| p.display().to_string()));
        put("loopdatasize", self.loopdatasize.map(|b| b.to_string()));
        put("loopmetadatasize", self.loopmetadatasize.map(|b| b.to_string()));
        put("basesize", self.basesize.map(|b| b.to_string()));
        options
    }

    /// The pool this setup makes (checked), or why it cannot.
    fn source(&self) -> Result<PoolSource, (&'static str, String)> {
        match (&self.datadev, &self.metadatadev) {
            (Some(data), Some(metadata)) => {
                if self.loopdatasize.is_some() || self.loopmetadatasize.is_some() {
                    return Err(("loopdatasize", "loop sizes are for loopback pools, not for datadev/metadatadev".into()));
                }
                if data == metadata {
                    return Err(("metadatadev", "it must be another device than datadev".into()));
                }
                Ok(PoolSource::Devices { data: data.clone(), metadata: metadata.clone() })
            }
            (Some(_), None) => Err(("metadatadev", "datadev needs metadatadev too".into())),
            (None, Some(_)) => Err(("datadev", "metadatadev needs datadev too".into())),
            (None, None) => Ok(PoolSource::Loopback {
                data_size: self.loopdatasize.unwrap_or(DEFAULT_LOOP_DATA_SIZE),
                metadata_size: self.loopmetadatasize.unwrap_or(DEFAULT_LOOP_METADATA_SIZE),
            }),
        }
    }
}

/// `pool.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub name: String,
    /// Every device-mapper device of the pool is named `PREFIX-...`.
    pub dm_prefix: String,
    pub source: PoolSource,
    pub base_size: Bytes,
    pub created_at: String,
    /// Which volume owns which thin ID.
    #[serde(default)]
    pub thins: BTreeMap<u32, String>,
}

/// How full a pool is, as the kernel tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolUsage {
    pub name: String,
    pub data_used: Bytes,
    pub data_size: Bytes,
    pub metadata_used: Bytes,
    pub metadata_size: Bytes,
    /// `rw`, `ro`, `out_of_data_space`, or `fail`.
    pub mode: String,
    /// The kernel found the metadata damaged: run thin_check.
    pub needs_check: bool,
}

impl PoolUsage {
    pub fn is_full(&self) -> bool {
        self.mode == "out_of_data_space" || self.data_used >= self.data_size
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} data and {} of {} metadata used, mode {}",
            self.data_used, self.data_size, self.metadata_used, self.metadata_size, self.mode
        )
    }
}

/// A pool's names, checked: `[a-zA-Z0-9][a-zA-Z0-9_-]*`, at most 32 characters (they are
/// part of device-mapper names, which are short).
pub fn check_pool_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')) || name.len() > 32 {
        return Err("a pool name has 1 to 32 letters, digits, '_' or '-', starting with a letter or digit".into());
    }
    Ok(())
}

/// A device-mapper context, or a clear refusal where the kernel has no device-mapper.
pub fn dm_context() -> VolumeResult<DM> {
    check_control(Path::new(CONTROL))?;
    DM::new().map_err(dm_error("opening", CONTROL))
}

fn check_control(control: &Path) -> VolumeResult<()> {
    if control.exists() {
        return Ok(());
    }
    Err(VolumeError::Unavailable {
        driver: "thin",
        detail: format!(
            "device-mapper is not available: {} is missing (load it with `modprobe dm_thin_pool`; \
             a kernel without device-mapper cannot hold thin volumes)",
            control.display()
        ),
    })
}

/// A device-mapper context if the kernel has device-mapper at all.
pub fn dm_context_if_present() -> VolumeResult<Option<DM>> {
    if Path::new(CONTROL).exists() {
        dm_context().map(Some)
    } else {
        Ok(None)
    }
}

/// Builds the mapper for `map_err`, with the kernel's errno when that is what failed.
pub fn dm_error(action: &'static str, object: impl Display) -> impl FnOnce(DmError) -> VolumeError {
    let object = object.to_string();
    move |err| {
        let detail = match &err {
            DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)) => errno.desc().to_string(),
            other => other.to_string(),
        };
        VolumeError::DeviceMapper { action, object, detail }
    }
}

fn dm_name(name: &str) -> VolumeResult<DmNameBuf> {
    DmNameBuf::new(name.to_string()).map_err(dm_error("naming device", name))
}

/// A pool, locked until dropped.
pub struct Pool {
    dir: PathBuf,
    pub record: PoolRecord,
    _lock: LockFile,
}

impl Pool {
    /// The pool `name` of the state directory `state`, locked; made (its record, and in
    /// loopback mode its files) when it does not exist and `setup` is given. A `setup` that
    /// disagrees with an existing pool is refused, naming the option.
    pub fn open(state: &Path, name: &str, setup: Option<&PoolSetup>, volume: &str) -> VolumeResult<Pool> {
        let invalid = |option: &str, value: String, reason: String| VolumeError::InvalidOption {
            volume: volume.to_string(),
            option: option.to_string(),
            value,
            reason,
        };
        check_pool_name(name).map_err(|reason| invalid("pool", name.to_string(), reason))?;
        let pools = state.join("thin");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&pools)
            .map_err(VolumeError::io("creating directory", pools.display()))?;
        let lock = LockFile::acquire(&pools.join(format!("{name}.lock")))?;
        let dir = pools.join(name);
        let record_path = dir.join("pool.json");
        // Left by a writer killed before its rename; with the lock, no writer is under way.
        remove_staged(&record_path);
        let record = match std::fs::read(&record_path) {
            Ok(text) => serde_json::from_slice::<PoolRecord>(&text).map_err(|err| VolumeError::CorruptMetadata {
                volume: volume.to_string(),
                detail: format!("{}: {err}", record_path.display()),
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let Some(setup) = setup else {
                    return Err(VolumeError::NotFound(format!("thin pool {name} (of volume {volume}) in {}", pools.display())));
                };
                let source = setup.source().map_err(|(option, reason)| invalid(option, String::new(), reason))?;
                let record = PoolRecord {
                    name: name.to_string(),
                    dm_prefix: dm_prefix(&dir, name),
                    source,
                    base_size: setup.basesize.unwrap_or(DEFAULT_BASE_SIZE),
                    created_at: crate::timestamp::rfc3339(SystemTime::now()),
                    thins: BTreeMap::new(),
                };
                make_pool_storage(&dir, &record)?;
                let pool = Pool { dir, record, _lock: lock };
                pool.save()?;
                return Ok(pool);
            }
            Err(err) => return Err(VolumeError::io("reading", record_path.display())(err)),
        };
        if let Some(setup) = setup {
            check_agrees(&record, setup).map_err(|(option, asked, has)| {
                invalid(option, asked, format!("thin pool {name} already exists with {option} {has}"))
            })?;
        }
        Ok(Pool { dir, record, _lock: lock })
    }

    pub fn save(&self) -> VolumeResult<()> {
        let json = serde_json::to_vec_pretty(&self.record).map_err(|err| VolumeError::CorruptMetadata {
            volume: format!("(thin pool {})", self.record.name),
            detail: err.to_string(),
        })?;
        Ok(write_durably(&self.dir.join("pool.json"), &json)?)
    }

    fn name_of(&self, suffix: &str) -> VolumeResult<DmNameBuf> {
        dm_name(&format!("{}-{suffix}", self.record.dm_prefix))
    }

    pub fn thin_name(&self, id: u32) -> VolumeResult<DmNameBuf> {
        self.name_of(&id.to_string())
    }

    /// Whether the pool's thin-pool device is in the kernel now.
    pub fn is_active(&self, dm: &DM) -> VolumeResult<bool> {
        let name = self.name_of("pool")?;
        devicemapper::device_exists(dm, &name).map_err(dm_error("looking for", &*name))
    }

    /// The pool's thin-pool device, made (with its linear devices, over its block devices
    /// or loop devices attached to its files) when the kernel does not hold it yet.
    pub fn activate(&self, dm: &DM) -> VolumeResult<ThinPoolDev> {
        // Loop devices attached here are autoclear: they stay while the linear devices
        // use them, and go when those are removed. Dropping the handles is fine after that.
        let (metadata, _meta_loop) = self.backing("metadata")?;
        let (data, _data_loop) = self.backing("data")?;
        let metadata_sectors = Sectors(metadata.size.0.min(MAX_METADATA.0) / SECTOR);
        let linear = |suffix: &str, device: Device, sectors: Sectors| -> VolumeResult<LinearDev> {
            let name = self.name_of(suffix)?;
            let line =
                TargetLine::new(Sectors(0), sectors, LinearDevTargetParams::Linear(LinearTargetParams::new(device, Sectors(0))));
            LinearDev::setup(dm, &name, None, vec![line]).map_err(dm_error("setting up", &*name))
        };
        let meta_dev = linear("meta", metadata.device, metadata_sectors)?;
        let data_sectors = Sectors(data.size.0 / SECTOR / BLOCK_SECTORS * BLOCK_SECTORS);
        let data_dev = linear("data", data.device, data_sectors)?;
        let name = self.name_of("pool")?;
        ThinPoolDev::setup(
            dm,
            &name,
            None,
            meta_dev,
            data_dev,
            Sectors(BLOCK_SECTORS),
            devicemapper::DataBlocks(0),
            vec!["error_if_no_space".to_string()],
        )
        .map_err(dm_error("setting up thin pool", &*name))
    }

    /// The metadata or data device: its number and size, and the loop device attached for
    /// it here, if any (kept open until the caller's devices hold it).
    fn backing(&self, which: &str) -> VolumeResult<(BlockDevice, Option<loopdev::LoopDevice>)> {
        match &self.record.source {
            PoolSource::Devices { data, metadata } => {
                let path = if which == "data" { data } else { metadata };
                Ok((BlockDevice::of(path)?, None))
            }
            PoolSource::Loopback { .. } => {
                let image = self.dir.join(format!("{which}.img"));
                if let Some(attached) = loopdev::devices_backing(&image)?.into_iter().next() {
                    return Ok((BlockDevice::of(&attached)?, None));
                }
                let device = loopdev::attach(&image, false)?;
                Ok((BlockDevice::of(&device.path)?, Some(device)))
            }
        }
    }

    /// How full the pool is; the pool must be active.
    pub fn usage(&self, dm: &DM, pool: &ThinPoolDev) -> VolumeResult<PoolUsage> {
        let status = pool.status(dm, DmOptions::default()).map_err(dm_error("reading the status of", pool.name()))?;
        let block = BLOCK_SECTORS * SECTOR;
        let (data_used, data_size, metadata_used, metadata_size, mode, needs_check) = match status {
            ThinPoolStatus::Working(working) => {
                let mode = match working.summary {
                    ThinPoolStatusSummary::Good => "rw",
                    ThinPoolStatusSummary::ReadOnly => "ro",
                    ThinPoolStatusSummary::OutOfSpace => "out_of_data_space",
                };
                let usage = &working.usage;
                (
                    *usage.used_data * block,
                    *usage.total_data * block,
                    *usage.used_meta * METADATA_BLOCK,
                    *usage.total_meta * METADATA_BLOCK,
                    mode,
                    working.needs_check,
                )
            }
            ThinPoolStatus::Error | ThinPoolStatus::Fail => (0, 0, 0, 0, "fail", true),
        };
        Ok(PoolUsage {
            name: self.record.name.clone(),
            data_used: Bytes(data_used),
            data_size: Bytes(data_size),
            metadata_used: Bytes(metadata_used),
            metadata_size: Bytes(metadata_size),
            mode: mode.to_string(),
            needs_check,
        })
    }

    /// Refuses new volumes in a pool that is out of space, or broken, with what it holds.
    pub fn check_room(&self, dm: &DM, pool: &ThinPoolDev) -> VolumeResult<()> {
        let usage = self.usage(dm, pool)?;
        if usage.is_full() || usage.mode != "rw" || usage.needs_check {
            return Err(VolumeError::PoolFull {
                pool: self.record.name.clone(),
                detail: format!("{}; remove volumes or give it a larger data device", usage.describe()),
            });
        }
        Ok(())
    }

    /// A free thin ID, recorded for `owner` before the device is made.
    fn reserve(&mut self, owner: &str) -> VolumeResult<u32> {
        let id = (1..=MAX_THIN_ID).find(|id| !self.record.thins.contains_key(id)).ok_or_else(|| VolumeError::PoolFull {
            pool: self.record.name.clone(),
            detail: format!("all {MAX_THIN_ID} thin IDs are taken"),
        })?;
        self.record.thins.insert(id, owner.to_string());
        self.save()?;
        Ok(id)
    }

    fn thin_id(id: u32) -> VolumeResult<ThinDevId> {
        ThinDevId::new_u64(u64::from(id)).map_err(dm_error("using thin ID", id))
    }

    /// Makes a new, empty thin device of `size` for `owner` and returns its ID and the
    /// active device.
    pub fn create_thin(&mut self, dm: &DM, pool: &ThinPoolDev, owner: &str, size: Bytes) -> VolumeResult<(u32, ThinDev)> {
        let id = self.reserve(owner)?;
        let name = self.thin_name(id)?;
        match ThinDev::new(dm, &name, None, Sectors(size.0 / SECTOR), pool, Self::thin_id(id)?) {
            Ok(thin) => Ok((id, thin)),
            Err(err) => {
                // Delete the ID if the pool made it before the device failed.
                let _ = devicemapper::message(dm, pool, &format!("delete {id}"));
                self.record.thins.remove(&id);
                let _ = self.save();
                Err(dm_error("creating thin device", format!("{} for volume {owner}", &*name))(err))
            }
        }
    }

    /// Makes a snapshot of thin `origin` (of `size`) for `owner`; returns its ID. An active
    /// origin is suspended meanwhile, which flushes and freezes a file system on it, so the
    /// snapshot holds a clean file system.
    pub fn snapshot(&mut self, dm: &DM, pool: &ThinPoolDev, owner: &str, origin: u32, size: Bytes) -> VolumeResult<u32> {
        let id = self.reserve(owner)?;
        let (origin_name, snapshot_name) = (self.thin_name(origin)?, self.thin_name(id)?);
        let (origin_id, snapshot_id) = (Self::thin_id(origin)?, Self::thin_id(id)?);
        let made = if devicemapper::device_exists(dm, &origin_name).map_err(dm_error("looking for", &*origin_name))? {
            ThinDev::setup(dm, &origin_name, None, Sectors(size.0 / SECTOR), pool, origin_id).and_then(|origin_dev| {
                let snapshot = origin_dev.snapshot(dm, &snapshot_name, None, pool, snapshot_id);
                // The crate leaves the origin suspended when the pool refuses the snapshot,
                // and every write to the mounted origin would wait for ever.
                let _ = resume(dm, &origin_name);
                // The snapshot comes out active: it is activated again on its first Mount.
                snapshot?.teardown(dm)
            })
        } else {
            devicemapper::message(dm, pool, &format!("create_snap {id} {origin}"))
        };
        if let Err(err) = made {
            let _ = remove_if_present(dm, &snapshot_name);
            let _ = devicemapper::message(dm, pool, &format!("delete {id}"));
            self.record.thins.remove(&id);
            let _ = self.save();
            return Err(dm_error("snapshotting", format!("thin device {origin} for volume {owner}"))(err));
        }
        Ok(id)
    }

    /// The active thin device `id` of `size`, made active if it is not.
    pub fn activate_thin(&self, dm: &DM, pool: &ThinPoolDev, id: u32, size: Bytes) -> VolumeResult<ThinDev> {
        let name = self.thin_name(id)?;
        ThinDev::setup(dm, &name, None, Sectors(size.0 / SECTOR), pool, Self::thin_id(id)?)
            .map_err(dm_error("activating", &*name))
    }

    /// The volume the pool gives thin `id` to.
    pub fn owner_of(&self, id: u32) -> Option<&str> {
        self.record.thins.get(&id).map(String::as_str)
    }

    /// Removes thin device `id` from the kernel's table (its data stays in the pool).
    pub fn deactivate_thin(&self, dm: &DM, id: u32) -> VolumeResult<()> {
        remove_if_present(dm, &self.thin_name(id)?)
    }

    /// Deletes thin device `id` and its data, if `owner` owns it; forgets the ID.
    pub fn delete_thin(&mut self, dm: &DM, pool: &ThinPoolDev, id: u32, owner: &str) -> VolumeResult<()> {
        if self.owner_of(id) != Some(owner) {
            return Ok(());
        }
        remove_patiently(dm, &self.thin_name(id)?)?;
        match devicemapper::message(dm, pool, &format!("delete {id}")) {
            Ok(()) => {}
            // The pool answers ENODATA for an ID it does not have: already deleted.
            Err(err) if errno_of(&err) == Some(nix::errno::Errno::ENODATA) => {}
            Err(err) => return Err(dm_error("deleting thin device", format!("{id} of volume {owner}"))(err)),
        }
        self.record.thins.remove(&id);
        self.save()
    }

    /// Thin IDs recorded for `owner`: while `owner` is being created, leftovers of a create
    /// that crashed before its volume appeared.
    pub fn stale_ids_of(&self, owner: &str) -> Vec<u32> {
        self.record.thins.iter().filter(|(_, o)| o.as_str() == owner).map(|(id, _)| *id).collect()
    }

    /// Removes the pool's devices from the kernel: thin devices first (refusing, with their
    /// names, while one is in use), then the thin pool, then its linear devices. The data
    /// stays; the next use activates the pool again.
    pub fn deactivate(&self, dm: &DM) -> VolumeResult<()> {
        let prefix = format!("{}-", self.record.dm_prefix);
        let devices = dm.list_devices().map_err(dm_error("listing", "device-mapper devices"))?;
        let ours: Vec<DmNameBuf> =
            devices.into_iter().map(|(name, _, _)| name).filter(|n| n.to_string().starts_with(&prefix)).collect();
        let (infrastructure, thins): (Vec<_>, Vec<_>) =
            ours.into_iter().partition(|n| ["pool", "meta", "data"].iter().any(|s| n.to_string() == format!("{prefix}{s}")));
        let mut busy = Vec::new();
        for name in &thins {
            if let Err(err) = remove_if_present(dm, name) {
                busy.push(format!("{} ({err})", &**name));
            }
        }
        if !busy.is_empty() {
            return Err(VolumeError::Busy { object: format!("thin pool {}", self.record.name), detail: busy.join(", ") });
        }
        for suffix in ["pool", "data", "meta"] {
            if let Some(name) = infrastructure.iter().find(|n| n.to_string() == format!("{prefix}{suffix}")) {
                remove_if_present(dm, name)?;
            }
        }
        Ok(())
    }

    /// The file or device holding the pool's metadata, for thin_check.
    pub fn metadata_path(&self) -> PathBuf {
        match &self.record.source {
            PoolSource::Devices { metadata, .. } => metadata.clone(),
            PoolSource::Loopback { .. } => self.dir.join("metadata.img"),
        }
    }

    /// Resumes the pool's devices that a crash left suspended (a snapshot suspends its
    /// mounted origin for an instant; killed then, it stays so, and every write to it
    /// waits); returns their names. The pool's lock keeps snapshots out meanwhile.
    pub fn resume_suspended(&self, dm: &DM) -> VolumeResult<Vec<String>> {
        let prefix = format!("{}-", self.record.dm_prefix);
        let devices = dm.list_devices().map_err(dm_error("listing", "device-mapper devices"))?;
        let mut resumed = Vec::new();
        for (name, _, _) in devices.iter().filter(|(name, _, _)| name.to_string().starts_with(&prefix)) {
            let info = dm.device_info(&DevId::Name(name)).map_err(dm_error("reading the state of", &**name))?;
            if info.flags().contains(DmFlags::DM_SUSPEND) {
                resume(dm, name)?;
                resumed.push(name.to_string());
            }
        }
        Ok(resumed)
    }
}

/// The names of the pools of the state directory `state`.
pub fn pool_names(state: &Path) -> VolumeResult<Vec<String>> {
    let pools = state.join("thin");
    let entries = match std::fs::read_dir(&pools) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(VolumeError::io("listing", pools.display())(err)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("pool.json").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| check_pool_name(name).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Whether the pool options a volume gives agree with the pool as it is: the option, what
/// was asked and what the pool has, for the first that does not.
fn check_agrees(record: &PoolRecord, setup: &PoolSetup) -> Result<(), (&'static str, String, String)> {
    let shown = |path: &Option<PathBuf>| path.as_ref().map_or("(loopback)".to_string(), |p| p.display().to_string());
    let (data, metadata, data_size, metadata_size) = match &record.source {
        PoolSource::Devices { data, metadata } => (Some(data.clone()), Some(metadata.clone()), None, None),
        PoolSource::Loopback { data_size, metadata_size } => (None, None, Some(*data_size), Some(*metadata_size)),
    };
    if setup.datadev.is_some() && setup.datadev != data {
        return Err(("datadev", shown(&setup.datadev), shown(&data)));
    }
    if setup.metadatadev.is_some() && setup.metadatadev != metadata {
        return Err(("metadatadev", shown(&setup.metadatadev), shown(&metadata)));
    }
    let size = |s: Option<Bytes>| s.map_or("(none: devices)".to_string(), |b| b.to_string());
    if setup.loopdatasize.is_some() && setup.loopdatasize != data_size {
        return Err(("loopdatasize", size(setup.loopdatasize), size(data_size)));
    }
    if setup.loopmetadatasize.is_some() && setup.loopmetadatasize != metadata_size {
        return Err(("loopmetadatasize", size(setup.loopmetadatasize), size(metadata_size)));
    }
    if let Some(base) = setup.basesize.filter(|b| *b != record.base_size) {
        return Err(("basesize", base.to_string(), record.base_size.to_string()));
    }
    Ok(())
}

fn remove_if_present(dm: &DM, name: &DmName) -> VolumeResult<()> {
    if !devicemapper::device_exists(dm, name).map_err(dm_error("looking for", name))? {
        return Ok(());
    }
    dm.device_remove(&DevId::Name(name), DmOptions::default()).map(|_| ()).map_err(dm_error("removing", name))
}

/// As [`remove_if_present`], waiting a moment while the device is busy: a tool we started
/// on it (mkfs, when a crash cut its create short) dies with its parent, but not at once.
fn remove_patiently(dm: &DM, name: &DmName) -> VolumeResult<()> {
    let deadline = Instant::now() + BUSY_PATIENCE;
    loop {
        if !devicemapper::device_exists(dm, name).map_err(dm_error("looking for", name))? {
            return Ok(());
        }
        match dm.device_remove(&DevId::Name(name), DmOptions::default()) {
            Ok(_) => return Ok(()),
            Err(err) if errno_of(&err) == Some(nix::errno::Errno::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(dm_error("removing", name)(err)),
        }
    }
}

/// Resumes `name` if it is suspended (a resume of an active device changes nothing).
fn resume(dm: &DM, name: &DmName) -> VolumeResult<()> {
    dm.device_suspend(&DevId::Name(name), DmOptions::default()).map(|_| ()).map_err(dm_error("resuming", name))
}

/// The kernel's errno behind a device-mapper failure, if that is what it is.
fn errno_of(err: &DmError) -> Option<nix::errno::Errno> {
    match err {
        DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)) => Some(**errno),
        _ => None,
    }
}

/// A pool's storage when it is first made: its directory, and in loopback mode its sparse
/// files; for named devices, the first 4 KiB of the metadata device are zeroed, so that the
/// kernel formats fresh metadata there.
fn make_pool_storage(dir: &Path, record: &PoolRecord) -> VolumeResult<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(VolumeError::io("creating directory", dir.display()))?;
    match &record.source {
        PoolSource::Loopback { data_size, metadata_size } => {
            for (file, size) in [("data.img", data_size), ("metadata.img", metadata_size)] {
                let path = dir.join(file);
                let image = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(VolumeError::io("creating", path.display()))?;
                image.set_len(size.0).map_err(VolumeError::io("sizing", path.display()))?;
            }
        }
        PoolSource::Devices { data, metadata } => {
            BlockDevice::of(data)?;
            BlockDevice::of(metadata)?;
            let mut device =
                OpenOptions::new().write(true).open(metadata).map_err(VolumeError::io("opening", metadata.display()))?;
            device.write_all(&[0u8; 4096]).map_err(VolumeError::io("zeroing the start of", metadata.display()))?;
            device.sync_all().map_err(VolumeError::io("syncing", metadata.display()))?;
        }
    }
    Ok(())
}

struct BlockDevice {
    device: Device,
    size: Bytes,
}

mod ioctls {
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
}

impl BlockDevice {
    fn of(path: &Path) -> VolumeResult<BlockDevice> {
        let meta = std::fs::metadata(path).map_err(VolumeError::io("reading", path.display()))?;
        if !meta.file_type().is_block_device() {
            return Err(VolumeError::Busy { object: path.display().to_string(), detail: "it is not a block device".into() });
        }
        let file = File::open(path).map_err(VolumeError::io("opening", path.display()))?;
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 we own.
        unsafe { ioctls::blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(VolumeError::io("measuring", path.display()))?;
        let rdev = meta.rdev();
        Ok(BlockDevice {
            device: Device { major: nix::sys::stat::major(rdev) as u32, minor: nix::sys::stat::minor(rdev) as u32 },
            size: Bytes(size),
        })
    }
}

/// `berth-HASH-POOL`: what every device-mapper name of the pool in `dir` starts with. The
/// hash (FNV-1a, 32 bits, of the directory) tells apart pools of the same name in other
/// state directories; it must never change, or existing pools would not be found again.
fn dm_prefix(dir: &Path, name: &str) -> String {
    format!("berth-{:08x}-{name}", fnv1a32([dir.as_os_str().as_encoded_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_fit_device_mapper_names() {
        for good in ["berth", "p1", "fast_ssd-2", &"p".repeat(32)] {
            assert!(check_pool_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-p", "a/b", "a b", "pool.1", &"p".repeat(33)] {
            assert!(check_pool_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            dm_prefix(Path::new("/var/lib/berth/thin/berth"), "berth"),
            "berth-01cc24eb-berth",
            "existing pools' device names depend on this value"
        );
    }

    #[test]
    fn setups_choose_loopback_or_devices() {
        assert_eq!(
            PoolSetup::default().source(),
            Ok(PoolSource::Loopback { data_size: DEFAULT_LOOP_DATA_SIZE, metadata_size: DEFAULT_LOOP_METADATA_SIZE })
        );
        let devices = PoolSetup { datadev: Some("/dev/sdb".into()), metadatadev: Some("/dev/sdc".into()), ..Default::default() };
        assert_eq!(devices.source(), Ok(PoolSource::Devices { data: "/dev/sdb".into(), metadata: "/dev/sdc".into() }));
        let half = PoolSetup { datadev: Some("/dev/sdb".into()), ..Default::default() };
        assert_eq!(half.source().unwrap_err().0, "metadatadev");
        let mixed = PoolSetup { loopdatasize: Some(Bytes(1 << 30)), ..devices.clone() };
        assert_eq!(mixed.source().unwrap_err().0, "loopdatasize");
    }

    #[test]
    fn a_kernel_without_device_mapper_is_refused_clearly() {
        let err = check_control(Path::new("/nonexistent/mapper/control")).unwrap_err().to_string();
        assert!(err.starts_with("the thin driver cannot work on this machine: device-mapper is not available"), "{err}");
        assert!(err.contains("/nonexistent/mapper/control is missing") && err.contains("modprobe dm_thin_pool"), "{err}");
    }

    #[test]
    fn pool_options_must_agree_with_an_existing_pool() {
        let record = PoolRecord {
            name: "p".into(),
            dm_prefix: "berth-00000000-p".into(),
            source: PoolSource::Loopback { data_size: Bytes(256 << 20), metadata_size: Bytes(16 << 20) },
            base_size: DEFAULT_BASE_SIZE,
            created_at: String::new(),
            thins: BTreeMap::new(),
        };
        assert_eq!(check_agrees(&record, &PoolSetup::default()), Ok(()));
        let same = PoolSetup { loopdatasize: Some(Bytes(256 << 20)), ..Default::default() };
        assert_eq!(check_agrees(&record, &same), Ok(()), "options left out are not compared");
        let bigger = PoolSetup { loopdatasize: Some(Bytes(1 << 30)), ..Default::default() };
        assert_eq!(check_agrees(&record, &bigger).unwrap_err().0, "loopdatasize");
        let devices = PoolSetup { datadev: Some("/dev/sdb".into()), ..Default::default() };
        assert_eq!(check_agrees(&record, &devices).unwrap_err(), ("datadev", "/dev/sdb".to_string(), "(loopback)".to_string()));
        let base = PoolSetup { basesize: Some(Bytes(1 << 30)), ..Default::default() };
        assert_eq!(check_agrees(&record, &base).unwrap_err().0, "basesize");
    }

    #[test]
    fn opening_a_pool_deletes_records_staged_by_a_killed_writer() {
        let state = std::env::temp_dir().join(format!("berth-pool-staged-{}", std::process::id()));
        let setup =
            PoolSetup { loopdatasize: Some(Bytes(16 << 20)), loopmetadatasize: Some(Bytes(2 << 20)), ..Default::default() };
        drop(Pool::open(&state, "p", Some(&setup), "v").unwrap());
        // What write_durably leaves when its process dies before the rename.
        let staged = state.join("thin/p/pool.tmp.4242");
        std::fs::write(&staged, "{\"half\":").unwrap();
        let pool = Pool::open(&state, "p", None, "v").unwrap();
        assert!(!staged.exists(), "the staged record is left");
        assert_eq!(pool_names(&state).unwrap(), vec!["p".to_string()]);
        drop(pool);
        let _ = std::fs::remove_dir_all(&state);
    }

    #[test]
    fn full_pools_are_recognised() {
        let usage = |used: u64, mode: &str| PoolUsage {
            name: "p".into(),
            data_used: Bytes(used),
            data_size: Bytes(64 << 20),
            metadata_used: Bytes(1 << 20),
            metadata_size: Bytes(16 << 20),
            mode: mode.into(),
            needs_check: false,
        };
        assert!(!usage(1 << 20, "rw").is_full());
        assert!(usage(64 << 20, "rw").is_full());
        assert!(usage(1 << 20, "out_of_data_space").is_full());
        assert!(usage(1 << 20, "rw").describe().contains("1M of 64M data"));
    }
}
