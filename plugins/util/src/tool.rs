//! Finding a system tool (nft, iptables-restore, mkfs.ext4, ...). A runtime or a non-root
//! shell often runs plugins with a PATH that lacks the sbin directories, so those are
//! searched after PATH.

use std::path::{Path, PathBuf};

const SYSTEM_DIRS: [&str; 5] = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The first executable file named `name` in PATH, then in the system directories.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .chain(SYSTEM_DIRS.map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(super::find("sh").is_some());
        assert!(super::find("berth-no-such-tool").is_none());
    }
}
