//! Fixtures shared by the integration tests: throwaway directories that clean up the kernel
//! objects made inside them, servers stopped on drop, and a raw HTTP client.
#![allow(dead_code)]

pub mod dm;
pub mod kill;

use berth_volumes::plugin::{Server, ServerOptions, StopHandle};
use berth_volumes::sys::MountTable;
use berth_volumes::VolumeStore;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Privileged tests need root: they fail loudly rather than skip without a word.
pub fn require_root(test: &str) {
    assert!(nix::unistd::geteuid().is_root(), "{test} is a privileged test (loop devices, mounts, podman): run it as root");
}

/// Outside the kernel lab, runs the test `name` inside it and shows what it printed there.
pub fn lab_report(name: &str) {
    let out = berth_conformance::lab::assert_test_passes_inside(name);
    show_lab_run(name, &out);
}

/// As [`lab_report`], handing on the environment variables `vars` that are set here.
pub fn lab_report_with(name: &str, vars: &[&str]) {
    use berth_conformance::lab::Lab;
    let exe = std::env::current_exe().expect("the test binary").display().to_string();
    let argv = [exe.as_str(), "--exact", name, "--nocapture", "--test-threads=1"];
    let lab = Lab::ensure().unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut command = lab.command(&argv);
    for var in vars {
        if let Ok(value) = std::env::var(var) {
            command = command.env(var, &value);
        }
    }
    let out = command.run().unwrap_or_else(|e| panic!("{name} in the kernel lab: {e}"));
    assert!(out.success() && out.stdout.contains("1 passed"), "{name} failed in the kernel lab:\n{out}");
    show_lab_run(name, &out);
}

fn show_lab_run(name: &str, out: &berth_conformance::lab::LabOutput) {
    eprintln!(
        "kernel lab: {name} started {:.1}s after boot, whole run {:.1}s; inside:\n{}",
        out.booted_after.unwrap_or_default().as_secs_f64(),
        out.elapsed.as_secs_f64(),
        out.stdout.trim_end()
    );
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A directory deleted on drop, after unmounting whatever is mounted below it and
/// detaching loop devices whose backing file is below it, so that a failing test still
/// leaves nothing behind.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let unique = format!("berth-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, relative: &str) -> PathBuf {
        self.path.join(relative)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        cleanup_kernel_objects_under(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn cleanup_kernel_objects_under(dir: &Path) {
    if let Ok(table) = MountTable::read() {
        let mut mounted: Vec<PathBuf> = table.under(dir).map(|m| m.mount_point.clone()).collect();
        // Deepest first, so that nested mounts come off before their parents.
        mounted.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for mount_point in mounted {
            let _ = nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    for device in loop_devices_under(dir) {
        let _ = Command::new("losetup").arg("-d").arg(&device).status();
    }
}

/// Attached loop devices whose backing file lies below `dir`, as sysfs tells.
pub fn loop_devices_under(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim().trim_end_matches(" (deleted)");
            Path::new(backing).starts_with(dir).then(|| format!("/dev/{name}"))
        })
        .collect()
}

pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    MountTable::read().expect("read mountinfo").under(dir).map(|m| m.mount_point.clone()).collect()
}

/// The mount options the kernel shows for `mount_point` (from /proc/self/mounts).
pub fn mount_options(mount_point: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let wanted = mount_point.to_str()?;
    mounts.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(1) == Some(&wanted)).then(|| fields.get(3).map(|s| s.to_string())).flatten()
    })
}

/// A plugin server running in this process on a socket in a temp dir; stopped on drop.
pub struct TestServer {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    stop: StopHandle,
    thread: Option<JoinHandle<()>>,
    finished: std::sync::mpsc::Receiver<()>,
}

impl TestServer {
    pub fn start(tag: &str) -> TestServer {
        TestServer::start_with(tag, |_| {})
    }

    pub fn start_with(tag: &str, adjust: impl FnOnce(&mut ServerOptions)) -> TestServer {
        let dir = TempDir::new(tag);
        let socket = dir.join("plugin.sock");
        let state = dir.join("state");
        let mut options = ServerOptions::new(&socket);
        options.request_log = berth_volumes::plugin::RequestLog::Off;
        adjust(&mut options);
        let store = VolumeStore::open(&state).expect("open store");
        let server = Server::bind(store, options).expect("bind server");
        let stop = server.stop_handle();
        let (done, finished) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            server.run();
            let _ = done.send(());
        });
        TestServer { dir, socket, state, stop, thread: Some(thread), finished }
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.socket)
    }

    /// Stops the server and waits (with a deadline, so a broken stop fails rather than
    /// hangs) for `run` to return.
    pub fn stop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let stopped = self.finished.recv_timeout(Duration::from_secs(20));
            assert!(stopped.is_ok() || thread.is_finished(), "server did not stop within 20 s");
            thread.join().expect("server thread panicked");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP/1.1 client over a unix socket that writes raw bytes and parses replies.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn err(&self) -> &str {
        self.body["Err"].as_str().unwrap_or_default()
    }
}

impl Client {
    pub fn connect(socket: &Path) -> Client {
        Client::from_stream(UnixStream::connect(socket).expect("connect to plugin socket"))
    }

    pub fn from_stream(stream: UnixStream) -> Client {
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("set timeout");
        Client { reader: BufReader::new(stream.try_clone().expect("clone")), writer: stream }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send request");
    }

    pub fn post(&mut self, path: &str, body: &str) -> Response {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1.1+json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send_raw(request.as_bytes());
        self.read_response().expect("a response")
    }

    /// Reads one response; `None` when the server closed the connection first.
    pub fn read_response(&mut self) -> Option<Response> {
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line).ok()? == 0 {
            return None;
        }
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let length: usize =
            headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).ok()?;
        let body = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).ok()? };
        Some(Response { status, headers, body })
    }

    /// True once the server has closed the connection (a read returns end of file).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// A `berth-volume serve` process, SIGTERMed (then killed) on drop.
pub struct ServeProcess {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl ServeProcess {
    pub fn start(socket: &Path, state: &Path, log: &Path) -> ServeProcess {
        ServeProcess::start_with(socket, state, log, &[])
    }

    /// As [`ServeProcess::start`], with more options for `serve`.
    pub fn start_with(socket: &Path, state: &Path, log: &Path, options: &[&str]) -> ServeProcess {
        let log_file = std::fs::File::create(log).expect("create server log");
        let child = Command::new(env!("CARGO_BIN_EXE_berth-volume"))
            .args(["serve", "--socket"])
            .arg(socket)
            .arg("--state-dir")
            .arg(state)
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start berth-volume serve");
        let mut process = ServeProcess { child, socket: socket.to_path_buf(), log: log.to_path_buf() };
        let started = Instant::now();
        while UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("berth-volume serve exited with {status}: {}", process.log_text());
            }
            assert!(started.elapsed() < Duration::from_secs(20), "server did not listen: {}", process.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
        process
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as the OOM killer or a power cut would stop it, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status's success.
    pub fn terminate(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}
