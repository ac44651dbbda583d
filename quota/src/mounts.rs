//! Which mount holds a path, from /proc/self/mountinfo: its device number, type, block
//! device and super-block options (where the quota options show).

use crate::error::{QuotaError, QuotaResult};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the file system, as `st_dev` gives it.
    pub major: u32,
    pub minor: u32,
    /// The directory of the file system shown here (`/` unless a bind mount of a part).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    pub super_options: Vec<String>,
}

impl MountEntry {
    pub fn has_option(&self, option: &str) -> bool {
        self.super_options.iter().any(|o| o == option)
    }
}

/// Lines look like `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let separator = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                root: PathBuf::from(unescape(fields.get(3)?)),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fs_type: unescape(fields.get(separator + 1)?),
                source: unescape(fields.get(separator + 2)?),
                super_options: fields.get(separator + 3).map(|o| o.split(',').map(unescape).collect()).unwrap_or_default(),
            })
        })
        .collect()
}

/// The mount through which `path`, on the file system with device number `dev`, is
/// reached: the deepest mount point above it showing that file system.
pub fn mount_of(entries: &[MountEntry], path: &Path, dev: u64) -> Option<MountEntry> {
    let (major, minor) = (nix::sys::stat::major(dev) as u32, nix::sys::stat::minor(dev) as u32);
    entries
        .iter()
        .filter(|e| e.major == major && e.minor == minor && path.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.components().count())
        .cloned()
}

/// A mount of the whole file system that `mount` shows part of (root `/`), preferring
/// `mount` itself: berth keeps its project records at the file system's root.
pub fn whole_mount(entries: &[MountEntry], mount: &MountEntry) -> Option<MountEntry> {
    if mount.root == Path::new("/") {
        return Some(mount.clone());
    }
    entries.iter().find(|e| e.major == mount.major && e.minor == mount.minor && e.root == Path::new("/")).cloned()
}

pub fn read_mountinfo() -> QuotaResult<Vec<MountEntry>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(QuotaError::io("reading", path))?;
    Ok(parse_mountinfo(&text))
}

/// The block device node of a mount, for quotactl: its source when that is the device
/// itself, else udev's `/dev/block/MAJOR:MINOR`.
pub fn block_device(mount: &MountEntry) -> Option<PathBuf> {
    let wanted = nix::sys::stat::makedev(u64::from(mount.major), u64::from(mount.minor));
    [PathBuf::from(&mount.source), PathBuf::from(format!("/dev/block/{}:{}", mount.major, mount.minor))]
        .into_iter()
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == wanted))
}

/// The kernel writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |acc, d| acc.wrapping_mul(8).wrapping_add(d - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
98 22 7:3 / /mnt/xfs rw,relatime shared:50 - xfs /dev/loop3 rw,attr2,inode64,logbufs=8,prjquota
99 22 7:3 /vols /srv/my\\040vols rw,relatime shared:50 - xfs /dev/loop3 rw,attr2,inode64,prjquota
100 22 7:4 / /mnt/ext rw - ext4 /dev/loop4 rw,prjquota
";

    #[test]
    fn parses_devices_types_and_super_options() {
        let entries = parse_mountinfo(SAMPLE);
        assert_eq!(entries.len(), 4);
        let xfs = &entries[1];
        assert_eq!((xfs.major, xfs.minor, xfs.fs_type.as_str(), xfs.source.as_str()), (7, 3, "xfs", "/dev/loop3"));
        assert!(xfs.has_option("prjquota") && !xfs.has_option("rw,prjquota"));
        assert_eq!(entries[2].mount_point, PathBuf::from("/srv/my vols"));
        assert_eq!(entries[2].root, PathBuf::from("/vols"));
        assert!(!entries[0].has_option("prjquota"));
    }

    #[test]
    fn finds_the_mount_reaching_a_path_and_the_whole_file_system() {
        let entries = parse_mountinfo(SAMPLE);
        let dev = nix::sys::stat::makedev(7, 3);
        let through_bind = mount_of(&entries, Path::new("/srv/my vols/v1"), dev).unwrap();
        assert_eq!(through_bind.mount_point, PathBuf::from("/srv/my vols"));
        let whole = whole_mount(&entries, &through_bind).unwrap();
        assert_eq!(whole.mount_point, PathBuf::from("/mnt/xfs"), "records live at the file system's root");
        let direct = mount_of(&entries, Path::new("/mnt/xfs/a/b"), dev).unwrap();
        assert_eq!(whole_mount(&entries, &direct), Some(direct.clone()));
        assert!(mount_of(&entries, Path::new("/mnt/ext/a"), dev).is_none(), "another file system");
        assert!(mount_of(&entries, Path::new("/x"), nix::sys::stat::makedev(9, 9)).is_none());
    }
}
