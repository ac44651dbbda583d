//! What the kernel has mounted, as this process's mount namespace sees it.

use crate::error::{VolumeError, VolumeResult};
use std::path::Path;

/// One mount, as the quota crate parses /proc/self/mountinfo (one parser for both crates).
pub use berth_quota::mounts::MountEntry;

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

    pub fn parse(text: &str) -> MountTable {
        MountTable { entries: berth_quota::mounts::parse_mountinfo(text) }
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
    fn skips_garbage_lines() {
        let table = MountTable::parse("short line\n\n1 2 3 4 /x\n22 1 254:0 / /y rw - ext4 /dev/vda rw\n");
        assert!(!table.is_mount_point(Path::new("/x")), "a truncated line is no mount");
        assert!(table.is_mount_point(Path::new("/y")));
        assert_eq!(table.under(Path::new("/")).count(), 1);
    }
}
