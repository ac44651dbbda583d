//! Finding a system tool (nft, iptables-restore, mkfs.ext4, ...). A runtime or a non-root
//! shell often runs plugins with a PATH that lacks the sbin directories, so those are
//! searched after PATH. And running one so that it does not outlive its caller.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Makes `cmd`'s process die (SIGKILL) when the thread that starts it goes. A plugin killed
/// half-way must leave nothing running on: a tool (iptables-restore) or a delegated plugin
/// (the IPAM plugin's ADD) finishing after it would change the host under the runtime's
/// retry, which has already read the state it is about to undo.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; the closure only reads a copied u32.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have died before the prctl: then nothing would kill this one.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("the process that started this one is gone"));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(super::find("sh").is_some());
        assert!(super::find("berth-no-such-tool").is_none());
    }

    #[test]
    fn a_tool_dies_with_the_thread_that_started_it() {
        let child = std::thread::spawn(|| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("30");
            super::die_with_parent(&mut cmd);
            cmd.spawn().expect("run sleep")
        })
        .join()
        .expect("thread");
        let mut child = child;
        // The thread that started it is gone: the kernel sent SIGKILL.
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status}");
    }
}
