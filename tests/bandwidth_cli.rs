//! `berth attach --ingress-rate/--egress-rate/--burst` as a user drives it: the rates, in tc's
//! units, reach berth-bandwidth as the `bandwidth` capability and shape the container; bad
//! values are refused before anything runs. Needs root: berth runs inside a throwaway host
//! namespace, and the plugins built beside the `berth` binary.

use berth_conformance::throughput::tcp_bits_per_sec;
use berth_conformance::TestHost;
use berth_netlink::Netlink;
use berth_netns::NetNs;
use std::process::{Command, Output};
use std::time::Duration;

fn berth(host: &TestHost, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args)
        .env("BERTH_CONFIG_DIR", host.dir.path().join("net.d"))
        .env("BERTH_STATE_DIR", host.dir.path().join("state"))
        .env_remove("CNI_PATH");
    host.ns.prepare_command(&mut cmd).unwrap();
    cmd.output().expect("run berth")
}

fn ok(host: &TestHost, args: &[&str]) -> String {
    let out = berth(host, args);
    assert!(out.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `berth net create NAME --bandwidth` with its IPAM state in the test's scratch directory.
fn network(host: &TestHost, name: &str, subnet: &str, bandwidth: bool) {
    let mut args = vec!["net", "create", name, "--subnet", subnet];
    if bandwidth {
        args.push("--bandwidth");
    }
    ok(host, &args);
    let path = host.dir.path().join(format!("net.d/{name}.conflist"));
    let mut conf: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    conf["plugins"][0]["ipam"]["dataDir"] = host.dir.path().join("ipam").display().to_string().into();
    std::fs::write(&path, conf.to_string()).unwrap();
}

fn ifbs(host: &TestHost) -> usize {
    host.netlink().links().unwrap().iter().filter(|l| l.kind.as_deref() == Some("ifb")).count()
}

#[test]
fn attach_with_rates_shapes_and_detach_removes_the_shaping() {
    let host = TestHost::new();
    network(&host, "slow", "10.35.0.0/24", true);
    let c = host.container();
    ok(&host, &["attach", "slow", &c.name, "--ingress-rate", "8mbit", "--egress-rate", "20mbit", "--burst", "32kb"]);
    assert_eq!(ifbs(&host), 1);
    ok(&host, &["check", "slow", &c.name]);

    // The host end carries a tbf of 8 Mbit/s = 1 000 000 bytes/s.
    let cns = NetNs::open(&c.path).unwrap();
    let mut cnl = Netlink::open_in(&cns).unwrap();
    let eth0 = cnl.link_by_name("eth0").unwrap().expect("eth0");
    let address = cnl.addresses(Some(eth0.index)).unwrap()[0].1.addr();
    let root = host.netlink().qdiscs(eth0.peer_index.unwrap()).unwrap().into_iter().find(|q| q.is_root()).unwrap();
    assert_eq!((root.kind.as_str(), root.token_bucket.map(|b| (b.rate, b.burst))), ("tbf", Some((1_000_000, 32_768))));
    let hns = NetNs::open(host.path()).unwrap();
    let measured = tcp_bits_per_sec(&hns, &cns, address, Duration::from_secs(3)).unwrap();
    assert!((7.2e6..=8.8e6).contains(&measured), "{:.2} Mbit/s against 8", measured / 1e6);

    ok(&host, &["detach", "slow", &c.name]);
    assert!(berth_conformance::eventually(Duration::from_secs(5), || ifbs(&host) == 0), "detach removed the ifb");
}

#[test]
fn bad_rates_are_refused_before_anything_runs() {
    let host = TestHost::new();
    network(&host, "plain", "10.36.0.0/24", false);
    network(&host, "shaped", "10.37.0.0/24", true);
    let c = host.container();
    for (args, status) in [
        (vec!["--ingress-rate", "0"], 2),
        (vec!["--egress-rate", "-5mbit"], 2),
        (vec!["--ingress-rate", "10parsecs"], 2),
        (vec!["--burst", "32kb"], 4),
    ] {
        let mut all = vec!["attach", "shaped", c.name.as_str()];
        all.extend(&args);
        let out = berth(&host, &all);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A network without berth-bandwidth would ignore the rates: refused, naming the fix.
    let out = berth(&host, &["attach", "plain", &c.name, "--ingress-rate", "10mbit"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bandwidth capability"));
    // A burst smaller than a packet is the plugin's to refuse: nothing stays.
    let out = berth(&host, &["attach", "shaped", &c.name, "--ingress-rate", "10mbit", "--burst", "1kb"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingressBurst"));
    assert_eq!(ifbs(&host), 0);
}
