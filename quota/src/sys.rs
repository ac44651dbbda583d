//! The kernel interfaces: a file's project ID and flags (FS_IOC_FSGETXATTR and
//! FS_IOC_FSSETXATTR, linux/fs.h) and the project quota of an ID (quotactl(2) with the
//! generic Q_GETQUOTA, Q_SETQUOTA and Q_GETNEXTQUOTA on PRJQUOTA, which XFS and ext4 both
//! answer, on the block device of the mount).

use crate::error::{QuotaError, QuotaResult};
use crate::ProjectId;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// New files and directories made in a directory with this flag take its project ID.
pub const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// `struct fsxattr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pub pad: [u8; 8],
}

mod ioctls {
    use super::FsXattr;
    nix::ioctl_read!(fs_get_xattr, b'X', 31, FsXattr);
    nix::ioctl_write_ptr!(fs_set_xattr, b'X', 32, FsXattr);
}

/// The project ID and flags of an open file or directory.
pub fn get_xattr(file: &File, path: &Path) -> QuotaResult<FsXattr> {
    let mut attr = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a `struct fsxattr` we own.
    unsafe { ioctls::fs_get_xattr(file.as_raw_fd(), &mut attr) }
        .map_err(QuotaError::io("reading the project ID of", path.display()))?;
    Ok(attr)
}

/// Sets the project ID of an open file or directory; for a directory, `inherit` also sets
/// or clears FS_XFLAG_PROJINHERIT.
pub fn set_project(file: &File, path: &Path, project: ProjectId, inherit: Option<bool>) -> QuotaResult<()> {
    let mut attr = get_xattr(file, path)?;
    attr.projid = project.0;
    match inherit {
        Some(true) => attr.xflags |= FS_XFLAG_PROJINHERIT,
        Some(false) => attr.xflags &= !FS_XFLAG_PROJINHERIT,
        None => {}
    }
    // SAFETY: FS_IOC_FSSETXATTR reads a live `struct fsxattr`.
    unsafe { ioctls::fs_set_xattr(file.as_raw_fd(), &attr) }
        .map_err(QuotaError::io("setting the project ID of", path.display()))?;
    Ok(())
}

const PRJQUOTA: u32 = 2;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const Q_GETNEXTQUOTA: u32 = 0x80_0009;
/// `dqb_valid` bits: block limits, inode limits.
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
/// Block limits go in units of 1 KiB (QIF_DQBLKSIZE); usage comes in bytes.
pub const QUOTA_BLOCK: u64 = 1024;

/// `struct if_dqblk` followed by the ID (`struct if_nextdqblk`); Q_GETQUOTA and Q_SETQUOTA
/// use the first part only.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct IfNextDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
    id: u32,
}

/// What the kernel holds for one project: limits (0: none) and usage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dquot {
    pub id: u32,
    /// Hard limit in bytes (a multiple of [`QUOTA_BLOCK`]); 0 means no limit.
    pub block_limit: u64,
    pub inode_limit: u64,
    pub used_bytes: u64,
    pub used_inodes: u64,
}

impl From<IfNextDqblk> for Dquot {
    fn from(raw: IfNextDqblk) -> Dquot {
        Dquot {
            id: raw.id,
            block_limit: raw.bhardlimit.saturating_mul(QUOTA_BLOCK),
            inode_limit: raw.ihardlimit,
            used_bytes: raw.curspace,
            used_inodes: raw.curinodes,
        }
    }
}

fn qcmd(cmd: u32) -> libc::c_int {
    ((cmd << 8) | PRJQUOTA) as libc::c_int
}

fn quotactl(cmd: u32, device: &Path, id: u32, data: *mut IfNextDqblk) -> io::Result<()> {
    let special = CString::new(device.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `special` is a NUL-terminated path and `data` points to a live if_nextdqblk,
    // large enough for every command used here.
    let rc = unsafe { libc::quotactl(qcmd(cmd), special.as_ptr(), id as libc::c_int, data.cast()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The project quota of `id`; a project the kernel keeps nothing for (XFS answers ENOENT)
/// has no limits and no usage.
pub fn get_quota(device: &Path, id: ProjectId) -> QuotaResult<Dquot> {
    let mut raw = IfNextDqblk::default();
    match quotactl(Q_GETQUOTA, device, id.0, &mut raw) {
        Ok(()) => Ok(Dquot { id: id.0, ..Dquot::from(raw) }),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(Dquot { id: id.0, ..Dquot::default() }),
        Err(err) => Err(QuotaError::io("reading the quota of", format!("project {id} on {}", device.display()))(err)),
    }
}

/// Sets the hard limits of project `id`: bytes (rounded up to whole KiB) and inodes, 0 for
/// none. Soft limits are cleared: berth's limits are hard walls, not warnings.
pub fn set_limits(device: &Path, id: ProjectId, bytes: u64, inodes: u64) -> QuotaResult<()> {
    let mut raw = IfNextDqblk {
        bhardlimit: bytes.div_ceil(QUOTA_BLOCK),
        ihardlimit: inodes,
        valid: QIF_BLIMITS | QIF_ILIMITS,
        ..IfNextDqblk::default()
    };
    quotactl(Q_SETQUOTA, device, id.0, &mut raw)
        .map_err(QuotaError::io("setting the quota of", format!("project {id} on {}", device.display())))
}

/// Every project the kernel keeps a quota record for (usage or limits), from `Q_GETNEXTQUOTA`.
pub fn all_quotas(device: &Path) -> QuotaResult<Vec<Dquot>> {
    let mut found = Vec::new();
    let mut next: u32 = 0;
    loop {
        let mut raw = IfNextDqblk::default();
        match quotactl(Q_GETNEXTQUOTA, device, next, &mut raw) {
            Ok(()) => {
                found.push(Dquot::from(raw));
                match raw.id.checked_add(1) {
                    Some(after) if raw.id >= next => next = after,
                    _ => return Ok(found),
                }
            }
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => return Ok(found),
            Err(err) => {
                return Err(QuotaError::io("listing the project quotas of", device.display())(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<IfNextDqblk>(), 72);
        // QCMD(Q_GETQUOTA, PRJQUOTA) as quota.h builds it.
        assert_eq!(qcmd(Q_GETQUOTA) as u32, 0x8000_0702);
        // _IOR('X', 31, struct fsxattr) and _IOW('X', 32, struct fsxattr).
        assert_eq!(nix::request_code_read!(b'X', 31, std::mem::size_of::<FsXattr>()), 0x801c_581f);
        assert_eq!(nix::request_code_write!(b'X', 32, std::mem::size_of::<FsXattr>()), 0x401c_5820);
    }

    #[test]
    fn limits_round_up_to_whole_kib() {
        let raw = IfNextDqblk { bhardlimit: 10 * 1024, curspace: 4096, curinodes: 3, id: 7, ..Default::default() };
        let quota = Dquot::from(raw);
        assert_eq!((quota.block_limit, quota.used_bytes, quota.used_inodes, quota.id), (10 << 20, 4096, 3, 7));
    }
}
