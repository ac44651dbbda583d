//! The volumes of one state directory: metadata on disk, one lock per volume shared by
//! threads and processes (the server and `berth volume` alike), mounts counted by mount ID,
//! and the reconciliation with what the kernel holds after a restart or a crash.
//!
//! On disk, under `<state>/`:
//! - `volumes/NAME/volume.json`: the [`Volume`] record, replaced atomically;
//! - `volumes/NAME/_data`: the data (`named`) or the mount point (`bind`, `loop`);
//! - `volumes/NAME/disk.img`: the ext4 image of a `loop` volume;
//! - `thin/POOL/`, `thin/POOL.lock`: a thin pool (see `driver::thin::pool`);
//! - `volumes/.creating.NAME`, `volumes/.removing.NAME`: a volume on its way in or out,
//!   swapped in or out with one rename so that a crash never leaves half a volume visible;
//! - `locks/NAME.lock`: the volume's lock (flock).
//!
//! Crash safety rests on one rule: a mount ID is recorded only while the kernel holds the
//! mount. Mount mounts before recording, Unmount forgets before unmounting. A crash in
//! between leaves a mount that nobody recorded, which [`VolumeStore::reconcile`] undoes.

use crate::driver::{thin, DriverConfig, Origin, Usage, VolumeLayout};
use crate::error::{VolumeError, VolumeResult};
use crate::spec::{DriverKind, MountId, VolumeName};
use crate::sys::{self, MountTable};
use crate::timestamp::rfc3339;
use berth_util::fs::{remove_staged, sync_dir, write_durably, LockFile};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/berth";
const CREATING_PREFIX: &str = ".creating.";
const REMOVING_PREFIX: &str = ".removing.";

/// A volume as recorded in `volume.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: VolumeName,
    pub config: DriverConfig,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Who holds the volume mounted; the data is mounted while this is not empty.
    #[serde(default)]
    pub mounts: BTreeSet<MountId>,
}

impl Volume {
    pub fn kind(&self) -> DriverKind {
        self.config.driver().kind()
    }
}

/// What `berth volume inspect` shows: the record, what the kernel holds, and usage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeStatus {
    pub name: VolumeName,
    pub driver: DriverKind,
    pub mountpoint: String,
    pub created_at: String,
    pub options: BTreeMap<String, String>,
    #[serde(rename = "MountIDs")]
    pub mount_ids: Vec<MountId>,
    /// Whether the kernel holds the data mounted now (always true for `named`).
    pub mounted: bool,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmountOutcome {
    /// The mount ID was the last: the data was unmounted.
    Released,
    /// Others still hold the volume mounted.
    StillMounted { holders: usize },
    /// The mount ID did not hold the volume (Unmount is idempotent, as runtimes retry).
    NotMounted,
}

/// What [`VolumeStore::reconcile`] found and did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    pub volumes: usize,
    /// Recorded as mounted but not mounted (the host rebooted, someone unmounted): remounted.
    pub remounted: Vec<VolumeName>,
    /// Mounted with no mount ID recorded (a crash inside Mount or Unmount): unmounted.
    pub unmounted: Vec<VolumeName>,
    /// Half-created or half-removed volume directories, stale lock files, thin IDs that no
    /// volume holds: deleted.
    pub discarded: Vec<String>,
    /// Thin devices a crash left suspended (a snapshot of a mounted origin): resumed.
    pub resumed: Vec<String>,
    pub failures: Vec<(String, VolumeError)>,
}

pub struct VolumeStore {
    state: PathBuf,
    volumes: PathBuf,
    locks: PathBuf,
}

/// Holds a volume's lock until dropped.
struct VolumeLock(LockFile);

impl VolumeLock {
    /// Deletes the lock file with the volume: waiters notice the file is gone and retry
    /// (see [`LockFile::acquire_removable`]).
    fn remove(self) -> VolumeResult<()> {
        let path = self.0.path();
        std::fs::remove_file(path).map_err(VolumeError::io("deleting", path.display()))
    }
}

impl VolumeStore {
    /// Opens (creating if needed) the volumes of `state_dir`.
    pub fn open(state_dir: &Path) -> VolumeResult<VolumeStore> {
        let volumes = state_dir.join("volumes");
        let locks = state_dir.join("locks");
        // 0701, like Docker's volume root: others may reach a volume's data by its full
        // path, but not list which volumes exist.
        for (dir, mode) in [(state_dir, 0o711), (volumes.as_path(), 0o701), (locks.as_path(), 0o700)] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(VolumeError::io("creating directory", dir.display()))?;
        }
        Ok(VolumeStore { state: state_dir.to_path_buf(), volumes, locks })
    }

    pub fn layout(&self, name: &VolumeName) -> VolumeLayout {
        VolumeLayout::new(name.clone(), self.volumes.join(name.as_str()))
    }

    /// Where a volume's data can be reached now: always for `named`, while mounted otherwise.
    pub fn mountpoint(&self, volume: &Volume) -> Option<PathBuf> {
        let reachable = !volume.config.driver().mounts_on_demand() || !volume.mounts.is_empty();
        reachable.then(|| self.layout(&volume.name).data())
    }

    pub fn create(&self, name: &VolumeName, config: DriverConfig) -> VolumeResult<Volume> {
        // A snapshot's origin stays locked until the snapshot is made: nobody removes,
        // mounts or unmounts it meanwhile.
        let _locks = self.lock_with_origin(name, config.origin())?;
        let layout = self.layout(name);
        match self.read(&layout) {
            Ok(existing) if existing.config.same_request(&config) => return Ok(existing),
            Ok(existing) => {
                return Err(VolumeError::AlreadyExists { name: name.to_string(), existing: describe(&existing.config) })
            }
            Err(VolumeError::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
        let origin = config.origin().map(|origin| self.read_origin(name, origin)).transpose()?;
        let origin = origin.as_ref().map(|origin| Origin { name: &origin.name, config: &origin.config });
        let staging = VolumeLayout::new(name.clone(), self.volumes.join(format!("{CREATING_PREFIX}{name}")));
        undo_creation(&staging)?;
        discard(&staging)?;
        let volume = Volume { name: name.clone(), config, created_at: rfc3339(SystemTime::now()), mounts: BTreeSet::new() };
        self.build(volume, &staging, &layout, origin.as_ref())
    }

    /// Makes `volume` in `staging`, records it there and moves it into place at `layout`;
    /// if a step fails, undoes what the driver made and deletes `staging`.
    fn build(
        &self,
        mut volume: Volume,
        staging: &VolumeLayout,
        layout: &VolumeLayout,
        origin: Option<&Origin>,
    ) -> VolumeResult<Volume> {
        // What the driver made, until the volume is in place: undone if a later step fails.
        let mut made: Option<DriverConfig> = None;
        let built = (|| {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&staging.dir)
                .map_err(VolumeError::io("creating directory", staging.dir.display()))?;
            // Recorded before the driver makes anything: a crash from here on leaves a
            // record that tells reconcile what to undo (an xfsquota directory in its base).
            write_record(staging, &volume)?;
            // The driver may decide settings that must be recorded (a thin volume's ID).
            let requested = volume.config.clone();
            volume.config = volume.config.create(staging, origin)?;
            made = Some(volume.config.clone());
            if volume.config != requested {
                write_record(staging, &volume)?;
            }
            std::fs::rename(&staging.dir, &layout.dir).map_err(VolumeError::io("moving into place", layout.dir.display()))?;
            made = None;
            Ok(sync_dir(&self.volumes)?)
        })();
        if let Err(err) = built {
            if let Some(config) = made {
                let _ = config.driver().release(staging).and_then(|()| config.driver().destroy(staging));
            }
            let _ = discard(staging);
            return Err(err);
        }
        Ok(volume)
    }

    /// The record of `origin`, which volume `name` is made from (its `from` option); the
    /// caller holds `origin`'s lock.
    fn read_origin(&self, name: &VolumeName, origin: &VolumeName) -> VolumeResult<Volume> {
        self.read(&self.layout(origin)).map_err(|err| VolumeError::InvalidOption {
            volume: name.to_string(),
            option: "from".into(),
            value: origin.to_string(),
            reason: err.to_string(),
        })
    }

    /// Deletes a volume and its data (for `bind`, only berth's own files: never the source).
    pub fn remove(&self, name: &VolumeName) -> VolumeResult<()> {
        let lock = self.lock(name)?;
        let layout = self.layout(name);
        let volume = self.read(&layout)?;
        if !volume.mounts.is_empty() {
            let ids: Vec<&str> = volume.mounts.iter().map(MountId::as_str).collect();
            return Err(VolumeError::InUse { name: name.to_string(), ids: ids.join(", ") });
        }
        let driver = volume.config.driver();
        // Nobody holds it, so anything still active is a leftover of a crash.
        if driver.mounts_on_demand() && driver.is_active(&layout, &MountTable::read()?) {
            driver.deactivate(&layout)?;
        }
        driver.release(&layout)?;
        driver.destroy(&layout)?;
        let doomed = VolumeLayout::new(name.clone(), self.volumes.join(format!("{REMOVING_PREFIX}{name}")));
        discard(&doomed)?;
        std::fs::rename(&layout.dir, &doomed.dir).map_err(VolumeError::io("moving aside", layout.dir.display()))?;
        sync_dir(&self.volumes)?;
        sys::remove_owned_tree(&doomed.dir)?;
        lock.remove()
    }

    /// Mounts the volume for `id` (the first holder mounts the data) and returns the mount point.
    pub fn mount(&self, name: &VolumeName, id: &MountId) -> VolumeResult<PathBuf> {
        let _lock = self.lock(name)?;
        let layout = self.layout(name);
        let mut volume = self.read(&layout)?;
        let driver = volume.config.driver();
        let activated = !driver.is_active(&layout, &MountTable::read()?);
        if activated {
            driver.activate(&layout)?;
        }
        if volume.mounts.insert(id.clone()) {
            if let Err(err) = write_record(&layout, &volume) {
                if activated && volume.mounts.len() == 1 {
                    let _ = driver.deactivate(&layout);
                }
                return Err(err);
            }
        }
        Ok(layout.data())
    }

    /// Releases `id`'s hold; the last holder unmounts the data.
    pub fn unmount(&self, name: &VolumeName, id: &MountId) -> VolumeResult<UnmountOutcome> {
        let _lock = self.lock(name)?;
        let layout = self.layout(name);
        let mut volume = self.read(&layout)?;
        if !volume.mounts.remove(id) {
            return Ok(UnmountOutcome::NotMounted);
        }
        write_record(&layout, &volume)?;
        if !volume.mounts.is_empty() {
            return Ok(UnmountOutcome::StillMounted { holders: volume.mounts.len() });
        }
        if let Err(err) = volume.config.driver().deactivate(&layout) {
            // Still mounted: record the holder again so the state stays true.
            volume.mounts.insert(id.clone());
            let _ = write_record(&layout, &volume);
            return Err(err);
        }
        Ok(UnmountOutcome::Released)
    }

    /// Reads a volume's record. Records are replaced by rename, so no lock is needed.
    pub fn get(&self, name: &VolumeName) -> VolumeResult<Volume> {
        self.read(&self.layout(name))
    }

    /// All volumes, by name. Unreadable records are left out (reconcile reports them).
    pub fn list(&self) -> VolumeResult<Vec<Volume>> {
        let entries = std::fs::read_dir(&self.volumes).map_err(VolumeError::io("listing", self.volumes.display()))?;
        let mut volumes: Vec<Volume> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| VolumeName::parse(entry.file_name().to_str()?).ok())
            .filter_map(|name| self.get(&name).ok())
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    pub fn inspect(&self, name: &VolumeName) -> VolumeResult<VolumeStatus> {
        let layout = self.layout(name);
        let volume = self.read(&layout)?;
        let driver = volume.config.driver();
        let mounts = MountTable::read()?;
        Ok(VolumeStatus {
            mountpoint: self.mountpoint(&volume).map(|p| p.display().to_string()).unwrap_or_default(),
            driver: driver.kind(),
            options: driver.options(),
            mount_ids: volume.mounts.iter().cloned().collect(),
            mounted: driver.is_active(&layout, &mounts),
            usage: driver.usage(&layout, &mounts)?,
            name: volume.name,
            created_at: volume.created_at,
        })
    }

    /// Brings the kernel in line with the records, after a restart or a crash: resumes thin
    /// devices a snapshot left suspended, remounts volumes recorded as mounted, unmounts and
    /// detaches those nobody holds, deletes half-created and half-removed volumes (and what
    /// their driver made), thin IDs no volume holds and records staged by killed writers.
    /// Never deletes a recorded volume's data.
    pub fn reconcile(&self) -> VolumeResult<ReconcileReport> {
        let mut report = ReconcileReport::default();
        match thin::resume_suspended(&self.state) {
            Ok(resumed) => report.resumed = resumed,
            Err(err) => report.failures.push(("thin pools".into(), err)),
        }
        let entries = std::fs::read_dir(&self.volumes).map_err(VolumeError::io("listing", self.volumes.display()))?;
        for entry in entries.filter_map(Result::ok) {
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let leftover = [CREATING_PREFIX, REMOVING_PREFIX].iter().find_map(|p| file_name.strip_prefix(p));
            if let Some(name) = leftover {
                let creating = file_name.starts_with(CREATING_PREFIX);
                let outcome = VolumeName::parse(name).and_then(|name| {
                    let lock = self.lock(&name)?;
                    let leftover = VolumeLayout::new(name.clone(), entry.path());
                    // A volume on its way out was destroyed before it was moved aside; one
                    // on its way in may hold storage outside its directory.
                    if creating {
                        undo_creation(&leftover)?;
                    }
                    discard(&leftover)?;
                    if !self.layout(&name).dir.exists() {
                        lock.remove()?;
                    }
                    Ok(())
                });
                match outcome {
                    Ok(()) => report.discarded.push(file_name),
                    Err(err) => report.failures.push((file_name, err)),
                }
                continue;
            }
            let Ok(name) = VolumeName::parse(&file_name) else { continue };
            report.volumes += 1;
            if let Err(err) = self.reconcile_volume(&name, &mut report) {
                report.failures.push((file_name, err));
            }
        }
        self.discard_orphaned_thin_ids(&mut report);
        self.discard_stale_locks(&mut report)?;
        Ok(report)
    }

    /// Thin IDs that a pool hands out to a volume that does not hold them (a create that a
    /// crash cut short after the pool handed the ID out, never retried): deleted, with
    /// their devices and data.
    fn discard_orphaned_thin_ids(&self, report: &mut ReconcileReport) {
        let ids = match thin::recorded_thin_ids(&self.state) {
            Ok(ids) => ids,
            Err(err) => return report.failures.push(("thin pools".into(), err)),
        };
        for (pool, id, owner) in ids {
            let what = format!("thin/{pool}: ID {id} of {owner}");
            match self.discard_thin_id_unless_held(&pool, id, &owner) {
                Ok(true) => report.discarded.push(what),
                Ok(false) => {}
                Err(err) => report.failures.push((what, err)),
            }
        }
    }

    /// Deletes thin `id` of `pool` unless volume `owner` holds it; whether it did.
    fn discard_thin_id_unless_held(&self, pool: &str, id: u32, owner: &str) -> VolumeResult<bool> {
        let Ok(name) = VolumeName::parse(owner) else { return Ok(false) };
        // With the owner's lock, no create of it is under way: the ID is in its record, or
        // nobody will ever claim it.
        let _lock = self.lock(&name)?;
        let held = match self.read(&self.layout(&name)) {
            Ok(volume) => volume.config.thin_device() == Some((pool, id)),
            Err(VolumeError::NotFound(_)) => false,
            // An unreadable record may hold it: leave it.
            Err(_) => true,
        };
        Ok(!held && thin::delete_orphan(&self.state, pool, id, owner)?)
    }

    fn reconcile_volume(&self, name: &VolumeName, report: &mut ReconcileReport) -> VolumeResult<()> {
        let _lock = self.lock(name)?;
        let layout = self.layout(name);
        // Left by a writer killed before its rename; with the lock, no writer is under way.
        remove_staged(&layout.record());
        let volume = self.read(&layout)?;
        let driver = volume.config.driver();
        if !driver.mounts_on_demand() {
            return Ok(());
        }
        let active = driver.is_active(&layout, &MountTable::read()?);
        if !volume.mounts.is_empty() && !active {
            driver.activate(&layout)?;
            report.remounted.push(name.clone());
        } else if volume.mounts.is_empty() {
            if active {
                driver.deactivate(&layout)?;
                report.unmounted.push(name.clone());
            }
            driver.release(&layout)?;
        }
        Ok(())
    }

    /// Lock files whose volume is gone (a crash inside Remove).
    fn discard_stale_locks(&self, report: &mut ReconcileReport) -> VolumeResult<()> {
        let entries = std::fs::read_dir(&self.locks).map_err(VolumeError::io("listing", self.locks.display()))?;
        for entry in entries.filter_map(Result::ok) {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".lock")) else { continue };
            let Ok(name) = VolumeName::parse(name) else { continue };
            let lock = self.lock(&name)?;
            if !self.layout(&name).dir.exists() {
                lock.remove()?;
                report.discarded.push(format!("locks/{}", file_name.to_string_lossy()));
            }
        }
        Ok(())
    }

    fn read(&self, layout: &VolumeLayout) -> VolumeResult<Volume> {
        let path = layout.record();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(if layout.dir.exists() {
                    VolumeError::CorruptMetadata {
                        volume: layout.name.to_string(),
                        detail: format!("{} is missing", path.display()),
                    }
                } else {
                    VolumeError::NotFound(layout.name.to_string())
                });
            }
            Err(err) => return Err(VolumeError::io("reading", path.display())(err)),
        };
        let volume: Volume = serde_json::from_slice(&text).map_err(|err| VolumeError::CorruptMetadata {
            volume: layout.name.to_string(),
            detail: format!("{}: {err}", path.display()),
        })?;
        if volume.name != layout.name {
            return Err(VolumeError::CorruptMetadata {
                volume: layout.name.to_string(),
                detail: format!("{} names volume {}", path.display(), volume.name),
            });
        }
        Ok(volume)
    }

    /// Takes `name`'s lock and, if given, `origin`'s, always in name order: two creates
    /// that each name the other as origin then never wait for each other forever.
    fn lock_with_origin(&self, name: &VolumeName, origin: Option<&VolumeName>) -> VolumeResult<Vec<VolumeLock>> {
        let mut names = vec![name];
        // flock locks per open file: locking the same name twice would wait for ourselves.
        names.extend(origin.filter(|origin| *origin != name));
        names.sort();
        names.into_iter().map(|name| self.lock(name)).collect()
    }

    /// Takes the volume's lock, waiting for other threads and processes. The lock file may
    /// be deleted by a Remove that held it while we waited: then the new file is locked.
    fn lock(&self, name: &VolumeName) -> VolumeResult<VolumeLock> {
        Ok(VolumeLock(LockFile::acquire_removable(&self.locks.join(format!("{name}.lock")))?))
    }
}

fn write_record(layout: &VolumeLayout, volume: &Volume) -> VolumeResult<()> {
    let json = serde_json::to_vec_pretty(volume)
        .map_err(|err| VolumeError::CorruptMetadata { volume: volume.name.to_string(), detail: err.to_string() })?;
    Ok(write_durably(&layout.record(), &json)?)
}

/// Undoes what a driver made for a half-created volume (a crash before the volume was
/// moved into place), as its record in the staging directory tells: storage outside that
/// directory, never data someone else put there. Without a record, the driver made nothing.
fn undo_creation(leftover: &VolumeLayout) -> VolumeResult<()> {
    let Ok(text) = std::fs::read(leftover.record()) else { return Ok(()) };
    let Ok(volume) = serde_json::from_slice::<Volume>(&text) else { return Ok(()) };
    let driver = volume.config.driver();
    if driver.mounts_on_demand() && driver.is_active(leftover, &MountTable::read()?) {
        driver.deactivate(leftover)?;
    }
    driver.abandon(leftover)
}

/// Deletes a half-created or half-removed volume directory (never a live one), letting
/// go of its loop devices first.
fn discard(leftover: &VolumeLayout) -> VolumeResult<()> {
    if !leftover.dir.exists() {
        return Ok(());
    }
    if leftover.image().exists() {
        sys::loopdev::detach_all(&leftover.image(), std::time::Duration::from_secs(2))?;
    }
    sys::remove_owned_tree(&leftover.dir)
}

fn describe(config: &DriverConfig) -> String {
    let driver = config.driver();
    let options: Vec<String> = driver.options().iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("driver {}, {}", driver.kind(), if options.is_empty() { "no options".into() } else { options.join(" ") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::NamedDriver;
    use std::time::UNIX_EPOCH;

    /// A state directory under the system temp dir, deleted on drop.
    struct TempState(PathBuf);

    impl TempState {
        fn new(tag: &str) -> Self {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
            let dir = std::env::temp_dir().join(format!("berth-store-{tag}-{}-{nanos}", std::process::id()));
            TempState(dir)
        }
    }

    impl Drop for TempState {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn name(text: &str) -> VolumeName {
        VolumeName::parse(text).unwrap()
    }

    fn id(text: &str) -> MountId {
        MountId::parse(text).unwrap()
    }

    fn named() -> DriverConfig {
        DriverConfig::Named(NamedDriver {})
    }

    #[test]
    fn named_volume_keeps_data_across_mounts_and_store_reopening() {
        let state = TempState::new("named");
        let store = VolumeStore::open(&state.0).unwrap();
        let v = name("data");
        store.create(&v, named()).unwrap();
        let mountpoint = store.mount(&v, &id("c1")).unwrap();
        assert_eq!(mountpoint, state.0.join("volumes/data/_data"));
        std::fs::write(mountpoint.join("hello.txt"), "hi").unwrap();
        assert_eq!(store.unmount(&v, &id("c1")).unwrap(), UnmountOutcome::Released);

        let reopened = VolumeStore::open(&state.0).unwrap();
        let report = reopened.reconcile().unwrap();
        assert_eq!(report.volumes, 1);
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let again = reopened.mount(&v, &id("c2")).unwrap();
        assert_eq!(std::fs::read_to_string(again.join("hello.txt")).unwrap(), "hi");
        assert_eq!(reopened.get(&v).unwrap().mounts, BTreeSet::from([id("c2")]));
    }

    #[test]
    fn mounts_are_counted_by_id_and_block_removal() {
        let state = TempState::new("refs");
        let store = VolumeStore::open(&state.0).unwrap();
        let v = name("shared");
        store.create(&v, named()).unwrap();
        store.mount(&v, &id("a")).unwrap();
        store.mount(&v, &id("b")).unwrap();
        store.mount(&v, &id("b")).unwrap(); // a runtime retrying: still one holder
        assert_eq!(store.unmount(&v, &id("a")).unwrap(), UnmountOutcome::StillMounted { holders: 1 });
        assert_eq!(store.unmount(&v, &id("a")).unwrap(), UnmountOutcome::NotMounted);
        let refused = store.remove(&v).unwrap_err().to_string();
        assert!(refused.contains("shared") && refused.contains(" b"), "{refused}");
        assert!(store.get(&v).is_ok(), "a refused Remove keeps the volume");
        assert_eq!(store.unmount(&v, &id("b")).unwrap(), UnmountOutcome::Released);
        store.remove(&v).unwrap();
        assert!(matches!(store.get(&v), Err(VolumeError::NotFound(_))));
        assert!(!state.0.join("volumes/shared").exists());
        assert!(!state.0.join("locks/shared.lock").exists());
    }

    #[test]
    fn the_longest_name_fits_every_file_the_store_makes() {
        let state = TempState::new("longname");
        let store = VolumeStore::open(&state.0).unwrap();
        let v = name(&"n".repeat(240));
        store.create(&v, named()).unwrap();
        store.mount(&v, &id("c")).unwrap();
        store.unmount(&v, &id("c")).unwrap();
        store.remove(&v).unwrap();
    }

    #[test]
    fn create_is_idempotent_but_refuses_other_settings() {
        let state = TempState::new("idem");
        let store = VolumeStore::open(&state.0).unwrap();
        let v = name("v");
        let first = store.create(&v, named()).unwrap();
        assert_eq!(store.create(&v, named()).unwrap(), first);
        let other = DriverConfig::Bind(crate::driver::BindDriver { source: "/".into(), read_only: false });
        let err = store.create(&v, other).unwrap_err().to_string();
        assert!(err.contains("already exists") && err.contains("driver named"), "{err}");
    }

    #[test]
    fn bind_create_checks_the_source() {
        let state = TempState::new("bindsrc");
        let store = VolumeStore::open(&state.0).unwrap();
        let missing = DriverConfig::Bind(crate::driver::BindDriver { source: state.0.join("nope"), read_only: false });
        let err = store.create(&name("b"), missing).unwrap_err().to_string();
        assert!(err.contains("source") && err.contains("nope"), "{err}");
        assert!(store.list().unwrap().is_empty(), "a failed create leaves no volume");
        assert!(!state.0.join("volumes/.creating.b").exists());
    }

    #[test]
    fn missing_volumes_and_corrupt_records_are_reported() {
        let state = TempState::new("corrupt");
        let store = VolumeStore::open(&state.0).unwrap();
        assert!(matches!(store.mount(&name("ghost"), &id("x")), Err(VolumeError::NotFound(_))));
        assert!(matches!(store.remove(&name("ghost")), Err(VolumeError::NotFound(_))));
        store.create(&name("bad"), named()).unwrap();
        std::fs::write(state.0.join("volumes/bad/volume.json"), "{not json").unwrap();
        assert!(matches!(store.get(&name("bad")), Err(VolumeError::CorruptMetadata { .. })));
        assert!(store.list().unwrap().is_empty());
        let report = store.reconcile().unwrap();
        assert_eq!(report.failures.len(), 1);
        assert!(state.0.join("volumes/bad/_data").exists(), "reconcile never deletes a volume it cannot read");
    }

    #[test]
    fn reconcile_deletes_records_staged_by_a_killed_writer() {
        let state = TempState::new("staged");
        let store = VolumeStore::open(&state.0).unwrap();
        store.create(&name("v"), named()).unwrap();
        // What write_durably leaves when its process dies before the rename.
        let staged = state.0.join("volumes/v/volume.tmp.4242");
        std::fs::write(&staged, "{\"half\":").unwrap();
        let report = store.reconcile().unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert!(!staged.exists(), "the staged record is left");
        assert!(store.get(&name("v")).is_ok());
    }

    #[test]
    fn reconcile_discards_half_done_work() {
        let state = TempState::new("leftovers");
        let store = VolumeStore::open(&state.0).unwrap();
        std::fs::create_dir_all(state.0.join("volumes/.creating.new/_data")).unwrap();
        std::fs::create_dir_all(state.0.join("volumes/.removing.old/_data")).unwrap();
        std::fs::write(state.0.join("locks/gone.lock"), "").unwrap();
        store.create(&name("kept"), named()).unwrap();
        let report = store.reconcile().unwrap();
        assert_eq!(report.discarded.len(), 3, "{:?}", report.discarded);
        let left: Vec<String> = std::fs::read_dir(state.0.join("volumes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["kept".to_string()]);
        assert!(state.0.join("locks/kept.lock").exists());
    }

    fn snapshot_of(volume: &str, origin: &str) -> DriverConfig {
        let options = BTreeMap::from([("type".to_string(), "thin".to_string()), ("from".to_string(), origin.to_string())]);
        DriverConfig::from_options(&name(volume), None, &options).unwrap()
    }

    #[test]
    fn a_snapshot_of_a_missing_volume_is_refused_before_any_pool_is_made() {
        let state = TempState::new("origin");
        let store = VolumeStore::open(&state.0).unwrap();
        let err = store.create(&name("snap"), snapshot_of("snap", "ghost")).unwrap_err().to_string();
        assert!(err.contains("\"from\"") && err.contains("no such volume: ghost"), "{err}");
        assert!(!state.0.join("thin").exists(), "no pool made for a refused snapshot");
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn creates_that_name_each_other_as_origin_do_not_wait_for_each_other() {
        let state = TempState::new("origin-cycle");
        let store = std::sync::Arc::new(VolumeStore::open(&state.0).unwrap());
        let workers: Vec<_> = [("a", "b"), ("b", "a")]
            .into_iter()
            .map(|(volume, origin)| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let refused = store.create(&name(volume), snapshot_of(volume, origin));
                        assert!(matches!(refused, Err(VolumeError::InvalidOption { .. })), "{refused:?}");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn concurrent_mounts_from_many_threads_are_all_recorded() {
        let state = TempState::new("threads");
        let store = std::sync::Arc::new(VolumeStore::open(&state.0).unwrap());
        let v = name("busy");
        store.create(&v, named()).unwrap();
        let workers: Vec<_> = (0..8)
            .map(|n| {
                let (store, v) = (store.clone(), v.clone());
                std::thread::spawn(move || {
                    for round in 0..10 {
                        store.mount(&v, &id(&format!("c{n}-{round}"))).unwrap();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(store.get(&v).unwrap().mounts.len(), 80);
    }
}
