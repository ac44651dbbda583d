//! The container image every real-client lab imports: a root filesystem of busybox-static
//! (Debian's `busybox-static`) and links for the applets the tests use. There is no registry
//! here, so podman and Docker import it from a tarball.

use crate::process::{run_with_deadline, text};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// busybox 1.35's `wget -T` crashes: time-limit it with the `timeout` applet instead.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "mkdir", "sleep", "true", "ip", "ping", "wget", "httpd", "timeout", "nc", "ifconfig", "dd",
    "rm", "touch", "df", "udhcpc", "route", "nslookup",
];

/// Writes `DIR/rootfs/` and `DIR/rootfs.tar`; the tarball's path.
pub fn busybox_tarball(dir: &Path) -> Result<PathBuf, String> {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("mkdir {}: {e}", bin.display()))?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| format!("copy /bin/busybox: {e}"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(|e| format!("link {applet}: {e}"))?;
    }
    let tarball = dir.join("rootfs.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(dir.join("rootfs")).arg("-cf").arg(&tarball).arg(".");
    let tarred = run_with_deadline(tar, &dir.join("tar"), Duration::from_secs(60))?;
    if !tarred.status.success() {
        return Err(format!("tar: {}", text(&tarred.stderr)));
    }
    Ok(tarball)
}
