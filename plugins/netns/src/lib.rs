//! Network namespaces: open one by path, run code inside it, create and remove named ones,
//! and the namespace's kernel parameters ([`sysctl`]).
//!
//! `setns` switches only the calling thread, so entering a namespace is scoped to a guard
//! that switches back; plugins are single-threaded and tests do this on their own thread.

pub mod sysctl;

use berth_util::names::{check_file_name, InvalidName};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `ip netns` and runtimes keep named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Why a namespace could not be opened, entered, made or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path does not exist or cannot be opened: for a plugin, the container is unknown.
    #[error("cannot open network namespace {}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{} is not a network namespace", path.display())]
    NotNamespace { path: PathBuf },
    #[error("invalid network namespace name {name:?}: {source}")]
    InvalidName { name: String, source: InvalidName },
    /// A system call on a namespace failed.
    #[error("{what}")]
    System { what: String, source: std::io::Error },
}

pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

fn system(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> NetnsError {
    let what = what.into();
    move |errno| NetnsError::System { what, source: errno.into() }
}

fn system_io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError::System { what, source }
}

#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens a namespace by path (`/var/run/netns/NAME`, `/proc/PID/ns/net`). A path that does
    /// not exist, or is not a namespace, is reported as "container unknown" (code 3).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetnsError::Open { path: path.to_path_buf(), source })?;
        let fs = nix::sys::statfs::fstatfs(&file).map_err(system(format!("statfs {}", path.display())))?;
        let magic = fs.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NetnsError::NotNamespace { path: path.to_path_buf() });
        }
        Ok(NetNs { file, path: path.to_path_buf() })
    }

    /// The namespace the calling thread is in now.
    pub fn current() -> Result<NetNs> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Switches the calling thread into this namespace until the guard is dropped.
    pub fn enter(&self) -> Result<NetNsGuard> {
        let previous = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(system(format!("cannot enter network namespace {}", self.path.display())))?;
        Ok(NetNsGuard { previous })
    }

    /// Runs `f` inside this namespace and switches back, whatever `f` returns.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let _guard = self.enter()?;
        Ok(f())
    }

    /// The (device, inode) pair that identifies the namespace itself.
    pub fn id(&self) -> Result<(u64, u64)> {
        let st = nix::sys::stat::fstat(&self.file).map_err(system("fstat netns"))?;
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Makes `cmd` run inside this namespace (only the network namespace changes). The
    /// command keeps its own handle on the namespace, so `self` may be dropped before spawning.
    pub fn prepare_command(&self, cmd: &mut Command) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let handle = self.file.try_clone().map_err(system_io(format!("dup handle of {}", self.path.display())))?;
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

    /// Creates a namespace bound at `/var/run/netns/NAME`, as `ip netns add` does (its `lo`
    /// is down, as there; `berth_netlink::create_named_netns` also brings it up).
    pub fn create_named(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        let dir = Path::new(NETNS_RUN_DIR);
        std::fs::create_dir_all(dir).map_err(system_io(format!("mkdir {}", dir.display())))?;
        let target = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(system_io(format!("cannot create {}", target.display())))?;
        // unshare in a scratch thread, so the caller's own namespace never changes.
        let bind_target = target.clone();
        let made = std::thread::spawn(move || -> Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(system("unshare(CLONE_NEWNET)"))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &bind_target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(system(format!("bind-mount netns on {}", bind_target.display())))
        })
        .join()
        .unwrap_or_else(|_| Err(NetnsError::System { what: "netns creation thread panicked".into(), source: std::io::ErrorKind::Other.into() }));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        NetNs::open(&target)
    }

    /// Removes a namespace made by `create_named` (or `ip netns add`); absent is fine.
    pub fn delete_named(name: &str) -> Result<()> {
        validate_name(name)?;
        let target = Path::new(NETNS_RUN_DIR).join(name);
        match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(system(format!("umount {}", target.display()))(e)),
        }
        match std::fs::remove_file(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(system_io(format!("remove {}", target.display()))(e)),
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn validate_name(name: &str) -> Result<()> {
    check_file_name(name).map_err(|source| NetnsError::InvalidName { name: name.to_string(), source })
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
