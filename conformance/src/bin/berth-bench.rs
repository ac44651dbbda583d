//! berth-bench: ADD and DEL latency of berth-bridge + berth-host-local against the reference
//! bridge + host-local, same machine, same kind of throwaway host namespace, same run.
//!
//!   berth-bench [N ...]          (default: 100)
//!
//! Each plugin set runs in a child process of its own so that peak RSS (the largest plugin
//! process it started, from getrusage) is measured per set. Needs root.

use berth_conformance::plugins::PluginSet;
use berth_conformance::TestHost;
use berth_plugins::skel::Command;
use serde_json::json;
use std::time::Instant;

struct Figures {
    add_ms: Vec<f64>,
    del_ms: Vec<f64>,
    peak_rss_kb: i64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs N ADDs then N DELs with one plugin set, in this process.
fn measure(set: &PluginSet, n: usize) -> Figures {
    let host = TestHost::new();
    let containers: Vec<_> = (0..n).map(|_| host.container()).collect();
    let subnet = if n < 250 { "10.200.0.0/24" } else { "10.200.0.0/16" };
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "bench",
        "type": set.bridge,
        "bridge": "benchbr0",
        "isGateway": true,
        "ipam": { "type": set.host_local, "subnet": subnet, "dataDir": host.dir.path().join("ipam").display().to_string() },
    });
    let time = |command: Command, c: &berth_conformance::Container| {
        let start = Instant::now();
        host.call(&set.cni_path(), set.bridge, command, &c.name, Some(&c.path), "eth0", &conf)
            .unwrap_or_else(|e| panic!("{} {}: {e}", set.label, command.as_str()));
        start.elapsed().as_secs_f64() * 1000.0
    };
    let add_ms: Vec<f64> = containers.iter().map(|c| time(Command::Add, c)).collect();
    let del_ms: Vec<f64> = containers.iter().map(|c| time(Command::Del, c)).collect();
    // SAFETY: getrusage fills the struct it is given.
    let peak_rss_kb = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    };
    Figures { add_ms, del_ms, peak_rss_kb }
}

fn run_child(label: &str, n: usize) -> serde_json::Value {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--one", label, &n.to_string()])
        .output()
        .expect("run the benchmark child");
    assert!(out.status.success(), "{label} benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("child prints JSON")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        let set = match args[1].as_str() {
            "berth" => PluginSet::berth(),
            _ => PluginSet::reference(),
        };
        let n: usize = args[2].parse().expect("N");
        let f = measure(&set, n);
        let summary = json!({
            "add_median_ms": median(&f.add_ms), "add_p90_ms": percentile(&f.add_ms, 0.9),
            "del_median_ms": median(&f.del_ms), "del_p90_ms": percentile(&f.del_ms, 0.9),
            "add_first10_median_ms": median(&f.add_ms[..f.add_ms.len().min(10)]),
            "add_last10_median_ms": median(&f.add_ms[f.add_ms.len().saturating_sub(10)..]),
            "peak_rss_kb": f.peak_rss_kb,
        });
        println!("{summary}");
        return;
    }
    let ns: Vec<usize> = if args.is_empty() { vec![100] } else { args.iter().map(|a| a.parse().expect("N is a number")).collect() };
    println!("{:>6}  {:<10} {:>10} {:>10} {:>10} {:>10} {:>10}", "N", "plugins", "ADD med", "ADD p90", "DEL med", "DEL p90", "peak RSS");
    for n in ns {
        let berth = run_child("berth", n);
        let reference = run_child("reference", n);
        for (label, f) in [("berth", &berth), ("reference", &reference)] {
            println!(
                "{:>6}  {:<10} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8}kB",
                n, label, f["add_median_ms"].as_f64().unwrap(), f["add_p90_ms"].as_f64().unwrap(),
                f["del_median_ms"].as_f64().unwrap(), f["del_p90_ms"].as_f64().unwrap(), f["peak_rss_kb"]
            );
        }
        let ratio = |k: &str| reference[k].as_f64().unwrap() / berth[k].as_f64().unwrap();
        println!(
            "{:>6}  berth is {:.1}x faster on ADD, {:.1}x faster on DEL; reference peak RSS / berth = {:.1}",
            n, ratio("add_median_ms"), ratio("del_median_ms"),
            reference["peak_rss_kb"].as_f64().unwrap() / berth["peak_rss_kb"].as_f64().unwrap()
        );
    }
}
