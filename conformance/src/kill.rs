//! SIGKILL at any instant: a plugin's ADD or DEL killed at a random point of its run, then
//! the runtime's DEL (or a GC that keeps no attachment), then a search for anything left of
//! the attachments: links in the host and in the containers, firewall entries naming them,
//! files naming them (IPAM allocations and owner indexes, cached results, DNS records, DHCP
//! lease files), and whatever the test adds (processes, a DHCP server's leases, OVSDB rows).
//!
//! The kill instants are spread uniformly over a normal run of the same call, timed first
//! (and timed again by every round whose plugin finished before its kill), at fractions of
//! that duration drawn from a seed printed with the results: `BERTH_KILL_SEED=N` draws the
//! same fractions again. A round whose plugin had finished before the kill proves nothing:
//! such rounds are counted apart, and a case in which no round was interrupted fails.
//!
//! The runtime forgot everything of an ADD it killed (as after a restart): the DEL that
//! follows has no prevResult. A killed DEL is retried with the cached result, as a runtime
//! retries it.

use crate::plugins::berth_dir;
use crate::{eventually, Container, TestHost};
use berth_cni::exec::find_plugin;
use berth_cni::runtime::{plugin_config, Attachment, Runtime};
use berth_cni::skel::Command as CniCommand;
use berth_cni::spec::{ConfList, SUPPORTED};
use berth_cni::CniResult;
use berth_netlink::Netlink;
use berth_netns::NetNs;
use serde_json::Value;
use std::fmt;
use std::io::{Read, Seek, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that fixes the seed of every case of a run.
pub const SEED_VAR: &str = "BERTH_KILL_SEED";

/// Normal runs timed before the killed rounds, by default. The fastest sets the span: the
/// first run of a network also makes what its attachments share (a bridge, a server), and a
/// run slowed down by the machine's load would put the kills after the plugin's end.
const TIMING_RUNS: usize = 3;

/// The call that is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Add,
    Del,
}

/// What the runtime does after the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// DEL of the whole chain, retried as a runtime retries it.
    Del,
    /// GC with an empty `cni.dev/valid-attachments`.
    Gc,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Add => "ADD",
            Phase::Del => "DEL",
        })
    }
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cleanup::Del => "DEL",
            Cleanup::Gc => "GC",
        })
    }
}

/// One attachment of a case: made fresh for every round.
pub struct Round {
    pub attachment: Attachment,
    /// The container's own namespace; `None` when it is the host's (berth-host), or once a
    /// GC round removed it.
    pub container: Option<Container>,
}

type RoundMaker<'a> = Box<dyn Fn(&str) -> Round + 'a>;
type LeakCheck<'a> = Box<dyn Fn(&[Round]) -> Vec<String> + 'a>;

/// A plugin to kill, in a network (a chain), and how its attachments are made and checked.
pub struct KillCase<'a> {
    /// Names the case in reports ("berth-bridge nftables").
    pub label: String,
    pub host: &'a TestHost,
    pub cni_path: Vec<PathBuf>,
    /// The network, with cniVersion 1.1.0 (GC).
    pub list: ConfList,
    /// Which plugin of the chain is killed; those before it run to completion first, for its
    /// prevResult.
    pub target: usize,
    /// Normal runs timed before the killed rounds (at least one).
    pub timing_runs: usize,
    /// Makes the attachment of a round, given its container ID: by default a new container
    /// namespace with `eth0`.
    pub new_round: RoundMaker<'a>,
    /// Whether a GC round first removes the container's namespace (its container is gone,
    /// which is why its attachment is not valid any more): for plugins whose links live only
    /// in the container (macvlan, host-device).
    pub containers_gone_before_gc: bool,
    /// Paths under the host's scratch directory that are not searched for the containers'
    /// IDs (a DHCP server's own lease file and log).
    pub unscanned: Vec<PathBuf>,
    /// Host links the test itself makes and removes between rounds (a device to move), by
    /// name: not compared with the host's links before the rounds.
    pub test_links: Vec<String>,
    /// What else must be gone, checked after the generic checks (processes, servers' state).
    pub extra_check: LeakCheck<'a>,
}

/// What a case did, for RELIABILITY.md.
#[derive(Debug, Clone)]
pub struct KillReport {
    pub label: String,
    pub phase: Phase,
    pub cleanup: Cleanup,
    pub rounds: usize,
    /// Rounds whose plugin was killed before it finished.
    pub interrupted: usize,
    /// Rounds whose plugin finished before the kill instant (they prove nothing).
    pub finished_first: usize,
    /// A normal run of the killed call.
    pub span: Duration,
    pub seed: u64,
}

impl fmt::Display for KillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kill: {} | {} killed, then {} | {} rounds, {} interrupted, {} finished first | a normal {} takes {:.1} ms | {}={}",
            self.label,
            self.phase,
            self.cleanup,
            self.rounds,
            self.interrupted,
            self.finished_first,
            self.phase,
            self.span.as_secs_f64() * 1e3,
            SEED_VAR,
            self.seed
        )
    }
}

/// How a killed round went.
struct Shot {
    round: usize,
    at: Duration,
    interrupted: bool,
}

impl<'a> KillCase<'a> {
    /// The last plugin of `list` killed, with berth's plugins, in new container namespaces.
    pub fn new(label: impl Into<String>, host: &'a TestHost, list: ConfList) -> KillCase<'a> {
        let target = list.plugins.len().saturating_sub(1);
        KillCase {
            label: label.into(),
            host,
            cni_path: vec![berth_dir()],
            list,
            target,
            timing_runs: TIMING_RUNS,
            new_round: Box::new(move |id| container_round(host, id)),
            containers_gone_before_gc: false,
            unscanned: Vec::new(),
            test_links: Vec::new(),
            extra_check: Box::new(|_| Vec::new()),
        }
    }

    /// Times the call, runs `rounds` killed rounds each followed by `cleanup`, and panics
    /// (naming the seed) when anything is left or no round was interrupted.
    pub fn run(&self, phase: Phase, cleanup: Cleanup, rounds: usize) -> KillReport {
        let mut dice = KillDice::new(&format!("{} ({phase} killed, then {cleanup})", self.label));
        let runtime = self.host.runtime(self.cni_path.clone());
        let prefix_cache = tempfile::Builder::new().prefix("berth-kill-").tempdir().expect("temp dir");
        let calls = Calls { case: self, runtime: &runtime, prefix_cache: prefix_cache.path(), phase };
        let mut done: Vec<Round> = Vec::new();
        let mut failures = Vec::new();
        let mut span = Duration::MAX;
        for i in 0..self.timing_runs.max(1) {
            let mut round = (self.new_round)(&round_id(phase, cleanup, "t", i));
            span = span.min(calls.normal(&round));
            failures.extend(self.clean(&runtime, &mut round, cleanup).err().map(|e| format!("timing run {i}: {cleanup}: {e}")));
            done.push(round);
        }
        let timed = span;
        let baseline = link_names(self.host);
        let mut shots = Vec::new();
        for i in 0..rounds {
            let mut round = (self.new_round)(&round_id(phase, cleanup, "r", i));
            let at = dice.instant(span);
            let finished = calls.killed(&round, at);
            // A run that finished first says how long the call takes now: later kills land
            // within that (the machine's load changes while the rounds run).
            span = finished.map_or(span, |took| span.min(took));
            shots.push(Shot { round: i, at, interrupted: finished.is_none() });
            failures.extend(self.clean(&runtime, &mut round, cleanup).err().map(|e| format!("round {i}: {cleanup}: {e}")));
            done.push(round);
        }
        let interrupted = shots.iter().filter(|s| s.interrupted).count();
        let report = KillReport {
            label: self.label.clone(),
            phase,
            cleanup,
            rounds,
            interrupted,
            finished_first: rounds - interrupted,
            span: timed,
            seed: dice.seed,
        };
        eprintln!("{report}");
        failures.extend(self.leaks(&baseline, &done));
        assert!(failures.is_empty(), "{report}\nleft behind or failed:\n  {}\n{}", failures.join("\n  "), describe(&shots));
        assert!(interrupted > 0, "{report}: no round was interrupted, so this proves nothing");
        report
    }

    /// The runtime's DEL, or a GC keeping nothing (the container gone first, when the case
    /// says so).
    fn clean(&self, runtime: &Runtime, round: &mut Round, cleanup: Cleanup) -> CniResult<()> {
        match cleanup {
            Cleanup::Del => runtime.del(&self.list, &round.attachment),
            Cleanup::Gc => {
                if self.containers_gone_before_gc {
                    if let Some(c) = round.container.take() {
                        self.host.remove_container(&c);
                    }
                }
                runtime.gc(&self.list, &[])
            }
        }
    }

    /// Everything left of `rounds`: new links in the host, links in the containers, firewall
    /// entries and files naming them, and the case's own checks.
    fn leaks(&self, baseline: &[String], rounds: &[Round]) -> Vec<String> {
        let mut found = Vec::new();
        let mut new_links = Vec::new();
        // A namespace's links go in a kernel workqueue after the namespace itself.
        eventually(Duration::from_secs(5), || {
            let ours = |l: &String| self.test_links.iter().any(|t| l.split(' ').next() == Some(t.as_str()));
            new_links = link_names(self.host).into_iter().filter(|l| !baseline.contains(l) && !ours(l)).collect();
            new_links.is_empty()
        });
        found.extend(new_links.into_iter().map(|l| format!("link {l} in the host")));
        for round in rounds {
            let Some(c) = &round.container else { continue };
            for link in link_names_in(&c.path).into_iter().filter(|l| !l.starts_with("lo ")) {
                found.push(format!("link {link} in the container of {}", round.attachment.container_id));
            }
        }
        let ids: Vec<&str> = rounds.iter().map(|r| r.attachment.container_id.as_str()).collect();
        let firewall = firewall_text(self.host);
        found.extend(ids.iter().filter(|id| firewall.contains(*id)).map(|id| format!("firewall entries naming {id}")));
        found.extend(files_naming(self.host.dir.path(), &self.unscanned, &ids));
        found.extend((self.extra_check)(rounds));
        found
    }
}

/// Runs the case's calls: normally (timed) or killed.
struct Calls<'c, 'a> {
    case: &'c KillCase<'a>,
    runtime: &'c Runtime,
    /// Where the plugins before the target cache their results: not the runtime's cache,
    /// which must know nothing of a killed ADD.
    prefix_cache: &'c Path,
    phase: Phase,
}

impl Calls<'_, '_> {
    /// One normal run of the call, which must succeed; how long it took.
    fn normal(&self, round: &Round) -> Duration {
        let (mut cmd, stdin) = self.prepare(round);
        let mut out = tempfile::tempfile().expect("temp file");
        cmd.stdout(out.try_clone().expect("dup")).stderr(Stdio::null());
        let started = Instant::now();
        let mut child = spawn_with_stdin(&mut cmd, &stdin);
        let status = child.wait().expect("wait for the plugin");
        let took = started.elapsed();
        let mut said = String::new();
        let _ = out.rewind().and_then(|()| out.read_to_string(&mut said));
        assert!(status.success(), "{}: a normal {} failed ({status}): {said}", self.case.label, self.phase);
        took
    }

    /// One run killed `at` after it started: `None` when it was still running then, else
    /// how long it took.
    fn killed(&self, round: &Round, at: Duration) -> Option<Duration> {
        let (mut cmd, stdin) = self.prepare(round);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let started = Instant::now();
        let mut child = spawn_with_stdin(&mut cmd, &stdin);
        let finished = exit_before(&child, started + at).then(|| started.elapsed());
        let _ = child.kill();
        let status = child.wait().expect("wait for the plugin");
        if status.signal() == Some(libc::SIGKILL) {
            None
        } else {
            Some(finished.unwrap_or_else(|| started.elapsed()))
        }
    }

    /// The target plugin's process and stdin for this round: for a DEL, after a whole ADD
    /// through the runtime; for an ADD, after the plugins before it.
    fn prepare(&self, round: &Round) -> (Command, Vec<u8>) {
        let case = self.case;
        let att = &round.attachment;
        let version = case.list.effective_version(SUPPORTED);
        let prev = match self.phase {
            Phase::Add => self.prefix_result(att),
            Phase::Del => {
                self.runtime.add(&case.list, att).unwrap_or_else(|e| panic!("{}: ADD before the DEL: {e}", case.label));
                let cached = self.runtime.read_cache(&case.list.name, &att.container_id, &att.ifname).expect("cache");
                cached.map(|c| c.result)
            }
        };
        let plugin = &case.list.plugins[case.target];
        let conf = plugin_config(&case.list, &version, plugin, &att.capability_args, prev.as_ref()).expect("plugin config");
        let kind = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        let binary = find_plugin(kind, &case.cni_path).unwrap_or_else(|e| panic!("{}: {e}", case.label));
        let command = if self.phase == Phase::Add { CniCommand::Add } else { CniCommand::Del };
        let mut cmd = plugin_command(&binary, command, att, &case.cni_path);
        case.host.ns.prepare_command(&mut cmd).expect("host namespace");
        (cmd, serde_json::to_vec(&conf).expect("JSON"))
    }

    /// The result of the chain before the target, run to completion (`None` when the target
    /// comes first).
    fn prefix_result(&self, att: &Attachment) -> Option<Value> {
        let case = self.case;
        if case.target == 0 {
            return None;
        }
        let prefix = ConfList { plugins: case.list.plugins[..case.target].to_vec(), ..case.list.clone() };
        let runtime = Runtime {
            cni_path: case.cni_path.clone(),
            cache_dir: self.prefix_cache.to_path_buf(),
            host: Some(NetNs::open(case.host.path()).expect("host namespace")),
        };
        let result = runtime.add(&prefix, att).unwrap_or_else(|e| panic!("{}: the chain before the target: {e}", case.label));
        Some(result.to_value(&prefix.effective_version(SUPPORTED)).expect("result"))
    }
}

/// A plugin process as a runtime starts it, without our own CNI_* variables.
fn plugin_command(binary: &Path, command: CniCommand, att: &Attachment, cni_path: &[PathBuf]) -> Command {
    let mut cmd = Command::new(binary);
    for key in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"] {
        cmd.env_remove(key);
    }
    let args: Vec<String> = att.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    cmd.env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &att.container_id)
        .env("CNI_IFNAME", &att.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", std::env::join_paths(cni_path).expect("CNI_PATH"));
    if !att.netns.as_os_str().is_empty() {
        cmd.env("CNI_NETNS", &att.netns);
    }
    cmd.stdin(Stdio::piped());
    cmd
}

/// Waits until `child` exits or `deadline` passes, whichever comes first; whether it exited.
fn exit_before(child: &std::process::Child, deadline: Instant) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags; our child is not reaped before we wait.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
    if raw < 0 {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        return false;
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let timeout = libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long };
        let mut fds = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        match unsafe { libc::ppoll(&mut fds, 1, &timeout, std::ptr::null()) } {
            n if n > 0 => return true,
            // A signal interrupted the wait: wait for what is left.
            _ => continue,
        }
    }
}

fn spawn_with_stdin(cmd: &mut Command, stdin: &[u8]) -> std::process::Child {
    let mut child = cmd.spawn().expect("start the plugin");
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin killed before it read its stdin closes the pipe: that is fine.
        let _ = pipe.write_all(stdin);
    }
    child
}

/// A round in a new container namespace, on `eth0`.
pub fn container_round(host: &TestHost, container_id: &str) -> Round {
    let c = host.container();
    let attachment =
        Attachment { container_id: container_id.into(), ifname: "eth0".into(), netns: c.path.clone(), ..Default::default() };
    Round { attachment, container: Some(c) }
}

/// Container IDs that no other round's contains: `kill-add-del-r007`.
fn round_id(phase: Phase, cleanup: Cleanup, kind: &str, i: usize) -> String {
    format!("kill-{}-{}-{kind}{i:03}", phase.to_string().to_lowercase(), cleanup.to_string().to_lowercase())
}

fn describe(shots: &[Shot]) -> String {
    let lines: Vec<String> = shots
        .iter()
        .map(|s| {
            format!(
                "  round {:03}: killed at {:.2} ms, {}",
                s.round,
                s.at.as_secs_f64() * 1e3,
                if s.interrupted { "interrupted" } else { "had finished" }
            )
        })
        .collect();
    lines.join("\n")
}

/// `NAME KIND` of every link in the host.
fn link_names(host: &TestHost) -> Vec<String> {
    link_names_in(&host.path())
}

fn link_names_in(netns: &Path) -> Vec<String> {
    let Ok(ns) = NetNs::open(netns) else { return Vec::new() };
    let links = Netlink::open_in(&ns).and_then(|mut nl| nl.links()).expect("list links");
    links.into_iter().map(|l| format!("{} {}", l.name, l.kind.unwrap_or_default())).collect()
}

/// Every firewall rule and element in the host: nftables (iptables-nft's rules included)
/// and both iptables-legacy families.
pub fn firewall_text(host: &TestHost) -> String {
    let tools: [(&str, &[&str]); 5] = [
        ("nft", &["list", "ruleset"]),
        ("iptables-nft-save", &[]),
        ("ip6tables-nft-save", &[]),
        ("iptables-legacy-save", &[]),
        ("ip6tables-legacy-save", &[]),
    ];
    let mut text = String::new();
    for (tool, args) in tools {
        let path = berth_util::tool::find(tool).unwrap_or_else(|| panic!("{tool} is missing (conformance/TEST-PACKAGES)"));
        let mut cmd = Command::new(path);
        cmd.args(args).stdin(Stdio::null()).stderr(Stdio::null());
        host.ns.prepare_command(&mut cmd).expect("host namespace");
        let out = cmd.output().unwrap_or_else(|e| panic!("run {tool}: {e}"));
        text += &String::from_utf8_lossy(&out.stdout);
    }
    text
}

/// Files and directories under `root` (but not under `unscanned`) whose name or content
/// holds one of `ids`.
pub fn files_naming(root: &Path, unscanned: &[PathBuf], ids: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if unscanned.iter().any(|u| path.starts_with(u)) {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let content = if kind.is_file() { std::fs::read(&path).unwrap_or_default() } else { Vec::new() };
            let content = String::from_utf8_lossy(&content);
            for id in ids.iter().filter(|id| name.contains(**id) || content.contains(**id)) {
                found.push(format!("{} names {id}", path.display()));
            }
            if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

/// Whether any process but this one has `text` in its command line (a server started for
/// the test's scratch directory).
pub fn processes_mentioning(text: &str) -> Vec<i32> {
    crate::process::processes(|pid| crate::process::mentions(pid, text))
}

/// The run's seed: `BERTH_KILL_SEED`, else from the clock.
fn base_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| match std::env::var(SEED_VAR) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{SEED_VAR}={text} is not a number")),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    })
}

/// Kill instants and payloads for every test that SIGKILLs berth's processes (the plugins
/// here, `berth volume serve` and `berth quota set` in theirs). Each test or case draws its
/// own sequence from the run's seed, which it prints: `BERTH_KILL_SEED=N` replays the run,
/// in the kernel lab too (the lab hands the variable on).
pub struct KillDice {
    /// The run's seed, what `BERTH_KILL_SEED` must be to replay.
    pub seed: u64,
    rng: fastrand::Rng,
}

impl KillDice {
    /// The dice of `name` (a test, or a case of one), announcing the run's seed.
    pub fn new(name: &str) -> KillDice {
        let seed = base_seed();
        println!("{name}: kill seed {seed} (replay with {SEED_VAR}={seed})");
        KillDice::with_seed(seed, name)
    }

    fn with_seed(seed: u64, name: &str) -> KillDice {
        KillDice { seed, rng: fastrand::Rng::with_seed(seed ^ berth_util::hash::fnv1a64([name.as_bytes()])) }
    }

    /// An instant uniformly distributed in `[0, within)`.
    pub fn instant(&mut self, within: Duration) -> Duration {
        within.mul_f64(self.rng.f64())
    }

    /// `len` random bytes (data written before a kill, compared after it).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.rng.fill(&mut bytes);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_spread_over_the_interval() {
        let mut dice = KillDice::with_seed(42, "spread");
        let draws: Vec<f64> = (0..1000).map(|_| dice.instant(Duration::from_secs(1)).as_secs_f64()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        for quarter in 0..4 {
            let low = quarter as f64 / 4.0;
            let n = draws.iter().filter(|d| (low..low + 0.25).contains(*d)).count();
            assert!((200..300).contains(&n), "quarter {quarter}: {n} of 1000");
        }
    }

    #[test]
    fn round_ids_never_contain_one_another() {
        let ids: Vec<String> = (0..100).map(|i| round_id(Phase::Add, Cleanup::Del, "r", i)).collect();
        for a in &ids {
            assert_eq!(ids.iter().filter(|b| b.contains(a.as_str())).count(), 1, "{a}");
        }
        assert_eq!(ids[7], "kill-add-del-r007");
    }
}
