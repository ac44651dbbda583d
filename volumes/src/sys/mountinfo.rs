//! What the kernel has mounted, as this process's mount namespace sees it.

use crate::error::{VolumeError, VolumeResult};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub source: String,
    pub fs_type: String,
}

#[derive(Debug, Clone, Default)]
pub struct MountTable {
    entries: Vec<MountEntry>,
}

impl MountTable {
    pub fn read() -> VolumeResult<MountTable> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).map_err(VolumeError::io("reading", path))?;
        Ok(MountTable::parse(&text))
    }

    /// Lines look like `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`;
    /// the mount point is field 5, and after the `-` come fs type and source.
    pub fn parse(text: &str) -> MountTable {
        let entries = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let mount_point = fields.nth(4)?;
                let mut after_separator = fields.skip_while(|field| *field != "-").skip(1);
                let fs_type = after_separator.next().unwrap_or_default();
                let source = after_separator.next().unwrap_or_default();
                Some(MountEntry {
                    mount_point: PathBuf::from(unescape(mount_point)),
                    source: unescape(source),
                    fs_type: unescape(fs_type),
                })
            })
            .collect();
        MountTable { entries }
    }

    /// The topmost mount at exactly `path` (the last one listed wins, as in the kernel).
    pub fn mount_at(&self, path: &Path) -> Option<&MountEntry> {
        self.entries.iter().rev().find(|entry| entry.mount_point == path)
    }

    pub fn is_mount_point(&self, path: &Path) -> bool {
        self.mount_at(path).is_some()
    }

    /// Mounts at `path` or anywhere below it.
    pub fn under<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a MountEntry> + 'a {
        self.entries.iter().filter(move |entry| entry.mount_point.starts_with(path))
    }
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
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
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
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 7:3 / /var/lib/berth/volumes/v1/_data rw,relatime shared:50 - ext4 /dev/loop3 rw,usrquota
99 22 254:0 /srv/a\\040b /var/lib/berth/volumes/my\\040vol/_data ro,relatime shared:1 - ext4 /dev/vda rw
";

    #[test]
    fn finds_mount_points_with_escapes() {
        let table = MountTable::parse(SAMPLE);
        let loop_mount = table.mount_at(Path::new("/var/lib/berth/volumes/v1/_data")).unwrap();
        assert_eq!(loop_mount.source, "/dev/loop3");
        assert_eq!(loop_mount.fs_type, "ext4");
        assert!(table.is_mount_point(Path::new("/var/lib/berth/volumes/my vol/_data")));
        assert!(!table.is_mount_point(Path::new("/var/lib/berth/volumes/v1")));
        assert_eq!(table.under(Path::new("/var/lib/berth")).count(), 2);
        assert_eq!(table.under(Path::new("/var/lib/berth/volumes/v")).count(), 0, "whole components only");
    }

    #[test]
    fn tolerates_garbage_lines() {
        let table = MountTable::parse("short line\n\n1 2 3 4 /x\n");
        assert!(table.is_mount_point(Path::new("/x")));
        assert_eq!(table.under(Path::new("/")).count(), 1);
    }
}
