//! berth-bench-dhcp: ADD and DEL latency of the berth-dhcp IPAM plugin and its keeper against
//! the reference `dhcp` plugin and its daemon (v1.9.1, `/work/shared/ref-plugins/dhcp`, or
//! `REF_DHCP`), on the same dnsmasq in the same run, and the memory of the keeper and of the
//! reference daemon holding N leases.
//!
//!   berth-bench-dhcp [N]          (default: 50)
//!
//! One throwaway host namespace holds a bridge with dnsmasq on it; each container is a
//! namespace whose `eth0` is a veth on that bridge (made here, not by a plugin), so what is
//! timed is the IPAM plugin alone, exec'd as a main plugin would exec it. Each side first
//! does one untimed ADD and DEL (which starts berth's keeper; the reference daemon is started
//! beforehand, as its users must), then N ADDs, the keeper's RSS with N leases held, N DELs.
//! Needs root and dnsmasq (`dnsmasq-base`).

use berth_conformance::bench::percentile;
use berth_conformance::dnsmasq::{Dnsmasq, KeeperGuard};
use berth_conformance::plugins::berth_dir;
use berth_conformance::{Container, TestHost};
use berth_cni::skel::Command;
use berth_netlink::VethPeer;
use berth_netns::NetNs;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Instant;

const BRIDGE: &str = "bdbr0";

fn rss_kb(pid: i32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A container whose eth0 is a port of the bridge.
fn attached(host: &TestHost, index: usize) -> Container {
    let c = host.container();
    let ns = NetNs::open(&c.path).expect("container namespace");
    let bridge = host.netlink().link_by_name(BRIDGE).expect("list").expect("bridge");
    let mut nl = host.netlink();
    let veth = nl.create_veth(&format!("bdv{index}"), &VethPeer { name: "eth0", netns: Some(&ns), mac: None }, None, Some(bridge.index)).expect("veth");
    nl.set_up(veth.index).expect("veth up");
    c
}

struct Side {
    label: &'static str,
    cni_path: Vec<PathBuf>,
    plugin: &'static str,
    conf: Value,
}

/// N timed ADDs, the daemon's RSS, N timed DELs.
fn measure(host: &TestHost, side: &Side, containers: &[Container], daemon_pid: impl Fn() -> i32) -> Value {
    let call = |command: Command, c: &Container| {
        let start = Instant::now();
        host.call(&side.cni_path, side.plugin, command, &c.name, Some(&c.path), "eth0", &side.conf)
            .unwrap_or_else(|e| panic!("{} {}: {e}", side.label, command.as_str()));
        start.elapsed().as_secs_f64() * 1000.0
    };
    let (warm, rest) = containers.split_first().expect("at least one container");
    let first_add_ms = call(Command::Add, warm);
    call(Command::Del, warm);
    let add_ms: Vec<f64> = rest.iter().map(|c| call(Command::Add, c)).collect();
    let rss = rss_kb(daemon_pid());
    let del_ms: Vec<f64> = rest.iter().map(|c| call(Command::Del, c)).collect();
    json!({
        "first_add_ms": first_add_ms,
        "add_median_ms": percentile(&add_ms, 0.5), "add_p90_ms": percentile(&add_ms, 0.9),
        "del_median_ms": percentile(&del_ms, 0.5), "del_p90_ms": percentile(&del_ms, 0.9),
        "daemon_rss_kb": rss,
    })
}

fn start_reference_daemon(host: &TestHost, exe: &Path, socket: &Path) -> Child {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["daemon", "-socketpath"]).arg(socket).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    host.ns.prepare_command(&mut cmd).expect("host namespace handle");
    let child = cmd.spawn().expect("start the reference dhcp daemon");
    assert!(berth_conformance::eventually(std::time::Duration::from_secs(10), || socket.exists()), "reference daemon did not listen");
    child
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|a| a.parse().expect("N is a number")).unwrap_or(50);
    let reference = PathBuf::from(std::env::var("REF_DHCP").unwrap_or_else(|_| berth_conformance::plugins::reference_v191_dir().join("dhcp").into_os_string().into_string().unwrap_or_default()));
    assert!(reference.is_file(), "{} is missing (set REF_DHCP)", reference.display());
    let host = TestHost::new();
    let mut nl = host.netlink();
    let bridge = nl.ensure_bridge(BRIDGE, None).expect("bridge");
    nl.add_address(bridge.index, "10.63.0.1/16".parse().unwrap()).expect("server address");
    nl.set_up(bridge.index).expect("bridge up");
    let dir = host.dir.path().to_path_buf();
    let keeper = KeeperGuard::new(dir.join("berth-dhcp.sock"));
    let _server = Dnsmasq::start(&host.path(), BRIDGE, "10.63.1.0,10.63.9.255", &dir, &["--dhcp-option=option:router,10.63.0.1"]);

    let berth = Side {
        label: "berth",
        cni_path: vec![berth_dir()],
        plugin: "berth-dhcp",
        conf: json!({"cniVersion": "1.0.0", "name": "bench", "type": "berth-dhcp",
                     "ipam": {"type": "berth-dhcp", "daemonSocketPath": keeper.socket}}),
    };
    let ref_socket = dir.join("ref-dhcp.sock");
    let mut ref_daemon = start_reference_daemon(&host, &reference, &ref_socket);
    let reference_side = Side {
        label: "reference",
        cni_path: vec![reference.parent().expect("plugin directory").to_path_buf()],
        plugin: "dhcp",
        conf: json!({"cniVersion": "1.0.0", "name": "bench", "type": "dhcp",
                     "ipam": {"type": "dhcp", "daemonSocketPath": ref_socket}}),
    };
    let containers: Vec<Container> = (0..2 * (n + 1)).map(|i| attached(&host, i)).collect();
    let (ours, theirs) = containers.split_at(n + 1);
    let b = measure(&host, &berth, ours, || keeper.pid().expect("keeper running"));
    let ref_pid = ref_daemon.id() as i32;
    let r = measure(&host, &reference_side, theirs, || ref_pid);
    let _ = ref_daemon.kill();
    let _ = ref_daemon.wait();

    println!("N = {n} leases, one dnsmasq, same run");
    println!("{:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}", "", "1st ADD", "ADD med", "ADD p90", "DEL med", "DEL p90", "daemon RSS");
    for (label, f) in [("berth", &b), ("reference", &r)] {
        let ms = |k: &str| f[k].as_f64().unwrap_or(0.0);
        println!(
            "{label:<10} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>10}kB",
            ms("first_add_ms"), ms("add_median_ms"), ms("add_p90_ms"), ms("del_median_ms"), ms("del_p90_ms"), f["daemon_rss_kb"]
        );
    }
    let ratio = |k: &str| r[k].as_f64().unwrap_or(0.0) / b[k].as_f64().unwrap_or(1.0);
    println!("reference/berth: ADD {:.1}x, DEL {:.1}x, daemon RSS {:.1}x", ratio("add_median_ms"), ratio("del_median_ms"), ratio("daemon_rss_kb"));
}
