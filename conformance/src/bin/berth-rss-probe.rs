//! berth-rss-probe: stands in for a CNI plugin (it is linked under the plugin's name in a
//! directory the benchmark puts first in CNI_PATH), runs the real plugin from
//! `BERTH_RSS_PROBE_PATH` with the same arguments, stdin, stdout and environment, and appends
//! `<plugin> <CNI_COMMAND> <peak RSS in kB>` to the file `BERTH_RSS_PROBE_LOG`.
//!
//! Why a process of its own: a child's `ru_maxrss` also counts the memory of the process it
//! was forked from, up to its exec (the kernel folds the old address space's high-water mark
//! in at exec). Spawned by the benchmark, a plugin would be charged the benchmark's own memory;
//! spawned from this small process, it is charged at most this process's, which is smaller
//! than any plugin's. The peak includes what the plugin runs and waits for (an IPAM plugin,
//! `nft`, `iptables`), as the plugin's invocation does.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

fn main() {
    let mut args = std::env::args_os();
    let argv0 = PathBuf::from(args.next().unwrap_or_default());
    let name = argv0.file_name().unwrap_or_default().to_owned();
    let search = std::env::var_os("BERTH_RSS_PROBE_PATH").unwrap_or_else(|| fail("BERTH_RSS_PROBE_PATH is not set"));
    let Some(plugin) = std::env::split_paths(&search).map(|dir| dir.join(&name)).find(|p| p.is_file()) else {
        fail(&format!("{} is in none of BERTH_RSS_PROBE_PATH", Path::new(&name).display()))
    };
    // Reaped by wait4 in `wait_with_peak_rss`, which also reads the child's peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(&plugin).args(args).spawn().unwrap_or_else(|e| fail(&format!("run {}: {e}", plugin.display())));
    let (status, peak_kb) = wait_with_peak_rss(child.id());
    if let Some(log) = std::env::var_os("BERTH_RSS_PROBE_LOG") {
        let verb = std::env::var("CNI_COMMAND").unwrap_or_default();
        let line = format!("{} {verb} {peak_kb}\n", Path::new(&name).display());
        // One write with O_APPEND: lines of nested probes never interleave.
        let written = std::fs::OpenOptions::new().append(true).create(true).open(&log).and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            fail(&format!("write {}: {e}", Path::new(&log).display()));
        }
    }
    match (status.code(), status.signal()) {
        (Some(code), _) => exit(code),
        (None, Some(signal)) => exit(128 + signal),
        _ => exit(1),
    }
}

/// Waits for the child; its exit status and peak RSS (kB, its waited-for children included).
fn wait_with_peak_rss(pid: u32) -> (std::process::ExitStatus, i64) {
    let mut status = 0;
    // SAFETY: wait4 writes the status and the rusage it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    if waited < 0 {
        fail(&format!("wait for the plugin: {}", std::io::Error::last_os_error()));
    }
    (std::process::ExitStatus::from_raw(status), usage.ru_maxrss)
}

fn fail(msg: &str) -> ! {
    eprintln!("berth-rss-probe: {msg}");
    exit(111)
}
