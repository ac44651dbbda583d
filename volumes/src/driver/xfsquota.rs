//! `xfsquota`: a directory `BASE/NAME` with a project quota of its own (berth_quota), on an
//! XFS (or ext4 `-O quota,project`) file system mounted with `prjquota`; bind-mounted on
//! the volume's mount point on the first Mount. A write past `size` fails: ENOSPC on XFS,
//! EDQUOT on ext4 (which lets processes with CAP_SYS_RESOURCE through; containers lack it).
//! Removing the volume deletes the directory and frees its project ID.

use super::{make_dir, Driver, Usage, VolumeLayout};
use crate::error::{VolumeError, VolumeResult};
use crate::spec::{Bytes, DriverKind, DriverOptions};
use crate::sys::{self, MountTable};
use berth_quota::{Control, Limits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Smallest xfsquota volume: a limit below what one file takes on disk is no use.
pub const MIN_QUOTA_SIZE: Bytes = Bytes(Bytes::MIB);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XfsQuotaDriver {
    /// Where the volumes' directories are made; on a file system with project quotas.
    pub base: PathBuf,
    pub size: Bytes,
    /// Most files and directories the volume may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
}

impl XfsQuotaDriver {
    /// What `-o` may set, besides `type`.
    pub const OPTIONS: &'static [&'static str] = &["base", "size", "inodes"];

    /// `-o base=DIR -o size=SIZE [-o inodes=N]`.
    pub fn from_options(options: &DriverOptions) -> VolumeResult<XfsQuotaDriver> {
        let base = options
            .absolute_path("base", "it must be an absolute path")?
            .ok_or_else(|| options.missing(DriverKind::XfsQuota, "base"))?;
        let size = options
            .size("size", MIN_QUOTA_SIZE, |minimum| format!("the smallest xfsquota volume is {minimum}"))?
            .ok_or_else(|| options.missing(DriverKind::XfsQuota, "size"))?;
        let inodes = match options.get("inodes") {
            None => None,
            Some(text) => match text.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(options.invalid("inodes", text, "expected a positive number of files")),
            },
        };
        Ok(XfsQuotaDriver { base, size, inodes })
    }

    /// The volume's data: `BASE/NAME`.
    pub fn directory(&self, layout: &VolumeLayout) -> PathBuf {
        self.base.join(layout.name.as_str())
    }

    /// Quotas on the base's file system, or why there are none, naming the volume.
    fn control(&self, layout: &VolumeLayout) -> VolumeResult<Control> {
        if !self.base.is_dir() {
            return Err(VolumeError::InvalidOption {
                volume: layout.name.to_string(),
                option: "base".into(),
                value: self.base.display().to_string(),
                reason: "it is not an existing directory".into(),
            });
        }
        Control::for_path(&self.base).map_err(|err| match err {
            berth_quota::QuotaError::Unsupported { reason, .. } => VolumeError::InvalidOption {
                volume: layout.name.to_string(),
                option: "base".into(),
                value: self.base.display().to_string(),
                reason: format!("project quotas are not available there: {reason}"),
            },
            other => VolumeError::from(other),
        })
    }

    fn limits(&self) -> Limits {
        Limits { size: Some(self.size), inodes: self.inodes }
    }
}

impl Driver for XfsQuotaDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::XfsQuota
    }

    fn options(&self) -> BTreeMap<String, String> {
        let mut options =
            BTreeMap::from([("base".to_string(), self.base.display().to_string()), ("size".to_string(), self.size.to_string())]);
        if let Some(inodes) = self.inodes {
            options.insert("inodes".into(), inodes.to_string());
        }
        options
    }

    fn create(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        let control = self.control(layout)?;
        make_dir(&layout.data())?;
        let dir = self.directory(layout);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Left by a create that crashed before its volume appeared: take it up again,
            // but only while it is empty, so that nobody's data is adopted by mistake.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && is_empty_dir(&dir) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(VolumeError::AlreadyExists {
                    name: layout.name.to_string(),
                    existing: format!("a non-empty directory {} in the base", dir.display()),
                })
            }
            Err(err) => return Err(VolumeError::io("creating directory", dir.display())(err)),
        }
        if let Err(err) = control.set(&dir, self.limits()) {
            let _ = std::fs::remove_dir(&dir);
            return Err(err.into());
        }
        Ok(())
    }

    fn activate(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        let dir = self.directory(layout);
        if !dir.is_dir() {
            return Err(VolumeError::Busy {
                object: layout.name.to_string(),
                detail: format!("its directory {} is gone", dir.display()),
            });
        }
        sys::bind_mount(&dir, &layout.data())
    }

    fn deactivate(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        sys::unmount(&layout.data())
    }

    fn is_active(&self, layout: &VolumeLayout, mounts: &MountTable) -> bool {
        mounts.is_mount_point(&layout.data())
    }

    /// Deletes `BASE/NAME` (refusing while anything is mounted in it) and frees its project.
    fn destroy(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        if !self.base.is_dir() {
            return Ok(());
        }
        let control = self.control(layout)?;
        let dir = self.directory(layout);
        let project = match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {
                let project = control.project_of(&dir)?;
                sys::remove_owned_tree(&dir)?;
                Some(project)
            }
            Ok(_) => None,
            Err(_) => control.recorded(&dir)?,
        };
        if let Some(project) = project {
            control.free(project)?;
        }
        Ok(())
    }

    /// A create cut short leaves `BASE/NAME` empty (the volume never appeared, so nobody
    /// wrote there): it goes, with the project recorded for it. A directory holding
    /// anything was not made by this create (create refuses to adopt one): it stays.
    fn abandon(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        let dir = self.directory(layout);
        if !self.base.is_dir() || (dir.exists() && !is_empty_dir(&dir)) {
            return Ok(());
        }
        let control = self.control(layout)?;
        if let Some(project) = control.recorded(&dir)? {
            control.free(project)?;
        }
        match std::fs::remove_dir(&dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(VolumeError::io("deleting", dir.display())(err)),
            _ => Ok(()),
        }
    }

    fn usage(&self, layout: &VolumeLayout, _mounts: &MountTable) -> VolumeResult<Usage> {
        let quota = self.control(layout)?.get(&self.directory(layout))?;
        Ok(Usage {
            size_limit: quota.size_limit,
            used: Some(quota.used),
            available: quota.available(),
            project: Some(quota.project.0),
            inodes: Some(quota.inodes),
            inode_limit: quota.inode_limit,
            ..Usage::default()
        })
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}
