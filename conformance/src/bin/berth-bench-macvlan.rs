//! berth-bench-macvlan: ADD and DEL latency of berth-macvlan + berth-host-local against the
//! reference macvlan + host-local, same machine, same run.
//!
//!   berth-bench-macvlan [N ...]          (default: 100)
//!
//! Each set runs in a child process of its own, in a throwaway host namespace whose master
//! is a veth (the other end in a "LAN" namespace). Peak RSS is that of the largest plugin
//! invocation among five untimed ADDs and DELs with the N containers there, each plugin run
//! through `berth-rss-probe`. Needs root.

use berth_conformance::bench::{latency_summary, run_child, sizes};
use berth_conformance::plugins::PluginSet;
use berth_conformance::rss_probe::RssProbe;
use berth_conformance::TestHost;
use berth_netlink::VethPeer;
use berth_netns::NetNs;
use berth_cni::skel::Command;
use serde_json::json;
use std::time::Instant;


/// N ADDs then N DELs with one plugin set, in this process; prints a JSON summary.
fn measure(label: &str, n: usize) {
    let (set, macvlan) = match label {
        "berth" => (PluginSet::berth(), "berth-macvlan"),
        _ => (PluginSet::reference(), "macvlan"),
    };
    let host = TestHost::new();
    let lan = host.container();
    let lan_ns = NetNs::open(&lan.path).expect("LAN namespace");
    let mut nl = host.netlink();
    let master = nl.create_veth("benchpar0", &VethPeer { name: "benchlan0", netns: Some(&lan_ns), mac: None }, None, None).expect("master veth");
    nl.set_up(master.index).expect("master up");
    let containers: Vec<_> = (0..n).map(|_| host.container()).collect();
    let subnet = if n < 250 { "10.201.0.0/24" } else { "10.201.0.0/16" };
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "bench",
        "type": macvlan,
        "master": "benchpar0",
        "mode": "bridge",
        "ipam": { "type": set.host_local, "subnet": subnet, "dataDir": host.dir.path().join("ipam").display().to_string() },
    });
    let probe = RssProbe::new(&host, &set);
    let call = |cni_path: &[std::path::PathBuf], command: Command, c: &berth_conformance::Container| {
        host.call(cni_path, macvlan, command, &c.name, Some(&c.path), "eth0", &conf)
            .unwrap_or_else(|e| panic!("{label} {}: {e}", command.as_str()));
    };
    let time = |command: Command, c: &berth_conformance::Container| {
        let start = Instant::now();
        call(&set.cni_path(), command, c);
        start.elapsed().as_secs_f64() * 1000.0
    };
    let add_ms: Vec<f64> = containers.iter().map(|c| time(Command::Add, c)).collect();
    for _ in 0..5 {
        let extra = host.container();
        call(&probe.cni_path(), Command::Add, &extra);
        call(&probe.cni_path(), Command::Del, &extra);
    }
    let peak_rss_kb = probe.take_peak_kb();
    let del_ms: Vec<f64> = containers.iter().map(|c| time(Command::Del, c)).collect();
    let mut summary = latency_summary(&add_ms, &del_ms);
    summary.insert("peak_rss_kb".into(), peak_rss_kb.into());
    println!("{}", serde_json::Value::Object(summary));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        measure(&args[1], args[2].parse().expect("N"));
        return;
    }
    let ns = sizes(&args, 100);
    println!("{:>6}  {:<10} {:>10} {:>10} {:>10} {:>10} {:>10}", "N", "macvlan", "ADD med", "ADD p90", "DEL med", "DEL p90", "peak RSS");
    for n in ns {
        let berth = run_child(&["--one", "berth", &n.to_string()]);
        let reference = run_child(&["--one", "reference", &n.to_string()]);
        for (label, f) in [("berth", &berth), ("reference", &reference)] {
            println!(
                "{:>6}  {:<10} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8}kB",
                n, label, f["add_median_ms"].as_f64().unwrap(), f["add_p90_ms"].as_f64().unwrap(),
                f["del_median_ms"].as_f64().unwrap(), f["del_p90_ms"].as_f64().unwrap(), f["peak_rss_kb"]
            );
        }
        let ratio = |k: &str| reference[k].as_f64().unwrap() / berth[k].as_f64().unwrap();
        println!(
            "{:>6}  reference/berth: ADD {:.1}x, DEL {:.1}x; peak RSS {:.1}x",
            n, ratio("add_median_ms"), ratio("del_median_ms"),
            reference["peak_rss_kb"].as_f64().unwrap() / berth["peak_rss_kb"].as_f64().unwrap()
        );
    }
}
