//! Killing `berth-volume serve` at a uniformly random instant of a request, reproducibly,
//! and the rounds that do it for one driver: set a volume up, SIGKILL the server in the
//! middle of one operation, restart it, then check that the operation can be completed or
//! retried, that the volume can be removed leaving no mount, loop or device-mapper device,
//! and that data written before the kill is still there byte for byte.

use super::{loop_devices_under, mounts_under, Client, Response, ServeProcess, TempDir};
pub use berth_conformance::kill::KillDice;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Rounds per operation and driver, for a longer soak than CI's.
pub const ROUNDS_VAR: &str = "BERTH_KILL_ROUNDS";
/// Uninterrupted runs of each operation whose median bounds the kill instant.
const CALIBRATION_RUNS: usize = 5;

/// A seeded generator of kill instants, from the seed that `berth_conformance::kill` uses.
pub fn dice(test: &str) -> KillDice {
    KillDice::new(test)
}

/// Rounds per operation, and how many of them the kill really interrupted (no reply had
/// reached the client).
#[derive(Default)]
pub struct KillTally {
    rounds: BTreeMap<String, (u32, u32)>,
}

impl KillTally {
    pub fn record(&mut self, operation: &str, interrupted: bool) {
        let entry = self.rounds.entry(operation.to_string()).or_default();
        entry.0 += 1;
        entry.1 += u32::from(interrupted);
    }

    pub fn interrupted(&self) -> u32 {
        self.rounds.values().map(|(_, interrupted)| interrupted).sum()
    }

    pub fn summary(&self) -> String {
        let parts: Vec<String> = self.rounds.iter().map(|(op, (rounds, hit))| format!("{op} {hit}/{rounds}")).collect();
        format!("interrupted/rounds: {}", parts.join(", "))
    }
}

/// Writes one request on a fresh connection, SIGKILLs the server `after` it was sent, and
/// reads whatever reply reached the socket before the server died. Returns the reply, if
/// a whole one came (the kill then fell after the operation).
pub fn kill_during(server: &mut ServeProcess, path: &str, body: &str, after: Duration) -> Option<Response> {
    let stream = UnixStream::connect(&server.socket).expect("connect to the plugin socket");
    let request = format!("POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    (&stream).write_all(request.as_bytes()).expect("send the request");
    // The reply is read on another thread, so that waiting for the instant ends early when
    // the reply comes first; what the server wrote before it died stays readable.
    let (replied, reply) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = replied.send(Client::from_stream(stream).read_response());
    });
    let early = reply.recv_timeout(after);
    server.kill();
    match early {
        Ok(response) => response,
        Err(_) => reply.recv_timeout(Duration::from_secs(20)).expect("the reader ends once the server is dead"),
    }
}

/// A volume driver as the kill rounds exercise it.
pub struct DriverUnderTest {
    pub label: &'static str,
    /// The `Opts` of a Create for a volume of this driver.
    pub options: Value,
    /// Whether it has snapshots (thin's `from`).
    pub snapshots: bool,
    /// Rounds per operation.
    pub rounds_per_operation: usize,
    /// The driver's own checks once volumes are removed: given the state directory, the
    /// volumes just removed and how many volumes are left (the one kept mounted, or none
    /// at the end): device-mapper devices, thin IDs, quota projects.
    pub after_round: AfterRound,
}

/// See [`DriverUnderTest::after_round`].
pub type AfterRound = Box<dyn Fn(&Path, &[&str], usize)>;

impl DriverUnderTest {
    /// A driver whose volumes live in the state directory only (named, loop).
    pub fn self_contained(label: &'static str, options: Value, rounds_per_operation: usize) -> DriverUnderTest {
        DriverUnderTest { label, options, snapshots: false, rounds_per_operation, after_round: Box::new(|_, _, _| {}) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Mount,
    Unmount,
    Remove,
    Snapshot,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Mount => "mount",
            Operation::Unmount => "unmount",
            Operation::Remove => "remove",
            Operation::Snapshot => "snapshot",
        }
    }
}

/// One driver's kill rounds against a `berth-volume serve` process over `dir/state`.
pub struct KillRounds<'a> {
    pub dir: &'a TempDir,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub server: ServeProcess,
    pub dice: &'a mut KillDice,
    pub tally: KillTally,
    driver: DriverUnderTest,
    /// How long each operation took uninterrupted; the median bounds the kill instant.
    durations: BTreeMap<&'static str, Vec<Duration>>,
    restarts: u32,
    /// A volume with data that stays mounted through every round.
    keeper: Option<(String, Vec<u8>, PathBuf)>,
}

const PAYLOAD: &str = "payload.bin";

impl<'a> KillRounds<'a> {
    pub fn new(dir: &'a TempDir, dice: &'a mut KillDice, driver: DriverUnderTest) -> KillRounds<'a> {
        let (state, socket) = (dir.join(&format!("{}-state", driver.label)), dir.join(&format!("{}.sock", driver.label)));
        let server = ServeProcess::start(&socket, &state, &dir.join(&format!("{}-serve-0.log", driver.label)));
        KillRounds {
            dir,
            state,
            socket,
            server,
            dice,
            tally: KillTally::default(),
            driver,
            durations: BTreeMap::new(),
            restarts: 0,
            keeper: None,
        }
    }

    /// Calibrates, then runs the rounds, then removes everything and checks nothing is left.
    pub fn run(mut self) -> KillTally {
        self.calibrate();
        self.keep_a_volume_mounted();
        let operations = self.operations();
        let started = Instant::now();
        if let Ok(rounds) = std::env::var(ROUNDS_VAR) {
            self.driver.rounds_per_operation = rounds.parse().unwrap_or_else(|_| panic!("{ROUNDS_VAR}={rounds:?}"));
        }
        for round in 0..self.driver.rounds_per_operation * operations.len() {
            let operation = operations[round % operations.len()];
            self.round(round, operation);
        }
        self.finish();
        let medians: Vec<String> = operations
            .iter()
            .map(|op| format!("{} {:.1} ms", op.label(), self.median_duration(*op).as_secs_f64() * 1e3))
            .collect();
        println!(
            "{}: {} rounds in {:.1}s, {}; median uninterrupted: {}",
            self.driver.label,
            self.driver.rounds_per_operation * operations.len(),
            started.elapsed().as_secs_f64(),
            self.tally.summary(),
            medians.join(", ")
        );
        std::mem::take(&mut self.tally)
    }

    fn operations(&self) -> Vec<Operation> {
        let mut operations = vec![Operation::Create, Operation::Mount, Operation::Unmount, Operation::Remove];
        if self.driver.snapshots {
            operations.push(Operation::Snapshot);
        }
        operations
    }

    fn post(&self, path: &str, body: Value) -> Response {
        Client::connect(&self.socket).post(path, &body.to_string())
    }

    /// Runs `operation` to success, timing it: every uninterrupted run refines the median
    /// within which kill instants are drawn.
    fn expect_ok(&mut self, operation: Operation, path: &str, body: Value) -> Response {
        let started = Instant::now();
        let reply = self.post(path, body.clone());
        let took = started.elapsed();
        assert_eq!((reply.status, reply.err()), (200, ""), "{}: {path} {body}: {}", self.driver.label, self.server.log_text());
        self.durations.entry(operation.label()).or_default().push(took);
        reply
    }

    fn create_body(&self, volume: &str) -> Value {
        json!({ "Name": volume, "Opts": self.driver.options })
    }

    fn snapshot_body(&self, volume: &str, origin: &str) -> Value {
        let mut options = self.driver.options.clone();
        options["from"] = json!(origin);
        options.as_object_mut().expect("options are an object").remove("size");
        json!({ "Name": volume, "Opts": options })
    }

    fn mount_body(volume: &str, holder: &str) -> Value {
        json!({ "Name": volume, "ID": holder })
    }

    fn create(&mut self, volume: &str) {
        self.expect_ok(Operation::Create, "/VolumeDriver.Create", self.create_body(volume));
    }

    fn snapshot(&mut self, volume: &str, origin: &str) {
        self.expect_ok(Operation::Snapshot, "/VolumeDriver.Create", self.snapshot_body(volume, origin));
    }

    fn mount(&mut self, volume: &str, holder: &str) -> PathBuf {
        let reply = self.expect_ok(Operation::Mount, "/VolumeDriver.Mount", Self::mount_body(volume, holder));
        PathBuf::from(reply.body["Mountpoint"].as_str().expect("a mount point"))
    }

    fn unmount(&mut self, volume: &str, holder: &str) {
        self.expect_ok(Operation::Unmount, "/VolumeDriver.Unmount", Self::mount_body(volume, holder));
    }

    fn remove(&mut self, volume: &str) {
        self.expect_ok(Operation::Remove, "/VolumeDriver.Remove", json!({ "Name": volume }));
    }

    /// Runs each operation uninterrupted a few times, for the first medians.
    fn calibrate(&mut self) {
        for n in 0..CALIBRATION_RUNS {
            let (volume, snapshot) = (format!("calib{n}"), format!("calib{n}s"));
            self.create(&volume);
            self.mount(&volume, "c");
            if self.driver.snapshots {
                self.snapshot(&snapshot, &volume);
                self.remove(&snapshot);
            }
            self.unmount(&volume, "c");
            self.remove(&volume);
        }
    }

    fn median_duration(&self, operation: Operation) -> Duration {
        let mut taken = self.durations[operation.label()].clone();
        taken.sort();
        taken[taken.len() / 2]
    }

    fn keep_a_volume_mounted(&mut self) {
        self.create("keeper");
        let data = self.mount("keeper", "keeper-holder");
        let payload = self.dice.bytes(256 << 10);
        write_synced(&data.join(PAYLOAD), &payload);
        self.keeper = Some(("keeper".into(), payload, data));
    }

    fn restart(&mut self) {
        self.restarts += 1;
        let log = self.dir.join(&format!("{}-serve-{}.log", self.driver.label, self.restarts));
        self.server = ServeProcess::start(&self.socket, &self.state, &log);
        // The server reconciles before it listens: its log already says how it went.
        wait_for_log_line(&self.server, "listening on");
        let text = self.server.log_text();
        assert!(!text.contains("could not reconcile"), "{}: after a kill: {text}", self.driver.label);
    }

    /// Kills the server at a random instant of `path` and restarts it; the reply if the
    /// operation finished first.
    fn kill_at_random(&mut self, operation: Operation, path: &str, body: Value) -> Option<Response> {
        let within = self.median_duration(operation);
        let after = self.dice.instant(within);
        let reply = kill_during(&mut self.server, path, &body.to_string(), after);
        self.tally.record(operation.label(), reply.is_none());
        self.restart();
        reply
    }

    /// Sets a volume up to `operation`, kills the server during it, restarts, completes or
    /// retries it, checks the data, removes every volume of the round and checks that
    /// nothing is left of them.
    fn round(&mut self, round: usize, operation: Operation) {
        let (volume, snapshot) = (format!("r{round}"), format!("r{round}s"));
        let context = format!("{} round {round} ({}, seed {})", self.driver.label, operation.label(), self.dice.seed);
        let payload = self.dice.bytes(64 << 10);
        // Every other killed Create is never retried: the user gave up, and what the
        // killed request made must go with a restart all the same.
        let abandoned = (round / self.operations().len()) % 2 == 1;
        if operation != Operation::Create {
            self.create(&volume);
            let data = self.mount(&volume, "c1");
            write_synced(&data.join(PAYLOAD), &payload);
            if matches!(operation, Operation::Mount | Operation::Remove) {
                self.unmount(&volume, "c1");
            }
        }
        match operation {
            Operation::Create if abandoned => {
                self.kill_at_random(operation, "/VolumeDriver.Create", self.create_body(&volume));
            }
            Operation::Snapshot if abandoned => {
                self.kill_at_random(operation, "/VolumeDriver.Create", self.snapshot_body(&snapshot, &volume));
                let origin = self.state.join("volumes").join(&volume).join("_data");
                assert_writable(&origin, &context);
                self.unmount(&volume, "c1");
            }
            Operation::Create => {
                self.kill_at_random(operation, "/VolumeDriver.Create", self.create_body(&volume));
                self.create(&volume);
                let data = self.mount(&volume, "c1");
                write_synced(&data.join(PAYLOAD), &payload);
                self.unmount(&volume, "c1");
            }
            Operation::Mount => {
                self.kill_at_random(operation, "/VolumeDriver.Mount", Self::mount_body(&volume, "c2"));
                let data = self.mount(&volume, "c2");
                assert_same_bytes(&data.join(PAYLOAD), &payload, &context);
                self.unmount(&volume, "c2");
            }
            Operation::Unmount => {
                self.kill_at_random(operation, "/VolumeDriver.Unmount", Self::mount_body(&volume, "c1"));
                self.unmount(&volume, "c1");
                let data = self.mount(&volume, "c2");
                assert_same_bytes(&data.join(PAYLOAD), &payload, &context);
                self.unmount(&volume, "c2");
            }
            Operation::Remove => {
                self.kill_at_random(operation, "/VolumeDriver.Remove", json!({ "Name": volume }));
            }
            Operation::Snapshot => {
                // The origin stays mounted: a snapshot suspends it for a moment.
                self.kill_at_random(operation, "/VolumeDriver.Create", self.snapshot_body(&snapshot, &volume));
                self.snapshot(&snapshot, &volume);
                let copy = self.mount(&snapshot, "c2");
                assert_same_bytes(&copy.join(PAYLOAD), &payload, &context);
                let origin = self.state.join("volumes").join(&volume).join("_data");
                assert_writable(&origin, &context);
                self.unmount(&snapshot, "c2");
                self.unmount(&volume, "c1");
            }
        }
        for name in [&snapshot, &volume] {
            self.remove_if_present(name, &context);
        }
        self.check_nothing_left_of(&[&volume, &snapshot], 1, &context);
        self.check_keeper(&context);
    }

    /// Removes `volume` if it exists; then it must be gone.
    fn remove_if_present(&mut self, volume: &str, context: &str) {
        let got = self.post("/VolumeDriver.Get", json!({ "Name": volume }));
        if got.status == 200 {
            self.remove(volume);
        } else {
            assert!(got.err().contains("no such volume"), "{context}: get {volume}: {got:?}");
        }
        let gone = self.post("/VolumeDriver.Get", json!({ "Name": volume }));
        assert!(gone.err().contains("no such volume"), "{context}: {volume} after remove: {gone:?}");
    }

    fn check_nothing_left_of(&self, volumes: &[&str], live: usize, context: &str) {
        let keeper = self.keeper.as_ref().map(|(_, _, data)| data.clone());
        let mounts: Vec<PathBuf> = mounts_under(&self.state).into_iter().filter(|m| Some(m) != keeper.as_ref()).collect();
        assert!(mounts.is_empty(), "{context}: mounts left: {mounts:?}");
        for volume in volumes {
            let dir = self.state.join("volumes").join(volume);
            assert!(losetup_lines_naming(&dir).is_empty(), "{context}: loop devices left: {:?}", losetup_lines_naming(&dir));
            assert!(!dir.exists(), "{context}: {} left", dir.display());
        }
        let staged: Vec<String> = files_under(&self.state).into_iter().filter(|f| f.contains(".tmp.")).collect();
        assert!(staged.is_empty(), "{context}: staged files of killed writers left: {staged:?}");
        (self.driver.after_round)(&self.state, volumes, live);
    }

    fn check_keeper(&self, context: &str) {
        let Some((_, payload, data)) = &self.keeper else { return };
        assert_same_bytes(&data.join(PAYLOAD), payload, &format!("{context}: the volume mounted throughout"));
        let got = self.post("/VolumeDriver.Get", json!({ "Name": "keeper" }));
        assert_eq!(got.body["Volume"]["Status"]["MountIDs"], json!(["keeper-holder"]), "{context}: {got:?}");
    }

    /// Unmounts and removes the keeper, stops the server cleanly, and checks that the state
    /// directory holds nothing but its empty folders and the pools' own files.
    fn finish(&mut self) {
        self.unmount("keeper", "keeper-holder");
        self.remove("keeper");
        self.keeper = None;
        self.check_nothing_left_of(&["keeper"], 0, &format!("{} at the end", self.driver.label));
        assert!(self.server.terminate(), "{}: a clean stop: {}", self.driver.label, self.server.log_text());
        let left = files_under(&self.state);
        let unexpected: Vec<&String> = left.iter().filter(|f| !is_pool_file(f)).collect();
        assert!(unexpected.is_empty(), "{}: files left in the state directory: {unexpected:?}", self.driver.label);
        assert!(loop_devices_under(&self.state.join("volumes")).is_empty());
    }
}

/// The files of a thin pool, which outlive its volumes.
fn is_pool_file(relative: &str) -> bool {
    let parts: Vec<&str> = relative.split('/').collect();
    match parts.as_slice() {
        ["thin", lock] => lock.ends_with(".lock"),
        ["thin", _, file] => matches!(*file, "pool.json" | "data.img" | "metadata.img"),
        _ => false,
    }
}

/// Every file (not directory) under `dir`, relative to it.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                files.push(relative.display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// `losetup -a` lines that name a file under `dir`: what a user would look at.
pub fn losetup_lines_naming(dir: &Path) -> Vec<String> {
    let output = std::process::Command::new("losetup").arg("-a").output().expect("run losetup -a");
    let wanted = dir.display().to_string();
    String::from_utf8_lossy(&output.stdout).lines().filter(|line| line.contains(&wanted)).map(str::to_string).collect()
}

pub fn write_synced(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(bytes).and_then(|()| file.sync_all()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn assert_same_bytes(path: &Path, expected: &[u8], context: &str) {
    let mut found = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut found))
        .unwrap_or_else(|e| panic!("{context}: read {}: {e}", path.display()));
    assert!(
        found == expected,
        "{context}: {} differs from what was written ({} bytes, {} expected)",
        path.display(),
        found.len(),
        expected.len()
    );
}

/// Writes and syncs a file in `dir` from another thread, failing (rather than hanging) if
/// the file system does not take it within 20 s: a device left suspended blocks writers.
pub fn assert_writable(dir: &Path, context: &str) {
    let path = dir.join("after-kill");
    let (done, finished) = std::sync::mpsc::channel();
    let writer = path.clone();
    std::thread::spawn(move || {
        write_synced(&writer, b"still writable");
        let _ = done.send(());
    });
    assert!(finished.recv_timeout(Duration::from_secs(20)).is_ok(), "{context}: a write into {} hangs", dir.display());
    let _ = std::fs::remove_file(path);
}

fn wait_for_log_line(server: &ServeProcess, line: &str) {
    super::wait_until("the server's log line", Duration::from_secs(20), || server.log_text().contains(line));
}
