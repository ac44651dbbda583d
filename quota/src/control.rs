//! [`Control`]: project quotas on one mounted file system. A directory gets a project ID
//! of its own (and the inherit flag, so that what is made inside counts too), the ID gets
//! limits, and usage is read back from the kernel's quota records.

use crate::error::{QuotaError, QuotaResult};
use crate::mounts::{self, MountEntry};
use crate::registry::{self, LockedRecords, Record, FIRST_PROJECT_ID, LAST_PROJECT_ID};
use crate::sys::{self, Dquot};
use crate::{Bytes, Limits, ProjectId};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A project's limits and usage, as the kernel keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectQuota {
    pub project: ProjectId,
    /// The directory berth gave the project to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The hard limit on bytes; `None`: no limit.
    pub size_limit: Option<Bytes>,
    pub used: Bytes,
    /// The hard limit on files and directories; `None`: no limit.
    pub inode_limit: Option<u64>,
    pub inodes: u64,
}

impl ProjectQuota {
    fn new(path: Option<PathBuf>, dquot: Dquot) -> ProjectQuota {
        ProjectQuota {
            project: ProjectId(dquot.id),
            path,
            size_limit: (dquot.block_limit > 0).then_some(Bytes(dquot.block_limit)),
            used: Bytes(dquot.used_bytes),
            inode_limit: (dquot.inode_limit > 0).then_some(dquot.inode_limit),
            inodes: dquot.used_inodes,
        }
    }

    /// Bytes left under the limit, if there is one.
    pub fn available(&self) -> Option<Bytes> {
        self.size_limit.map(|limit| Bytes(limit.0.saturating_sub(self.used.0)))
    }
}

/// Project quotas on the file system holding a given path.
#[derive(Debug, Clone)]
pub struct Control {
    /// The mount through which the path is reached.
    mount: MountEntry,
    /// A mount of the whole file system, where the records are kept, when one is visible.
    whole: Option<MountEntry>,
    device: PathBuf,
    dev: u64,
}

impl Control {
    /// Project quotas for the file system holding `path`, which must exist. Fails clearly
    /// unless it is XFS or ext4 mounted with `prjquota`.
    pub fn for_path(path: &Path) -> QuotaResult<Control> {
        let path = canonical(path)?;
        let dev = std::fs::metadata(&path).map_err(QuotaError::io("reading", path.display()))?.dev();
        let entries = mounts::read_mountinfo()?;
        let mount = mounts::mount_of(&entries, &path, dev).ok_or_else(|| QuotaError::Unsupported {
            path: path.display().to_string(),
            reason: "its file system is not in /proc/self/mountinfo".into(),
        })?;
        check_supported(&mount, &path)?;
        let device = mounts::block_device(&mount).ok_or_else(|| QuotaError::Unsupported {
            path: path.display().to_string(),
            reason: format!(
                "{} is mounted from {:?}, which is not the node of its block device {}:{} (quotactl needs one)",
                mount.mount_point.display(),
                mount.source,
                mount.major,
                mount.minor
            ),
        })?;
        let whole = mounts::whole_mount(&entries, &mount);
        Ok(Control { mount, whole, device, dev })
    }

    /// Where the file system is mounted (the mount reaching the path given to `for_path`).
    pub fn mount_point(&self) -> &Path {
        &self.mount.mount_point
    }

    pub fn fs_type(&self) -> &str {
        &self.mount.fs_type
    }

    /// The block device quotactl talks to.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Gives `dir` a project of its own, with the inherit flag, for it and everything in
    /// it, and sets the project's limits. Setting a quota on the same directory again keeps
    /// its project; a directory that only inherited its parent's gets a new one.
    pub fn set(&self, dir: &Path, limits: Limits) -> QuotaResult<ProjectId> {
        let (dir, inode) = self.directory(dir)?;
        let fs_path = self.fs_path(&dir)?;
        let mut locked = self.lock_records()?;
        self.prune(&mut locked)?;
        let current = project_of(&dir)?;
        let id = match locked.records.id_of(&fs_path, inode) {
            Some(recorded) if recorded == current.0 && current.0 != 0 => current,
            _ => self.allocate(&locked)?,
        };
        // The record first: a crash after it leaves an ID that the next `set` on this
        // directory takes up again, never one that another directory could get.
        let replaced: Vec<u32> =
            locked.records.projects.iter().filter(|(other, r)| **other != id.0 && r.path == fs_path).map(|(id, _)| *id).collect();
        for old in &replaced {
            locked.records.projects.remove(old);
        }
        locked.records.projects.insert(id.0, Record { path: fs_path, inode });
        locked.save()?;
        for old in replaced {
            sys::set_limits(&self.device, ProjectId(old), 0, 0)?;
        }
        // The tree moves to the project before the limits exist: moving it cannot fail for
        // being over them.
        set_tree(&dir, self.dev, id, true)?;
        sys::set_limits(&self.device, id, limits.size.map_or(0, |b| b.0), limits.inodes.unwrap_or(0))?;
        Ok(id)
    }

    /// The limits and usage of `dir`'s project.
    pub fn get(&self, dir: &Path) -> QuotaResult<ProjectQuota> {
        let (dir, _) = self.directory(dir)?;
        let id = project_of(&dir)?;
        if id.0 == 0 {
            return Err(QuotaError::InvalidPath {
                path: dir.display().to_string(),
                reason: "it has no project quota (its project ID is 0); set one with `berth quota set`".into(),
            });
        }
        Ok(ProjectQuota::new(Some(dir), sys::get_quota(&self.device, id)?))
    }

    /// The project ID of `path` (0: none).
    pub fn project_of(&self, path: &Path) -> QuotaResult<ProjectId> {
        project_of(path)
    }

    /// Every project on the file system: those berth recorded, with their directories, and
    /// those the kernel keeps a quota for, by ID.
    pub fn list(&self) -> QuotaResult<Vec<ProjectQuota>> {
        let records = registry::read(&self.records_root())?;
        let mut quotas: Vec<ProjectQuota> = sys::all_quotas(&self.device)?
            .into_iter()
            .filter(|dquot| dquot.id != 0)
            .map(|dquot| ProjectQuota::new(None, dquot))
            .collect();
        for (&id, record) in &records.projects {
            let path = self.visible_path(&record.path);
            match quotas.iter_mut().find(|q| q.project.0 == id) {
                Some(quota) => quota.path = path,
                None => quotas.push(ProjectQuota::new(path, Dquot { id, ..Dquot::default() })),
            }
        }
        quotas.sort_by_key(|q| q.project);
        Ok(quotas)
    }

    /// Takes `dir`'s limits away and gives it and its contents back to project 0; its ID is
    /// free again. Returns the ID it had, if any.
    pub fn clear(&self, dir: &Path) -> QuotaResult<Option<ProjectId>> {
        let (dir, _) = self.directory(dir)?;
        let mut locked = self.lock_records()?;
        let id = project_of(&dir)?;
        if id.0 == 0 {
            return Ok(None);
        }
        set_tree(&dir, self.dev, ProjectId(0), false)?;
        sys::set_limits(&self.device, id, 0, 0)?;
        locked.records.projects.remove(&id.0);
        locked.save()?;
        Ok(Some(id))
    }

    /// Frees a project whose directory is gone: no limits, no record.
    pub fn free(&self, id: ProjectId) -> QuotaResult<()> {
        if id.0 == 0 {
            return Ok(());
        }
        let mut locked = self.lock_records()?;
        sys::set_limits(&self.device, id, 0, 0)?;
        if locked.records.projects.remove(&id.0).is_some() {
            locked.save()?;
        }
        Ok(())
    }

    /// The ID berth recorded for a directory at `path`, which may no longer exist (its
    /// parent must).
    pub fn recorded(&self, path: &Path) -> QuotaResult<Option<ProjectId>> {
        let parent = path.parent().ok_or_else(|| QuotaError::InvalidPath {
            path: path.display().to_string(),
            reason: "it has no parent directory".into(),
        })?;
        let name = path.file_name().unwrap_or_default();
        let fs_path = self.fs_path(&canonical(parent)?.join(name))?;
        Ok(registry::read(&self.records_root())?.id_at(&fs_path).map(ProjectId))
    }

    /// A directory on this file system: its canonical path and inode.
    fn directory(&self, dir: &Path) -> QuotaResult<(PathBuf, u64)> {
        let dir = canonical(dir)?;
        let meta = std::fs::metadata(&dir).map_err(QuotaError::io("reading", dir.display()))?;
        let invalid = |reason: String| QuotaError::InvalidPath { path: dir.display().to_string(), reason };
        if !meta.is_dir() {
            return Err(invalid("it is not a directory".into()));
        }
        if meta.dev() != self.dev {
            return Err(invalid(format!("it is not on the file system mounted at {}", self.mount.mount_point.display())));
        }
        Ok((dir, meta.ino()))
    }

    /// `/mnt/xfs/vols/a` -> `/vols/a`: the path from the file system's root.
    fn fs_path(&self, visible: &Path) -> QuotaResult<PathBuf> {
        let relative = visible.strip_prefix(&self.mount.mount_point).map_err(|_| QuotaError::InvalidPath {
            path: visible.display().to_string(),
            reason: format!("it is not below {}", self.mount.mount_point.display()),
        })?;
        Ok(self.mount.root.join(relative))
    }

    /// `/vols/a` -> `/mnt/xfs/vols/a`, through a mount that shows it.
    fn visible_path(&self, fs_path: &Path) -> Option<PathBuf> {
        [self.whole.as_ref(), Some(&self.mount)].into_iter().flatten().find_map(|mount| {
            let relative = fs_path.strip_prefix(&mount.root).ok()?;
            Some(mount.mount_point.join(relative))
        })
    }

    /// Where the records live: the file system's root if a mount shows it, else the top of
    /// the mount we have.
    fn records_root(&self) -> PathBuf {
        self.whole.as_ref().unwrap_or(&self.mount).mount_point.clone()
    }

    fn lock_records(&self) -> QuotaResult<LockedRecords> {
        registry::lock(&self.records_root())
    }

    /// An ID nobody uses: not recorded by berth, without a quota record in the kernel, not
    /// named in /etc/projid.
    fn allocate(&self, locked: &LockedRecords) -> QuotaResult<ProjectId> {
        let mut used: BTreeSet<u32> = locked.records.projects.keys().copied().collect();
        used.extend(sys::all_quotas(&self.device)?.iter().map(|dquot| dquot.id));
        if let Ok(text) = std::fs::read_to_string("/etc/projid") {
            used.extend(registry::parse_projid(&text));
        }
        registry::first_free(&used, FIRST_PROJECT_ID, LAST_PROJECT_ID).map(ProjectId).ok_or_else(|| QuotaError::Exhausted {
            mount: self.mount.mount_point.display().to_string(),
            first: FIRST_PROJECT_ID,
            last: LAST_PROJECT_ID,
        })
    }

    /// Forgets (and frees) recorded projects whose directory is gone: the path no longer
    /// holds the recorded inode, and the kernel counts nothing in the project. A directory
    /// that was only renamed still counts itself, so it keeps its project.
    fn prune(&self, locked: &mut LockedRecords) -> QuotaResult<()> {
        let mut stale = Vec::new();
        for (&id, record) in &locked.records.projects {
            let present = self
                .visible_path(&record.path)
                .and_then(|path| std::fs::symlink_metadata(path).ok())
                .is_some_and(|meta| meta.ino() == record.inode && meta.dev() == self.dev);
            if present {
                continue;
            }
            let dquot = sys::get_quota(&self.device, ProjectId(id))?;
            if dquot.used_bytes == 0 && dquot.used_inodes == 0 {
                stale.push(id);
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        for id in &stale {
            sys::set_limits(&self.device, ProjectId(*id), 0, 0)?;
            locked.records.projects.remove(id);
        }
        locked.save()
    }
}

/// Refuses, with the fix in the message, file systems without enforced project quotas.
pub fn check_supported(mount: &MountEntry, path: &Path) -> QuotaResult<()> {
    let unsupported = |reason: String| QuotaError::Unsupported { path: path.display().to_string(), reason };
    let at = format!("{} ({} on {})", mount.mount_point.display(), mount.fs_type, mount.source);
    if !matches!(mount.fs_type.as_str(), "xfs" | "ext4") {
        return Err(unsupported(format!(
            "it is on {at}; project quotas need XFS, or ext4 made with -O quota,project, mounted with -o prjquota"
        )));
    }
    if mount.has_option("prjquota") {
        return Ok(());
    }
    if mount.has_option("pqnoenforce") {
        return Err(unsupported(format!(
            "{at} accounts project quotas but does not enforce them (pqnoenforce): mount it with -o prjquota"
        )));
    }
    let ext4_too = if mount.fs_type == "ext4" {
        " (ext4 also needs the quota and project features: mkfs.ext4 -O quota,project, or tune2fs -O quota,project while unmounted)"
    } else {
        ""
    };
    Err(unsupported(format!("{at} is not mounted with project quotas: mount it with -o prjquota{ext4_too}")))
}

fn canonical(path: &Path) -> QuotaResult<PathBuf> {
    std::fs::canonicalize(path).map_err(QuotaError::io("resolving", path.display()))
}

fn open_for_attributes(path: &Path, directory: bool) -> QuotaResult<File> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | if directory { libc::O_DIRECTORY } else { 0 };
    OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(QuotaError::io("opening", path.display()))
}

fn project_of(path: &Path) -> QuotaResult<ProjectId> {
    let file = open_for_attributes(path, path.is_dir())?;
    Ok(ProjectId(sys::get_xattr(&file, path)?.projid))
}

/// Puts `root` and every directory and regular file below it on the same file system into
/// project `id`, setting (or clearing) the inherit flag on directories. Symbolic links and
/// special files cannot be opened for the ioctl and are left as they are.
fn set_tree(root: &Path, dev: u64, id: ProjectId, inherit: bool) -> QuotaResult<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        sys::set_project(&open_for_attributes(&dir, true)?, &dir, id, Some(inherit))?;
        let entries = std::fs::read_dir(&dir).map_err(QuotaError::io("listing", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(QuotaError::io("listing", dir.display()))?;
            let path = entry.path();
            // DirEntry::metadata does not follow symbolic links.
            let meta = entry.metadata().map_err(QuotaError::io("reading", path.display()))?;
            if meta.dev() != dev {
                continue;
            }
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                sys::set_project(&open_for_attributes(&path, false)?, &path, id, None)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::parse_mountinfo;

    fn entry(line: &str) -> MountEntry {
        parse_mountinfo(line).pop().expect("a mountinfo line")
    }

    #[test]
    fn file_systems_without_enforced_project_quotas_are_refused_with_the_fix() {
        let cases = [
            ("98 22 0:40 / /run rw - tmpfs tmpfs rw,size=10M", "need XFS, or ext4"),
            ("98 22 7:3 / /mnt/x rw - xfs /dev/loop3 rw,attr2,noquota", "mount it with -o prjquota"),
            ("98 22 7:3 / /mnt/x rw - xfs /dev/loop3 rw,pqnoenforce", "does not enforce them"),
            ("98 22 7:3 / /mnt/x rw - ext4 /dev/loop3 rw,usrquota", "mkfs.ext4 -O quota,project"),
        ];
        for (line, expected) in cases {
            let err = check_supported(&entry(line), Path::new("/mnt/x/vols")).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("/mnt/x/vols"), "{line}: {err}");
        }
        assert!(check_supported(&entry("98 22 7:3 / /mnt/x rw - xfs /dev/loop3 rw,prjquota"), Path::new("/mnt/x")).is_ok());
        assert!(check_supported(&entry("98 22 7:3 / /mnt/x rw - ext4 /dev/loop3 rw,prjquota"), Path::new("/mnt/x")).is_ok());
    }

    #[test]
    fn a_path_on_a_file_system_without_quotas_is_refused() {
        // /proc is never XFS or ext4.
        let err = Control::for_path(Path::new("/proc/self")).unwrap_err().to_string();
        assert!(err.contains("project quotas are not available") && err.contains("proc"), "{err}");
    }

    #[test]
    fn usage_reports_limits_and_what_is_left() {
        let quota = ProjectQuota::new(
            None,
            Dquot { id: 100_000, block_limit: 10 << 20, inode_limit: 0, used_bytes: 4 << 20, used_inodes: 3 },
        );
        assert_eq!(quota.size_limit, Some(Bytes(10 << 20)));
        assert_eq!(quota.inode_limit, None);
        assert_eq!(quota.available(), Some(Bytes(6 << 20)));
        let json = serde_json::to_value(&quota).unwrap();
        assert_eq!(json["Project"], 100_000);
        assert_eq!(json["SizeLimit"], 10 << 20);
    }
}
