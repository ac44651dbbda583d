//! The kernel and file-system side: mounts, loop devices, mkfs, disk usage. Durable files
//! and lock files are berth_util::fs's.

pub mod loopdev;
pub mod mountinfo;

use crate::error::{VolumeError, VolumeResult};
use nix::mount::{MntFlags, MsFlags};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

pub use mountinfo::MountTable;

pub fn bind_mount(source: &Path, target: &Path) -> VolumeResult<()> {
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(VolumeError::io("bind-mounting", format!("{} on {}", source.display(), target.display())))
}

/// Shows `source` read-only at `target` through an overlay with no upper layer, whose
/// super block itself is read-only. A read-only bind mount would not do: runtimes remount
/// the bind mounts they make into containers, and runc 1.1 clears MS_RDONLY doing so.
/// `empty` is the second lower layer that overlayfs asks for when it has no upper one.
pub fn mount_read_only_view(source: &Path, empty: &Path, target: &Path) -> VolumeResult<()> {
    let options = format!("lowerdir={}:{}", escape_overlay_path(source), escape_overlay_path(empty));
    nix::mount::mount(Some("berth-ro"), target, Some("overlay"), MsFlags::MS_RDONLY, Some(options.as_str()))
        .map_err(VolumeError::io("mounting a read-only view", format!("of {} on {}", source.display(), target.display())))
}

/// overlayfs separates layers with ':' and options with ',', and escapes with a backslash.
fn escape_overlay_path(path: &Path) -> String {
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, '\\' | ':' | ',') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

pub fn mount_ext4(device: &Path, target: &Path, options: &str) -> VolumeResult<()> {
    let data = (!options.is_empty()).then_some(options);
    nix::mount::mount(Some(device), target, Some("ext4"), MsFlags::empty(), data)
        .map_err(VolumeError::io("mounting", format!("{} on {}", device.display(), target.display())))
}

/// Mounts the file system of type `fs_type` on `device` at `target`.
pub fn mount_fs(device: &Path, target: &Path, fs_type: &str, options: &str) -> VolumeResult<()> {
    let data = (!options.is_empty()).then_some(options);
    nix::mount::mount(Some(device), target, Some(fs_type), MsFlags::empty(), data)
        .map_err(VolumeError::io("mounting", format!("{fs_type} on {} at {}", device.display(), target.display())))
}

/// Unmounts `target` if something is mounted there; a busy mount is an error, never detached
/// lazily, so the caller knows whether the file system is really gone.
pub fn unmount(target: &Path) -> VolumeResult<()> {
    if !MountTable::read()?.is_mount_point(target) {
        return Ok(());
    }
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(err) => Err(VolumeError::io("unmounting", target.display())(err)),
    }
}

/// Formats `image` as ext4 with `mkfs.ext4` from e2fsprogs. -m 0: no blocks reserved for
/// root, the volume's size is what containers get; nodiscard: discarding a fresh sparse
/// file only costs time.
pub fn make_ext4(image: &Path) -> VolumeResult<()> {
    run_mkfs("mkfs.ext4", &["-q", "-F", "-m", "0", "-E", "nodiscard,lazy_itable_init=1"], image)
}

/// Runs a mkfs tool (`program` with `args`, then `target`), reporting its stderr on failure.
/// It dies with the thread that runs it: a server killed half-way through a create leaves
/// no mkfs holding a device that the restarted server must remove.
pub fn run_mkfs(program: &'static str, args: &[&str], target: &Path) -> VolumeResult<()> {
    let package = if program == "mkfs.xfs" { "xfsprogs" } else { "e2fsprogs" };
    let path = berth_util::tool::find(program).ok_or_else(|| VolumeError::Command {
        command: program,
        object: target.display().to_string(),
        detail: format!("{program} not found (install {package})"),
    })?;
    let mut command = Command::new(path);
    command.args(args).arg(target);
    berth_util::tool::die_with_parent(&mut command);
    let output = command.output().map_err(VolumeError::io("running mkfs on", target.display()))?;
    if !output.status.success() {
        return Err(VolumeError::Command {
            command: program,
            object: target.display().to_string(),
            detail: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(())
}

/// Deletes a directory tree that berth owns, refusing while anything is mounted at or
/// below it: deleting through a forgotten bind mount would destroy someone's data.
pub fn remove_owned_tree(dir: &Path) -> VolumeResult<()> {
    let mounts = MountTable::read()?;
    if let Some(mount) = mounts.under(dir).next() {
        return Err(VolumeError::Busy {
            object: dir.display().to_string(),
            detail: format!("{} is still mounted there; not deleting", mount.mount_point.display()),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(VolumeError::io("deleting", dir.display())(err)),
    }
}

/// Capacity, used and available bytes of the file system holding `path`.
pub fn fs_usage(path: &Path) -> VolumeResult<(u64, u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(VolumeError::io("measuring", path.display()))?;
    let block = stat.fragment_size();
    let capacity = stat.blocks() * block;
    let available = stat.blocks_available() * block;
    let used = (stat.blocks() - stat.blocks_free()) * block;
    Ok((capacity, used, available))
}

/// Bytes allocated on disk below `path` (like `du -s`), staying on its file system.
pub fn allocated_bytes(path: &Path) -> VolumeResult<u64> {
    let root = std::fs::symlink_metadata(path).map_err(VolumeError::io("measuring", path.display()))?;
    let mut total = root.blocks() * 512;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != root.dev() {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}
