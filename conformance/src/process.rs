//! Processes and cgroups of the real clients the tests drive (podman, dockerd): commands run
//! with a deadline, and what a lab leaves running, found and removed.

use crate::eventually;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with stdout and stderr in files next to `stem`, killing it after `timeout`.
pub fn run_with_deadline(mut cmd: Command, stem: &Path, timeout: Duration) -> Result<Output, String> {
    let out_path = stem.with_extension("out");
    let err_path = stem.with_extension("err");
    let stdout = File::create(&out_path).map_err(|e| format!("create {}: {e}", out_path.display()))?;
    let stderr = File::create(&err_path).map_err(|e| format!("create {}: {e}", err_path.display()))?;
    let mut child: Child =
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr).spawn().map_err(|e| format!("cannot start: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let read = |path: &Path| std::fs::read(path).unwrap_or_default();
    let output = Output { status, stdout: read(&out_path), stderr: read(&err_path) };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(output)
}

/// One command of a real client's lab (`docker ARGS`, `podman ARGS`): run with a deadline,
/// its output kept under `out_dir` meanwhile; an error says which command did not finish.
pub fn run_client(tool: &str, cmd: Command, args: &[&str], out_dir: &Path, deadline: Duration) -> Result<Output, String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    run_with_deadline(cmd, &out_dir.join(n.to_string()), deadline).map_err(|e| format!("{tool} {}: {e}", args.join(" ")))
}

/// The stdout of a client command that must have succeeded.
pub fn succeeded(tool: &str, args: &[&str], out: &Output) -> String {
    assert!(out.status.success(), "{tool} {} failed ({}): {}", args.join(" "), out.status, text(&out.stderr));
    text(&out.stdout)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every process but this one that `keep` selects.
pub fn processes(keep: impl Fn(i32) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32 && keep(pid))
        .collect()
}

/// Whether `pid` is in the cgroup `parent` (`/NAME`) or below it, in any hierarchy.
pub fn in_cgroup(pid: i32, parent: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|groups| {
        groups.lines().any(|l| {
            let path = l.splitn(3, ':').nth(2).unwrap_or_default();
            path == parent || path.starts_with(&format!("{parent}/"))
        })
    })
}

/// Whether `pid`'s command line mentions `text` (a lab's folder, say).
pub fn mentions(pid: i32, text: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(text))
}

/// Removes the cgroup `parent` (`/NAME`) and everything below it from every hierarchy, once
/// no process is left in them.
pub fn remove_cgroups(parent: &str) {
    let relative = parent.trim_start_matches('/');
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
    }
    for root in roots {
        let dir = root.join(relative);
        if dir.is_dir() {
            remove_cgroup_tree(&dir);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    // A cgroup can be removed once its last process has been reaped, which may lag a little.
    if !eventually(Duration::from_secs(5), || std::fs::remove_dir(dir).is_ok() || !dir.exists()) {
        eprintln!("cleanup: cannot remove cgroup {}", dir.display());
    }
}
