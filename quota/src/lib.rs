//! Project quotas on XFS and ext4 (with the `project` feature): a directory gets a project
//! ID that everything made inside it inherits, the project gets block and inode limits,
//! and its usage is read back from the kernel. Moby's `quota/projectquota.go` is the model:
//! one [`Control`] per file system, with `set` and `get`.
//!
//! - [`control`]: [`Control`], the quotas of one mounted file system;
//! - [`registry`]: which IDs berth gave to which directories, at the file system's root;
//! - [`sys`]: FS_IOC_FSGETXATTR/FS_IOC_FSSETXATTR and quotactl(2);
//! - [`mounts`]: which mount, block device and options hold a path;
//! - [`cli`]: `berth quota set|get|ls|clear`.
//!
//! ```no_run
//! use berth_quota::{Bytes, Control, Limits};
//! let control = Control::for_path("/srv/xfs/vols".as_ref())?;
//! let project = control.set("/srv/xfs/vols/web".as_ref(), Limits { size: Some(Bytes(10 << 20)), inodes: None })?;
//! let quota = control.get("/srv/xfs/vols/web".as_ref())?;
//! println!("project {project}: {} of {:?}", quota.used, quota.size_limit);
//! # Ok::<(), berth_quota::QuotaError>(())
//! ```
//!
//! What a writer sees past a project's limit: on XFS, ENOSPC (XFS shows a project quota as
//! a full file system, so that `df` in the directory shows the limit), for every process;
//! on ext4, EDQUOT, except for processes holding CAP_SYS_RESOURCE (root on the host), which
//! ext4 lets through. Containers run without CAP_SYS_RESOURCE unless given it.

mod bytes;
pub mod cli;
pub mod control;
pub mod error;
pub mod mounts;
pub mod registry;
pub mod sys;
/// Fixtures for the kernel-lab tests of this crate and of berth-volumes.
#[doc(hidden)]
pub mod testing;

pub use bytes::Bytes;
pub use control::{Control, ProjectQuota};
pub use error::{QuotaError, QuotaResult};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A project ID: what a directory's files are counted under. 0 is the default project,
/// which has no limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectId(pub u32);

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0.to_string())
    }
}

/// Hard limits of a project; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub size: Option<Bytes>,
    pub inodes: Option<u64>,
}
