//! `berth pipework BRIDGE GUEST IP/PREFIX@GW` against pipework's own steps for the same
//! wiring, as a shell sequence of `ip` commands (what pipework runs for a Linux bridge: veth
//! pair with the bridge's MTU, host end on the bridge and up, guest end into the namespace,
//! renamed, address, up, default route), interleaved in the same run, each wiring into a new
//! namespace, inside a throwaway host namespace. Debian ships no pipework script; its
//! container lookup (`docker inspect`) is left out of both. Root; needs iproute2 and a built
//! `berth` next to this binary (or in BERTH_BIN_DIR).
//!
//! `berth-bench-pipework [WIRINGS]` (default 40 of each).

use berth_conformance::bench::percentile;
use berth_conformance::plugins::berth_dir;
use berth_conformance::TestHost;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn timed(host: &TestHost, mut cmd: Command) -> Duration {
    host.ns.prepare_command(&mut cmd).expect("the host namespace");
    cmd.stdout(Stdio::null());
    let start = Instant::now();
    let out = cmd.output().expect("run");
    let took = start.elapsed();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

/// pipework's steps for a Linux bridge, one `ip` process each, as its script runs them.
fn pipework_steps(guest: &str, n: usize) -> Command {
    let (local, peer) = (format!("vpl{n}"), format!("vpg{n}"));
    let script = format!(
        "set -e
ip link add name {local} mtu 1500 type veth peer name {peer} mtu 1500
ip link set {local} master brbench
ip link set {local} up
ip link set {peer} netns {guest}
ip netns exec {guest} ip link set {peer} name eth1
ip netns exec {guest} ip addr add 10.77.{hi}.{lo}/16 brd + dev eth1
ip netns exec {guest} ip link set eth1 up
ip netns exec {guest} ip route replace default via 10.77.0.1",
        hi = 1 + n / 250,
        lo = 1 + n % 250
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    cmd
}

fn berth_pipework(berth: &std::path::Path, state: &std::path::Path, guest: &str, n: usize) -> Command {
    let mut cmd = Command::new(berth);
    cmd.args(["pipework", "brbench", guest, &format!("10.78.{}.{}/16@10.78.0.1", 1 + n / 250, 1 + n % 250)])
        .env("BERTH_STATE_DIR", state)
        .env("BERTH_CONFIG_DIR", state.join("net.d"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    cmd
}

fn main() {
    let wirings: usize = std::env::args().nth(1).map(|a| a.parse().expect("WIRINGS is a number")).unwrap_or(40);
    let host = TestHost::new();
    host.netlink().ensure_bridge("brbench", Some(1500)).expect("the bridge");
    let berth = berth_dir().join("berth");
    let state = host.dir.path().join("berth");
    let (mut shell, mut ours) = (Vec::new(), Vec::new());
    for n in 0..wirings {
        let (a, b) = (host.container(), host.container());
        shell.push(timed(&host, pipework_steps(&a.name, n)));
        ours.push(timed(&host, berth_pipework(&berth, &state, &b.name, n)));
    }
    shell.sort();
    ours.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("one wiring (veth on a Linux bridge, address, default route), {wirings} each, interleaved");
    println!("{:<28} {:>10} {:>10}", "", "median ms", "p90 ms");
    for (label, times) in [("pipework's ip steps (sh)", &shell), ("berth pipework", &ours)] {
        println!("{label:<28} {:>10.2} {:>10.2}", ms(percentile(times, 0.5)), ms(percentile(times, 0.9)));
    }
    println!("speed-up (median): {:.1}x", ms(percentile(&shell, 0.5)) / ms(percentile(&ours, 0.5)));
}
