//! Fixtures for berth's kernel-lab tests (here and in berth-volumes): scratch directories
//! that unmount, detach and delete what was made in them, even when a test fails, and
//! XFS or ext4 file systems with project quotas on loop-backed images.
//!
//! These run the usual tools (mkfs, mount) rather than berth's own code, so that what is
//! under test never builds its own fixtures.

use crate::Bytes;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Loads kernel modules (inside the lab; this machine's kernel has none), panicking with
/// modprobe's message on failure.
pub fn modprobe(modules: &[&str]) {
    for module in modules {
        run(Command::new("modprobe").arg(module));
    }
}

/// Runs a command to success and returns its stdout, or panics with its stderr.
pub fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A directory deleted on drop, after unmounting what is mounted below it (deepest first)
/// and detaching loop devices whose backing file is below it.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let unique = format!("berth-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    pub fn join(&self, relative: &str) -> PathBuf {
        self.path.join(relative)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_all_under(&self.path);
        for device in loop_devices_under(&self.path) {
            let _ = Command::new("losetup").arg("-d").arg(&device).status();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Unmounts everything at or below `dir`, deepest first (lazily, so a failing test's open
/// files do not keep it).
pub fn unmount_all_under(dir: &Path) {
    let Ok(entries) = crate::mounts::read_mountinfo() else { return };
    let mut mounted: Vec<PathBuf> = entries.into_iter().map(|e| e.mount_point).filter(|p| p.starts_with(dir)).collect();
    mounted.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for mount_point in mounted {
        let _ = nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Attached loop devices whose backing file lies below `dir`, as sysfs tells.
pub fn loop_devices_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim().trim_end_matches(" (deleted)");
            Path::new(backing).starts_with(dir).then(|| Path::new("/dev").join(entry.file_name()))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    Xfs,
    /// ext4 with the quota and project features.
    Ext4,
}

impl Fs {
    pub fn name(self) -> &'static str {
        match self {
            Fs::Xfs => "xfs",
            Fs::Ext4 => "ext4",
        }
    }

    /// The smallest image worth making: mkfs.xfs refuses less than 300 MiB.
    pub fn min_size(self) -> Bytes {
        match self {
            Fs::Xfs => Bytes(320 << 20),
            Fs::Ext4 => Bytes(64 << 20),
        }
    }
}

/// Makes a sparse image of `size` at `image` holding a fresh file system.
pub fn make_image(image: &Path, fs: Fs, size: Bytes) {
    let file = OpenOptions::new().write(true).create_new(true).open(image).expect("create image");
    file.set_len(size.0).expect("size image");
    drop(file);
    match fs {
        Fs::Xfs => run(Command::new("mkfs.xfs").args(["-q", "-f", "-K"]).arg(image)),
        // 256-byte inodes: the project feature keeps the project ID in the larger inode.
        Fs::Ext4 => {
            run(Command::new("mkfs.ext4").args(["-q", "-F", "-I", "256", "-O", "quota,project", "-E", "nodiscard"]).arg(image))
        }
    };
}

/// Mounts `image` on `mount_point` through a loop device (autoclear: unmounting detaches it).
pub fn mount_image(image: &Path, mount_point: &Path, fs: Fs, options: &str) {
    std::fs::create_dir_all(mount_point).expect("create mount point");
    let options = if options.is_empty() { "loop".to_string() } else { format!("loop,{options}") };
    run(Command::new("mount").args(["-t", fs.name(), "-o", &options]).arg(image).arg(mount_point));
}

/// Writes 1 MiB chunks (each synced) until the kernel refuses or `limit` bytes are written;
/// returns the bytes written and the refusal.
pub fn fill(path: &Path, limit: Bytes) -> (u64, Option<std::io::Error>) {
    let mut file = OpenOptions::new().create(true).append(true).open(path).expect("create fill file");
    let chunk = vec![0x5Au8; 1 << 20];
    let mut written = 0u64;
    while written < limit.0 {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(err) => return (written, Some(err)),
        }
        if let Err(err) = file.sync_data() {
            return (written, Some(err));
        }
    }
    (written, None)
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Runs `work` on a thread without CAP_SYS_RESOURCE in its effective set, as a container
/// runs (Docker and podman drop it): ext4 lets holders of it write past quota limits (XFS
/// does not). Capabilities are per thread, so the rest of the test keeps them.
pub fn without_sys_resource<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        drop_effective_capability(CAP_SYS_RESOURCE);
        work()
    })
    .join()
    .expect("the unprivileged writer panicked")
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn drop_effective_capability(cap: u32) {
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader { version: VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget and capset take a header and two data structs (version 3), all live.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()), 0, "capget");
        data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        assert_eq!(libc::syscall(libc::SYS_capset, &header, data.as_ptr()), 0, "capset");
    }
}

/// `xfs_quota`'s report lines of the projects of the XFS file system at `mount_point`,
/// other than 0, with a hard block limit: `#ID`, then for blocks (KiB) and for inodes each
/// `used soft hard warn grace`.
pub fn limited_projects(mount_point: &Path) -> Vec<String> {
    let report = run(Command::new("xfs_quota").args(["-x", "-c", "report -p -n -N -b -i"]).arg(mount_point));
    report
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 9 && fields[0] != "#0" && fields[3] != "0"
        })
        .map(str::to_string)
        .collect()
}
