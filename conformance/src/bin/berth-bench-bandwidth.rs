//! berth-bench-bandwidth: ADD and DEL latency of a bridge + host-local + bandwidth chain,
//! berth's (berth-bridge, berth-host-local, berth-bandwidth) against the reference plugins
//! v1.9.1 (bridge, host-local, bandwidth from /work/shared/ref-plugins), same machine, same run.
//!
//!   berth-bench-bandwidth [N ...]          (default: 100)
//!
//! Each chain runs as a runtime runs a conflist (`berth_cni::runtime`), in a child process of
//! its own with a throwaway host namespace; both directions are shaped (ingress 8 Mbit/s,
//! egress 20 Mbit/s), so every ADD sets a tbf, an ifb with its tbf, the ingress qdisc and the
//! redirect, and every DEL removes them. Needs root.

use berth_conformance::bench::{latency_summary, run_child, sizes};
use berth_cni::runtime::Attachment;
use berth_cni::spec::ConfList;
use berth_conformance::plugins::berth_dir;
use berth_conformance::TestHost;
use serde_json::json;
use std::time::Instant;



/// N chain ADDs then N chain DELs with one set of plugins, in this process; prints JSON.
fn measure(label: &str, n: usize) {
    let (dir, [bridge, host_local, bandwidth]) = match label {
        "berth" => (berth_dir(), ["berth-bridge", "berth-host-local", "berth-bandwidth"]),
        _ => (berth_conformance::plugins::reference_v191_dir(), ["bridge", "host-local", "bandwidth"]),
    };
    let host = TestHost::new();
    let subnet = if n < 250 { "10.202.0.0/24" } else { "10.202.0.0/16" };
    let raw = json!({
        "cniVersion": "1.0.0",
        "name": "bench-bw",
        "plugins": [
            { "type": bridge, "bridge": "benchbw0", "isGateway": true,
              "ipam": { "type": host_local, "subnet": subnet, "dataDir": host.dir.path().join("ipam").display().to_string() } },
            { "type": bandwidth, "ingressRate": 8_000_000, "ingressBurst": 262_144, "egressRate": 20_000_000, "egressBurst": 262_144 },
        ],
    });
    let list = ConfList::from_slice(raw.to_string().as_bytes()).expect("conflist");
    let runtime = host.runtime(vec![dir]);
    let attachments: Vec<Attachment> = (0..n)
        .map(|_| {
            let c = host.container();
            Attachment { container_id: c.name, ifname: "eth0".into(), netns: c.path, ..Default::default() }
        })
        .collect();
    let time = |f: &dyn Fn() -> berth_cni::CniResult<()>| {
        let start = Instant::now();
        f().unwrap_or_else(|e| panic!("{label}: {e}"));
        start.elapsed().as_secs_f64() * 1000.0
    };
    let add_ms: Vec<f64> = attachments.iter().map(|a| time(&|| runtime.add(&list, a).map(drop))).collect();
    let del_ms: Vec<f64> = attachments.iter().map(|a| time(&|| runtime.del(&list, a))).collect();
    println!("{}", serde_json::Value::Object(latency_summary(&add_ms, &del_ms)));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        measure(&args[1], args[2].parse().expect("N"));
        return;
    }
    let ns = sizes(&args, 100);
    println!("{:>6}  {:<10} {:>10} {:>10} {:>10} {:>10}", "N", "chain", "ADD med", "ADD p90", "DEL med", "DEL p90");
    for n in ns {
        let berth = run_child(&["--one", "berth", &n.to_string()]);
        let reference = run_child(&["--one", "reference", &n.to_string()]);
        for (label, f) in [("berth", &berth), ("reference", &reference)] {
            println!(
                "{:>6}  {:<10} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms",
                n,
                label,
                f["add_median_ms"].as_f64().unwrap(),
                f["add_p90_ms"].as_f64().unwrap(),
                f["del_median_ms"].as_f64().unwrap(),
                f["del_p90_ms"].as_f64().unwrap()
            );
        }
        let ratio = |k: &str| reference[k].as_f64().unwrap() / berth[k].as_f64().unwrap();
        println!("{:>6}  reference/berth: ADD {:.1}x, DEL {:.1}x", n, ratio("add_median_ms"), ratio("del_median_ms"));
    }
}
