//! The plugin's side of a network's server: ask it to reload its records, start it when it
//! is not running, stop it when the network's last record goes. Its control socket
//! (`DIR/control.sock`) takes one line (`reload`, `ping`, `stop`) and answers one line.

use crate::error::{DnsError, DnsResult};
use crate::store::control_path;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer its control socket, or to go once stopped.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `command`; the server's answer, or `None` when no server is listening, or the one
/// that was went away without answering (told to stop by a plugin killed since).
pub fn ask(dir: &Path, command: &str) -> DnsResult<Option<String>> {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionRefused, ConnectionReset, NotFound};
    let mut conn = match berth_util::unix::connect(&control_path(dir)) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), NotFound | ConnectionRefused) => return Ok(None),
        Err(e) => return Err(DnsError::server("connecting to its control socket", dir, e)),
    };
    let talk = |conn: &mut UnixStream| -> std::io::Result<String> {
        conn.set_read_timeout(Some(CONTROL_TIMEOUT))?;
        conn.set_write_timeout(Some(CONTROL_TIMEOUT))?;
        conn.write_all(format!("{command}\n").as_bytes())?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply.trim().to_string())
    };
    match talk(&mut conn) {
        Ok(reply) if reply.is_empty() => Ok(None),
        Ok(reply) => Ok(Some(reply)),
        Err(e) if matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted) => Ok(None),
        Err(e) => Err(DnsError::server(format!("asking it to {command}"), dir, e)),
    }
}

/// Makes the running server read its records again, or starts one that reads them.
pub fn reload_or_start(dir: &Path) -> DnsResult<()> {
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    loop {
        match ask(dir, "reload")? {
            Some(reply) if reply.starts_with("ok") => return Ok(()),
            Some(reply) => return Err(DnsError::Start { dir: dir.to_path_buf(), reason: reply }),
            None if servers_of(dir).is_empty() => return start(dir),
            None => settle(dir, deadline)?,
        }
    }
}

/// As [`reload_or_start`], leaving a stopped server stopped.
pub fn reload_if_running(dir: &Path) -> DnsResult<()> {
    match ask(dir, "reload")? {
        Some(reply) if !reply.starts_with("ok") => Err(DnsError::Start { dir: dir.to_path_buf(), reason: reply }),
        _ => Ok(()),
    }
}

/// Stops the server, if one runs, and waits until it is gone (its sockets closed).
pub fn stop(dir: &Path) -> DnsResult<()> {
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    let reply = loop {
        match ask(dir, "stop")? {
            Some(reply) => break reply,
            None if servers_of(dir).is_empty() => return Ok(()),
            None => settle(dir, deadline)?,
        }
    };
    let pid = reply
        .strip_prefix("stopping ")
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| DnsError::Start { dir: dir.to_path_buf(), reason: format!("it answered {reply:?} to stop") })?;
    while is_running(pid) {
        if Instant::now() >= deadline {
            let e = std::io::Error::from(std::io::ErrorKind::TimedOut);
            return Err(DnsError::server(format!("waiting for process {pid} to exit"), dir, e));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Waits a little for a server of `dir` that does not listen: one still starting (its ADD
/// was killed before it was ready) or still stopping (told to by a plugin killed before it
/// waited). Either holds the network's addresses, and will listen or be gone soon.
fn settle(dir: &Path, deadline: Instant) -> DnsResult<()> {
    if Instant::now() >= deadline {
        let e = std::io::Error::from(std::io::ErrorKind::TimedOut);
        return Err(DnsError::server("waiting for a server that neither listens nor exits", dir, e));
    }
    std::thread::sleep(Duration::from_millis(2));
    Ok(())
}

/// The processes serving `dir` (`berth-dns serve --dir DIR`), whether they listen or not.
fn servers_of(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let wanted: [&[u8]; 3] = [b"serve", b"--dir", dir.as_os_str().as_encoded_bytes()];
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).skip(1).take(3).collect();
            args == wanted && is_running(*pid)
        })
        .collect()
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name in parentheses, which may itself hold ')'.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Starts `berth-dns serve --dir DIR` (this same binary) detached from the plugin: its own
/// session, stdin and stderr on /dev/null, stdout a pipe it writes one line to (`ready`, or
/// why it cannot serve) and then closes, so the runtime reading the plugin's output never
/// waits for it. It runs in the namespaces the plugin runs in: the host's.
pub fn start(dir: &Path) -> DnsResult<()> {
    let exe = std::env::current_exe().map_err(|e| DnsError::server("finding the berth-dns binary", dir, e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg("--dir").arg(dir).current_dir("/").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and changes only the child's session.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| DnsError::server("starting", dir, e))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).take(4096).read_line(&mut line);
    }
    if line.trim() == "ready" {
        // Not waited for: it outlives the plugin, and is reparented when the plugin exits.
        return Ok(());
    }
    let _ = child.kill();
    let status = child.wait();
    let reason = match line.trim() {
        "" => format!("it exited without a word ({status:?})"),
        said => said.to_string(),
    };
    Err(DnsError::Start { dir: dir.to_path_buf(), reason })
}
