//! berth's record of the project IDs it gave out on one file system, kept at the file
//! system's root: `.berth-projects` (JSON, replaced atomically) and `.berth-projects.lock`
//! (an flock held while IDs are chosen, so that two processes never pick the same one).
//!
//! A record names the directory (its path from the file system's root and its inode) so
//! that setting a quota on the same directory again keeps its ID, while a directory that
//! only inherited an ID from its parent gets one of its own.

use crate::error::{QuotaError, QuotaResult};
use berth_util::fs::{remove_staged, write_durably, LockFile};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const RECORDS_FILE: &str = ".berth-projects";
pub const LOCK_FILE: &str = ".berth-projects.lock";

/// IDs berth hands out: well above those admins write into /etc/projid by hand, below
/// 2^32 - 1 (which the kernel reserves).
pub const FIRST_PROJECT_ID: u32 = 100_000;
pub const LAST_PROJECT_ID: u32 = u32::MAX - 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    #[serde(default)]
    pub projects: BTreeMap<u32, Record>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The directory, from the root of its file system (`/vols/web`).
    pub path: PathBuf,
    pub inode: u64,
}

impl Records {
    /// The ID recorded for exactly this directory.
    pub fn id_of(&self, path: &Path, inode: u64) -> Option<u32> {
        self.projects.iter().find(|(_, r)| r.path == path && r.inode == inode).map(|(id, _)| *id)
    }

    /// The ID recorded for a path, whatever its inode (the directory may be gone).
    pub fn id_at(&self, path: &Path) -> Option<u32> {
        self.projects.iter().find(|(_, r)| r.path == path).map(|(id, _)| *id)
    }
}

/// The records, locked until dropped.
pub struct LockedRecords {
    path: PathBuf,
    pub records: Records,
    _lock: LockFile,
}

impl LockedRecords {
    /// Writes the records durably: staged, fsynced, renamed over, directory fsynced.
    pub fn save(&self) -> QuotaResult<()> {
        let json = serde_json::to_vec_pretty(&self.records)
            .map_err(|err| QuotaError::CorruptState { path: self.path.display().to_string(), detail: err.to_string() })?;
        Ok(write_durably(&self.path, &json)?)
    }
}

/// Locks and reads the records kept at `root`.
pub fn lock(root: &Path) -> QuotaResult<LockedRecords> {
    let lock = LockFile::acquire(&root.join(LOCK_FILE))?;
    // Left by a writer killed before its rename; with the lock, no writer is under way.
    remove_staged(&root.join(RECORDS_FILE));
    Ok(LockedRecords { path: root.join(RECORDS_FILE), records: read(root)?, _lock: lock })
}

/// Reads the records kept at `root` (none yet: empty). They are replaced by rename, so
/// reading needs no lock.
pub fn read(root: &Path) -> QuotaResult<Records> {
    let path = root.join(RECORDS_FILE);
    match std::fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text)
            .map_err(|err| QuotaError::CorruptState { path: path.display().to_string(), detail: err.to_string() }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
        Err(err) => Err(QuotaError::io("reading", path.display())(err)),
    }
}

/// The lowest ID from `first` to `last` that is not in `used`.
pub fn first_free(used: &BTreeSet<u32>, first: u32, last: u32) -> Option<u32> {
    let mut candidate = first;
    for &id in used.range(first..=last) {
        if id != candidate {
            break;
        }
        candidate = candidate.checked_add(1)?;
    }
    (candidate <= last).then_some(candidate)
}

/// The IDs named in /etc/projid (`name:id` lines), which xfs_quota's users hand out.
pub fn parse_projid(text: &str) -> BTreeSet<u32> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split(':').nth(1)?.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_skips_every_used_id() {
        let used = BTreeSet::from([5, 100_000, 100_001, 100_003]);
        assert_eq!(first_free(&used, 100_000, LAST_PROJECT_ID), Some(100_002));
        assert_eq!(first_free(&BTreeSet::new(), 100_000, LAST_PROJECT_ID), Some(100_000));
        assert_eq!(first_free(&BTreeSet::from([7, 8, 9]), 7, 9), None, "all taken");
        assert_eq!(first_free(&BTreeSet::from([LAST_PROJECT_ID]), LAST_PROJECT_ID, LAST_PROJECT_ID), None);
    }

    #[test]
    fn projid_names_are_read_and_comments_skipped() {
        let ids = parse_projid("# comment\nlogs:10\nweb:100000\nbroken\n bad:x\n");
        assert_eq!(ids, BTreeSet::from([10, 100_000]));
    }

    #[test]
    fn records_survive_a_round_trip_and_find_directories() {
        let dir = std::env::temp_dir().join(format!("berth-quota-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let mut locked = lock(&dir).unwrap();
            assert!(locked.records.projects.is_empty());
            locked.records.projects.insert(100_000, Record { path: "/vols/a".into(), inode: 42 });
            locked.save().unwrap();
        }
        let records = read(&dir).unwrap();
        assert_eq!(records.id_of(Path::new("/vols/a"), 42), Some(100_000));
        assert_eq!(records.id_of(Path::new("/vols/a"), 43), None, "another directory at the same path");
        assert_eq!(records.id_at(Path::new("/vols/a")), Some(100_000));
        // What write_durably leaves when its process dies before the rename: the next
        // writer, holding the lock, deletes it.
        let staged = dir.join(format!("{RECORDS_FILE}.tmp.4242"));
        std::fs::write(&staged, "{\"half\":").unwrap();
        drop(lock(&dir).unwrap());
        assert!(!staged.exists(), "the staged records file is left");
        std::fs::write(dir.join(RECORDS_FILE), "{not json").unwrap();
        let err = read(&dir).unwrap_err().to_string();
        assert!(err.contains(RECORDS_FILE), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
