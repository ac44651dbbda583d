//! Network namespaces: open one by path, run code inside it, create and remove named ones.
//!
//! `setns` switches only the calling thread, so entering a namespace is scoped to a guard
//! that switches back; plugins are single-threaded and tests do this on their own thread.

use crate::error::{CniError, CniResult, Code};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `ip netns` and runtimes keep named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens a namespace by path (`/var/run/netns/NAME`, `/proc/PID/ns/net`). A path that does
    /// not exist, or is not a namespace, is reported as "container unknown" (code 3).
    pub fn open(path: impl AsRef<Path>) -> CniResult<NetNs> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            CniError::new(Code::UnknownContainer, format!("cannot open network namespace {}", path.display())).with_details(e)
        })?;
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| CniError::io(format!("statfs {}", path.display()), e))?;
        let magic = fs.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(CniError::new(Code::UnknownContainer, format!("{} is not a network namespace", path.display())));
        }
        Ok(NetNs { file, path: path.to_path_buf() })
    }

    /// The namespace the calling thread is in now.
    pub fn current() -> CniResult<NetNs> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Switches the calling thread into this namespace until the guard is dropped.
    pub fn enter(&self) -> CniResult<NetNsGuard> {
        let previous = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| CniError::io(format!("cannot enter network namespace {}", self.path.display()), e))?;
        Ok(NetNsGuard { previous })
    }

    /// Runs `f` inside this namespace and switches back, whatever `f` returns.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> CniResult<T> {
        let _guard = self.enter()?;
        Ok(f())
    }

    /// The (device, inode) pair that identifies the namespace itself.
    pub fn id(&self) -> CniResult<(u64, u64)> {
        let st = nix::sys::stat::fstat(&self.file).map_err(|e| CniError::io("fstat netns", e))?;
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Makes `cmd` run inside this namespace (only the network namespace changes). The
    /// command keeps its own handle on the namespace, so `self` may be dropped before spawning.
    pub fn prepare_command(&self, cmd: &mut Command) -> CniResult<()> {
        use std::os::unix::process::CommandExt;
        let handle = self.file.try_clone().map_err(|e| CniError::io(format!("dup handle of {}", self.path.display()), e))?;
        // SAFETY: setns is async-signal-safe; the handle lives in the closure until exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Creates a namespace bound at `/var/run/netns/NAME`, as `ip netns add` does, with `lo` up.
    pub fn create_named(name: &str) -> CniResult<NetNs> {
        validate_name(name)?;
        let dir = Path::new(NETNS_RUN_DIR);
        std::fs::create_dir_all(dir).map_err(|e| CniError::io(format!("mkdir {}", dir.display()), e))?;
        let target = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| CniError::io(format!("cannot create {}", target.display()), e))?;
        // unshare in a scratch thread, so the caller's own namespace never changes.
        let bind_target = target.clone();
        let made = std::thread::spawn(move || -> CniResult<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| CniError::io("unshare(CLONE_NEWNET)", e))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &bind_target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| CniError::io(format!("bind-mount netns on {}", bind_target.display()), e))
        })
        .join()
        .unwrap_or_else(|_| Err(CniError::io("netns creation thread", "panicked")));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        let ns = NetNs::open(&target)?;
        crate::netlink::Netlink::open_in(&ns)?.set_up_by_name("lo")?;
        Ok(ns)
    }

    /// Removes a namespace made by `create_named` (or `ip netns add`); absent is fine.
    pub fn delete_named(name: &str) -> CniResult<()> {
        validate_name(name)?;
        let target = Path::new(NETNS_RUN_DIR).join(name);
        match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(CniError::io(format!("umount {}", target.display()), e)),
        }
        match std::fs::remove_file(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("remove {}", target.display()), e)),
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn validate_name(name: &str) -> CniResult<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CniError::invalid_config(format!("invalid network namespace name {name:?}")));
    }
    Ok(())
}

/// Switches the thread back to where it was on drop.
#[must_use = "the thread leaves the namespace when the guard is dropped"]
pub struct NetNsGuard {
    previous: NetNs,
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.previous.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Carrying on in the wrong namespace would configure the wrong host.
            panic!("cannot return to network namespace {}: {e}", self.previous.path.display());
        }
    }
}
