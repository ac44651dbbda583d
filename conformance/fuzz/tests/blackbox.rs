//! Black-box runs of every berth plugin binary (built by `cargo build --workspace --bins`)
//! with mutated configurations and a mutated CNI_* environment, inside a throwaway host
//! namespace. Needs root. Per case: the plugin is never killed by a signal and never hangs;
//! it exits 0 with JSON (a result for ADD), or non-zero with the spec's error JSON (a
//! well-known `code`, or 100+, and a `msg`); after a failed ADD, or a successful one and its
//! DEL, no link is left in the host or the container, no file in the state directory, no
//! berth-dns server running. The berth-dhcp keepers the cases start are stopped at the end.
//! `BERTH_BLACKBOX_CASES` cases per plugin (default 200); `BERTH_FUZZ_SEED` picks the cases.

use berth_conformance::dnsmasq::Dnsmasq;
use berth_conformance::plugins::berth_dir;
use berth_conformance::{Container, TestHost};
use berth_fuzz::examples::{configs, prev_result};
use berth_fuzz::mutate::{mutate, mutate_structure, object_keys, Rng};
use berth_netlink::{Netlink, VethPeer};
use berth_netns::NetNs;
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const DEFAULT_CASES: usize = 200;
/// Far above any plugin's own time-outs (berth-dhcp's is clamped to a second here).
const CASE_DEADLINE: Duration = Duration::from_secs(30);
/// The spec's well-known error codes (SPEC.md, "Error"); 100 and above are the plugin's.
const WELL_KNOWN_CODES: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 11, 50, 51];

/// One plugin's playground: a host namespace with the links its configs name, a container,
/// and a state directory every path in a mutated config is kept under.
struct Bench {
    host: TestHost,
    container: Container,
    plugin: &'static str,
    bin: PathBuf,
    state: PathBuf,
    /// CNI_NETNS as a runtime would pass it: the container's, or the host's for berth-host.
    netns: String,
    host_links: BTreeSet<String>,
    container_links: BTreeSet<String>,
    /// berth-dhcp's server, on the container's link.
    _dhcp_server: Option<Dnsmasq>,
}

impl Bench {
    fn new(plugin: &'static str) -> Bench {
        let host = TestHost::new();
        let container = host.container();
        let state = host.dir.path().join("state");
        std::fs::create_dir_all(state.join("cwd")).expect("state directory");
        std::fs::write(state.join("resolv.conf"), "nameserver 192.0.2.53\n").expect("resolv.conf");
        let mut nl = host.netlink();
        // Parents and devices the example configs name, and the gateway berth-dns listens on.
        for (name, peer) in [("fzpar0", "fzparp0"), ("fzdev0", "fzdevp0"), ("fzgw0", "fzgwp0")] {
            let peer = VethPeer { name: peer, netns: None, mac: None };
            let link = nl.create_veth(name, &peer, None, None).expect("veth in the host namespace");
            nl.set_up(link.index).expect("up");
        }
        let dev = nl.link_by_name("fzdev0").expect("list").expect("fzdev0");
        nl.set_mac(dev.index, "0a:00:00:00:00:02".parse().unwrap()).expect("the hwaddr the example names");
        let gw = nl.link_by_name("fzgw0").expect("list").expect("fzgw0");
        nl.add_address(gw.index, "10.22.0.254/16".parse().unwrap()).expect("gateway address");
        // What the chained and IPAM plugins find already there: the container's eth0, and
        // its host end (the example prevResult's veth1234; berth-dhcp's server behind fzc0).
        let mut dhcp_server = None;
        if matches!(plugin, "berth-bandwidth" | "berth-dhcp") {
            let ns = NetNs::open(&container.path).expect("container namespace");
            let host_end = if plugin == "berth-dhcp" { "fzc0" } else { "veth1234" };
            let peer = VethPeer { name: "eth0", netns: Some(&ns), mac: None };
            let link = nl.create_veth(host_end, &peer, None, None).expect("veth into the container");
            nl.set_up(link.index).expect("up");
            let mut inside = Netlink::open_in(&ns).expect("netlink in the container");
            let eth0 = inside.link_by_name("eth0").expect("list").expect("eth0");
            inside.set_up(eth0.index).expect("eth0 up");
            if plugin == "berth-dhcp" {
                nl.add_address(link.index, "10.23.0.1/16".parse().unwrap()).expect("server address");
                let dir = host.dir.path().join("dnsmasq");
                std::fs::create_dir_all(&dir).expect("dnsmasq directory");
                dhcp_server = Some(Dnsmasq::start(&host.path(), "fzc0", "10.23.5.10,10.23.5.200", &dir, &[]));
            }
        }
        let bin = berth_dir();
        let host_links = link_names(&mut nl);
        let ns = NetNs::open(&container.path).expect("container namespace");
        let container_links = link_names(&mut Netlink::open_in(&ns).expect("netlink in the container"));
        let netns = if plugin == "berth-host" { host.path() } else { container.path.clone() }.display().to_string();
        Bench { host, container, plugin, bin, state, netns, host_links, container_links, _dhcp_server: dhcp_server }
    }

    fn dir(&self) -> String {
        self.state.display().to_string()
    }

    /// A mutated configuration: a real one of this plugin, mutated, then every path brought
    /// back under the state directory and every plugin type to one of berth's, so a case
    /// touches nothing outside its namespace and directory.
    fn config(&self, rng: &mut Rng) -> Vec<u8> {
        let seeds: Vec<Vec<u8>> = configs(self.plugin, &self.dir())
            .into_iter()
            .map(|mut c| {
                if c.get("prevResult").is_some() {
                    c["prevResult"] = self.prev_result();
                }
                c.to_string().into_bytes()
            })
            .collect();
        let seed = rng.pick(&seeds).clone();
        let mutated = match rng.below(8) {
            0 | 1 => seed,
            2 => mutate(rng, &seed, &seeds, &[b"null", b"{}", b"\""], &[]),
            _ => mutate_structure(rng, &seed, &seeds, &object_keys(&seeds)),
        };
        match serde_json::from_slice::<Value>(&mutated) {
            Ok(mut value) => {
                self.confine(&mut value, true);
                value.to_string().into_bytes()
            }
            Err(_) => mutated,
        }
    }

    /// The example prevResult, its container interface in this bench's container.
    fn prev_result(&self) -> Value {
        let mut prev = prev_result();
        prev["interfaces"][2]["sandbox"] = Value::String(self.container.path.display().to_string());
        prev
    }

    /// Keeps a mutated configuration inside the bench. Every plugin type becomes one of
    /// berth's (or none that exists); every path key, wherever it is, points under the state
    /// directory; and the keys whose absence means a default path outside it (host-local's
    /// `dataDir`, berth-dhcp's `daemonSocketPath`, berth-dns's `dataDir`, berth-ovs's socket)
    /// are always there, so that even a mutant that drops them writes nowhere else.
    fn confine(&self, value: &mut Value, top: bool) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(|v| self.confine(v, false)),
            Value::Object(map) => {
                if let Some(kind) = map.get_mut("type") {
                    if !kind.as_str().is_some_and(|k| berth_fuzz::examples::PLUGINS.contains(&k) || k == "nosuch") {
                        *kind = Value::String("nosuch".into());
                    }
                }
                let mut keys: Vec<&str> = ["dataDir", "daemonSocketPath", "ovsdbSocket", "socket_file"]
                    .into_iter()
                    .filter(|k| map.contains_key(*k))
                    .collect();
                if top {
                    if self.plugin == "berth-dhcp" && !map.contains_key("ipam") {
                        map.insert("ipam".into(), serde_json::json!({}));
                    }
                    if let Some(Value::Object(ipam)) = map.get_mut("ipam") {
                        self.confine_ipam(ipam);
                    }
                    match self.plugin {
                        "berth-dns" => keys.push("dataDir"),
                        // `socket_file` is ovs-cni's name for it; both at once are refused.
                        "berth-ovs" if !map.contains_key("socket_file") => keys.push("ovsdbSocket"),
                        _ => {}
                    }
                }
                self.confine_keys(map, &keys);
                map.values_mut().for_each(|v| self.confine(v, false));
            }
            _ => {}
        }
    }

    /// The IPAM section: host-local's and berth-dhcp's paths always set (whichever IPAM the
    /// mutant names), and berth-dhcp's wait for a server short.
    fn confine_ipam(&self, ipam: &mut serde_json::Map<String, Value>) {
        self.confine_keys(ipam, &["dataDir", "daemonSocketPath"]);
        if ipam.get("timeout").and_then(Value::as_f64).is_none_or(|t| t > 1.0) {
            ipam.insert("timeout".into(), 0.5.into());
        }
    }

    fn confine_keys(&self, map: &mut serde_json::Map<String, Value>, keys: &[&str]) {
        for key in keys {
            if !map.get(*key).and_then(Value::as_str).is_some_and(|p| p.starts_with(&self.dir()) && !p.contains("..")) {
                map.insert(key.to_string(), Value::String(format!("{}/{key}", self.dir())));
            }
        }
    }

    /// A mutated environment: each variable kept, dropped, swapped for an edge value or
    /// byte-mutated (invalid UTF-8 included), and now and then a stray non-UTF-8 variable.
    fn env(&self, rng: &mut Rng) -> Vec<(OsString, OsString)> {
        let container = self.netns.clone();
        let bin = self.bin.display().to_string();
        let empty = format!("{}/cwd", self.dir());
        let long = "é".repeat(70);
        let table: [(&str, String, Vec<String>); 6] = [
            (
                "CNI_COMMAND",
                "ADD".into(),
                ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "add", ""].map(String::from).to_vec(),
            ),
            (
                "CNI_CONTAINERID",
                "c1".into(),
                vec![long.clone(), "a".repeat(300), "../x".into(), "".into(), "c 1".into(), "-".into()],
            ),
            (
                "CNI_NETNS",
                container.clone(),
                vec![
                    "/nonexistent/ns".into(),
                    "".into(),
                    "/".into(),
                    "/etc/hostname".into(),
                    "/proc/self/ns/net".into(),
                    "relative/ns".into(),
                    self.dir(),
                    format!("{container}/x"),
                ],
            ),
            (
                "CNI_IFNAME",
                "eth0".into(),
                ["", "lo", "eth0.1", "eth@0", "a/b", "é", "fzpar0", "abcdefghijklmnop", "net1"].map(String::from).to_vec(),
            ),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=web".into(),
                vec![
                    "IP=10.22.1.30".into(),
                    "=".into(),
                    ";;".into(),
                    "IP=300.1.1.1".into(),
                    "MAC=zz".into(),
                    format!("K8S_POD_NAME={long}"),
                    "IgnoreUnknown=1;IP=fd00:22::9".into(),
                ],
            ),
            ("CNI_PATH", bin.clone(), vec!["".into(), "/nonexistent".into(), empty, format!("{bin}:/nonexistent")]),
        ];
        // A third of the cases as a runtime sends them, a third with one variable changed, a
        // third with each changed one time in four.
        let mode = rng.below(3);
        let one = rng.below(table.len());
        let mut env = Vec::new();
        for (i, (key, normal, edges)) in table.into_iter().enumerate() {
            let change = match mode {
                0 => false,
                1 => i == one,
                _ => rng.chance(4),
            };
            let value: Vec<u8> = match (change, rng.below(4)) {
                (false, _) => normal.into_bytes(),
                (true, 0) => continue,
                (true, 1) if key != "CNI_NETNS" && key != "CNI_PATH" => {
                    let mut bytes = mutate(rng, normal.as_bytes(), &[], &[b"\xff", b"\xc3", b"=", b";"], &[]);
                    bytes.truncate(4096);
                    bytes
                }
                (true, _) => rng.pick(&edges).clone().into_bytes(),
            };
            env.push((OsString::from(key), OsString::from_vec(value.into_iter().filter(|&b| b != 0).collect())));
        }
        if rng.chance(12) {
            env.push((OsString::from("BERTH_FUZZ_STRAY"), OsString::from_vec(vec![0xff, 0xfe, b'x'])));
        }
        env
    }

    /// Runs the plugin inside the host namespace as a runtime would, with a deadline.
    fn run(&self, env: &[(OsString, OsString)], stdin: &[u8]) -> (ExitStatus, Vec<u8>, String) {
        let io = self.host.dir.path().join("io");
        std::fs::create_dir_all(&io).expect("io directory");
        std::fs::write(io.join("stdin"), stdin).expect("stdin file");
        let mut cmd = Command::new(self.bin.join(self.plugin));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // Inherited by whatever the plugin starts (a lease keeper, a DNS server): how the
            // bench finds them, wherever a mutant sent them.
            .env(BENCH_MARK, &self.state)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.state.join("cwd"))
            .stdin(std::fs::File::open(io.join("stdin")).expect("stdin"))
            .stdout(std::fs::File::create(io.join("stdout")).expect("stdout"))
            .stderr(std::fs::File::create(io.join("stderr")).expect("stderr"));
        self.host.ns.prepare_command(&mut cmd).expect("enter the host namespace");
        let mut child = cmd.spawn().expect("start the plugin");
        let deadline = Instant::now() + CASE_DEADLINE;
        let status = loop {
            match child.try_wait().expect("wait") {
                Some(status) => break status,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{} hung for {CASE_DEADLINE:?} with {}", self.plugin, describe(env, stdin));
                }
            }
        };
        let stderr = String::from_utf8_lossy(&std::fs::read(io.join("stderr")).unwrap_or_default()).into_owned();
        (status, std::fs::read(io.join("stdout")).unwrap_or_default(), stderr)
    }

    /// What a person would see wrong after a case, if anything.
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut host = self.host.netlink();
        let bridges: BTreeSet<String> = host
            .links_detailed()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.link.kind.as_deref() == Some("bridge"))
            .map(|d| d.link.name)
            .collect();
        // A bridge is the network's and stays, as with the reference plugin; a VXLAN port on
        // one stays while the network has containers, here none.
        for name in link_names(&mut host).difference(&self.host_links).filter(|n| !bridges.contains(*n)) {
            found.push(format!("link {name} in the host namespace"));
        }
        let ns = NetNs::open(&self.container.path).expect("container namespace");
        let mut inside = Netlink::open_in(&ns).expect("netlink in the container");
        for name in link_names(&mut inside).difference(&self.container_links) {
            found.push(format!("link {name} in the container"));
        }
        for file in files(&self.state) {
            // The running keeper's socket, pid and lock (its leases are files inside `.leases`).
            let keeper_file = file
                .file_name()
                .is_some_and(|n| ["dhcp.sock", "daemonSocketPath"].iter().any(|k| n.to_string_lossy().starts_with(k)));
            // berth-host-local's per-network notes, which hold no container's data.
            let bookkeeping = file
                .file_name()
                .is_some_and(|n| n == "lock" || n == ".owner-indexes" || n.to_string_lossy().starts_with("last_reserved_ip"));
            if !(keeper_file || bookkeeping || file.starts_with(self.state.join("cwd")) || file.ends_with("resolv.conf")) {
                found.push(format!("file {}", file.display()));
            }
        }
        // A keeper serving a socket under the state directory is the bench's; any other
        // process a case started is left behind (or escaped the directory).
        // DEL's detached grandchild (`return_before_kernel_frees_links`) outlives it by the
        // kernel's 15-18 ms: what is still there after a few seconds is left behind.
        let state = self.state.display().to_string();
        let strays = || -> Vec<i32> {
            processes_of(&self.state).into_iter().filter(|p| !(is_keeper(*p) && cmdline(*p).contains(&state))).collect()
        };
        berth_conformance::eventually(Duration::from_secs(3), || strays().is_empty());
        for pid in strays() {
            found.push(format!("process {pid}: {}", cmdline(pid)));
        }
        found
    }
}

impl Drop for Bench {
    /// The berth-dhcp keepers the cases started, and anything else left running.
    fn drop(&mut self) {
        for pid in processes_of(&self.state) {
            // SAFETY: kill has no memory effects; the PID is one of our children's.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let gone = berth_conformance::eventually(Duration::from_secs(5), || processes_of(&self.state).is_empty());
        if !gone && !std::thread::panicking() {
            panic!("processes left after the run: {:?}", processes_of(&self.state));
        }
    }
}

fn link_names(nl: &mut Netlink) -> BTreeSet<String> {
    nl.links().expect("list links").into_iter().map(|l| l.name).collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files(&path)),
            _ => out.push(path),
        }
    }
    out
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ")
}

/// The variable every plugin run gets, naming its bench's state directory.
const BENCH_MARK: &str = "BERTH_BLACKBOX_BENCH";

/// The processes a bench's cases started: they carry its mark, or name its directory.
fn processes_of(state: &Path) -> Vec<i32> {
    let dir = state.display().to_string();
    let mark = format!("{BENCH_MARK}={dir}");
    berth_conformance::process::processes(|pid| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        environ.split(|&b| b == 0).any(|var| var == mark.as_bytes()) || berth_conformance::process::mentions(pid, &dir)
    })
}

fn is_keeper(pid: i32) -> bool {
    cmdline(pid).contains("berth-dhcp")
}

fn describe(env: &[(OsString, OsString)], stdin: &[u8]) -> String {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{}={:?}", k.to_string_lossy(), v)).collect();
    format!("environment [{}] and stdin {:?}", env.join(" "), String::from_utf8_lossy(stdin))
}

/// The command a case ran, as the plugin read it.
fn command_of(env: &[(OsString, OsString)]) -> Option<String> {
    env.iter().find(|(k, _)| k == "CNI_COMMAND").and_then(|(_, v)| v.to_str()).map(str::to_string)
}

/// Checks what one run printed and how it exited.
fn check_outcome(plugin: &str, status: ExitStatus, stdout: &[u8], stderr: &str, what: &str) {
    assert_eq!(status.signal(), None, "{plugin} was killed by a signal ({status}; stderr {stderr:?}) with {what}");
    let printed = serde_json::from_slice::<Value>(stdout);
    if status.success() {
        assert!(stdout.is_empty() || printed.is_ok(), "{plugin} succeeded but printed no JSON with {what}");
        return;
    }
    let printed = printed.unwrap_or_else(|e| {
        panic!(
            "{plugin} failed ({status}) without error JSON ({e}: {:?}; stderr {stderr:?}) with {what}",
            String::from_utf8_lossy(stdout)
        )
    });
    let code = printed["code"].as_u64().unwrap_or_else(|| panic!("{plugin}'s error has no code: {printed} with {what}"));
    assert!(WELL_KNOWN_CODES.contains(&code) || code >= 100, "{plugin}'s error code {code} is reserved: {printed} with {what}");
    assert!(printed["msg"].as_str().is_some_and(|m| !m.is_empty()), "{plugin}'s error has no msg: {printed} with {what}");
}

fn blackbox(plugin: &'static str) {
    let cases = std::env::var("BERTH_BLACKBOX_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    let seed = std::env::var("BERTH_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x00be_27f0_22ed_u64);
    let bench = Bench::new(plugin);
    let mut rng = Rng::new(seed ^ berth_util::hash::fnv1a64([plugin.as_bytes()]));
    let started = Instant::now();
    let (mut added, mut failed) = (0, 0);
    for _ in 0..cases {
        let (env, stdin) = (bench.env(&mut rng), bench.config(&mut rng));
        let what = describe(&env, &stdin);
        let (status, stdout, stderr) = bench.run(&env, &stdin);
        check_outcome(plugin, status, &stdout, &stderr, &what);
        failed += usize::from(!status.success());
        if std::env::var_os("BERTH_BLACKBOX_VERBOSE").is_some() {
            println!("{plugin} {:?}: {}", command_of(&env), String::from_utf8_lossy(&stdout));
        }
        let command = command_of(&env);
        if status.success() && command.as_deref() == Some("ADD") {
            added += 1;
            let del: Vec<(OsString, OsString)> = env
                .iter()
                .map(|(k, v)| if k == "CNI_COMMAND" { (k.clone(), "DEL".into()) } else { (k.clone(), v.clone()) })
                .collect();
            let (status, stdout, stderr) = bench.run(&del, &stdin);
            check_outcome(plugin, status, &stdout, &stderr, &format!("the DEL after {what}"));
            assert!(
                status.success(),
                "{plugin}: the DEL of a successful ADD failed: {} with {what}",
                String::from_utf8_lossy(&stdout)
            );
        }
        let left = bench.leftovers();
        assert!(left.is_empty(), "{plugin}: after {command:?} left {left:?}, with {what}");
    }
    // Straight to stderr, past the test harness's capture: CI's log shows what ran.
    let _ = writeln!(
        std::io::stderr(),
        "blackbox {plugin}: {cases} cases in {:.1} s ({added} ADDs and their DELs, {failed} errors)",
        started.elapsed().as_secs_f64()
    );
}

macro_rules! blackbox_tests {
    ($($test:ident => $plugin:literal),* $(,)?) => {
        $(
            /// Needs root (a throwaway host namespace) and the plugin binaries.
            #[test]
            fn $test() {
                blackbox($plugin);
            }
        )*

        #[test]
        fn every_plugin_binary_has_a_run() {
            let run = [$($plugin),*];
            for plugin in berth_fuzz::examples::PLUGINS {
                assert!(run.contains(plugin), "{plugin} has no black-box run here");
            }
        }
    };
}

blackbox_tests!(
    bridge => "berth-bridge",
    macvlan => "berth-macvlan",
    ovs => "berth-ovs",
    host_device => "berth-host-device",
    host => "berth-host",
    none => "berth-none",
    host_local => "berth-host-local",
    static_ipam => "berth-static",
    dhcp => "berth-dhcp",
    bandwidth => "berth-bandwidth",
    dns => "berth-dns",
);
