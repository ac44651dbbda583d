//! berth-bench: ADD and DEL latency of berth-bridge against the reference bridge, same
//! machine, same kind of throwaway host namespace, same run. Needs root.
//!
//!   berth-bench [--plain] [--berth-only] [--reference-1.1.1] [--out DIR] [N ...]   (default N: 100)
//!   berth-bench --del-forms [N ...]
//!
//! Default workload (what runtimes do for a published container): ipMasq and one port
//! mapping per container; berth-bridge + berth-host-local against the reference chain
//! bridge + portmap + host-local. `--plain`: no NAT, no port mapping, bridge + host-local only.
//! The reference is the newest release, v1.9.1 (`/work/shared/ref-plugins`), with its
//! nftables backends (`ipMasqBackend`, portmap's `backend`), as berth uses nftables;
//! `--reference-1.1.1`: Debian's containernetworking-plugins 1.1.1, with iptables.
//! Each chain runs through `berth_cni::runtime`, as a runtime runs a conflist, in a child
//! process of its own. Peak RSS is measured on untimed extra containers, every plugin started
//! through `berth-rss-probe` (see there why): one ADD and DEL on the fresh network before the
//! timed ADDs (the first ADD sets network-wide state up), and five with the N containers there.
//! With `--out DIR`, per-container ADD latencies go to DIR/add-latency.csv and a plot of
//! ADD latency against N to DIR/add-latency.svg.
//!
//! `--del-forms`: DEL with prevResult against DEL without it (a runtime that lost its result
//! cache: containerd after a restart, Kubernetes), see [`del_forms`].

use berth_cni::runtime::Attachment;
use berth_cni::spec::ConfList;
use berth_conformance::bench::{percentile, run_child};
use berth_conformance::plugins::PluginSet;
use berth_conformance::rss_probe::RssProbe;
use berth_conformance::TestHost;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// The plugin sets the default workload compares, by the labels their child processes take.
fn plugin_set(label: &str) -> PluginSet {
    match label {
        "berth" => PluginSet::berth(),
        REFERENCE_DEBIAN => PluginSet::reference(),
        _ => reference_v191(),
    }
}

const REFERENCE_NEWEST: &str = "reference-v1.9.1";
const REFERENCE_DEBIAN: &str = "reference-v1.1.1";

/// The reference plugins v1.9.1, built from source.
fn reference_v191() -> PluginSet {
    let dir = berth_conformance::plugins::reference_v191_dir();
    assert!(dir.join("bridge").is_file(), "no reference plugins v1.9.1 in {}", dir.display());
    PluginSet { dir, ..PluginSet::reference() }
}

/// The reference v1.9.1's nftables backends, on its bridge and its portmap entries.
fn use_nftables(bridge: &mut Value, portmap: &mut Value) {
    bridge["ipMasqBackend"] = json!("nftables");
    portmap["backend"] = json!("nftables");
}

fn conflist(label: &str, set: &PluginSet, plain: bool, n: usize, data_dir: &str) -> ConfList {
    let subnet = if n < 250 { "10.200.0.0/24" } else { "10.200.0.0/16" };
    let mut bridge = json!({
        "type": set.bridge,
        "bridge": "benchbr0",
        "isGateway": true,
        "ipam": { "type": set.host_local, "subnet": subnet, "dataDir": data_dir },
    });
    let mut plugins = vec![];
    if !plain {
        bridge["ipMasq"] = json!(true);
        if set.label == "berth" {
            bridge["capabilities"] = json!({"portMappings": true});
        }
    }
    let mut portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true});
    if label == REFERENCE_NEWEST {
        use_nftables(&mut bridge, &mut portmap);
    }
    plugins.push(bridge);
    if !plain && set.label != "berth" {
        plugins.push(portmap);
    }
    serde_json::from_value(json!({"cniVersion": "1.0.0", "name": "bench", "plugins": plugins})).expect("conflist")
}

/// Runs N ADDs then N DELs with one plugin set, in this process; prints JSON.
fn measure(label: &str, plain: bool, n: usize) -> Value {
    let set = &plugin_set(label);
    let host = TestHost::new();
    let containers: Vec<_> = (0..n).map(|_| host.container()).collect();
    let list = conflist(label, set, plain, n, &host.dir.path().join("ipam").display().to_string());
    let runtime = host.runtime(set.cni_path());
    let attachments: Vec<Attachment> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| Attachment {
            container_id: c.name.clone(),
            ifname: "eth0".into(),
            netns: c.path.clone(),
            capability_args: port_mapping(plain, 20000 + i),
            ..Default::default()
        })
        .collect();
    let timed = |f: &dyn Fn() -> berth_cni::CniResult<()>| {
        let start = Instant::now();
        f().unwrap_or_else(|e| panic!("{}: {e}", set.label));
        start.elapsed().as_secs_f64() * 1000.0
    };
    let probe = RssSample::new(&host, set);
    let first_add_rss_kb = probe.peak_kb(&host, &list, plain, 1);
    let add: Vec<f64> = attachments.iter().map(|a| timed(&|| runtime.add(&list, a).map(drop))).collect();
    let rss_at_n_kb = probe.peak_kb(&host, &list, plain, 5);
    let del: Vec<f64> = attachments.iter().map(|a| timed(&|| runtime.del(&list, a))).collect();
    let first = add.len().min(10);
    json!({
        "add": add, "del": del,
        "add_median_ms": median(&add), "add_p90_ms": percentile(&add, 0.9),
        "del_median_ms": median(&del), "del_p90_ms": percentile(&del, 0.9),
        "add_first10_median_ms": median(&add[..first]), "add_last10_median_ms": median(&add[add.len() - first..]),
        "first_add_rss_kb": first_add_rss_kb, "rss_at_n_kb": rss_at_n_kb,
        "peak_rss_kb": first_add_rss_kb.max(rss_at_n_kb),
    })
}

/// Untimed extra containers, each plugin run through [`RssProbe`].
struct RssSample {
    probe: RssProbe,
    runtime: berth_cni::runtime::Runtime,
    calls: std::cell::Cell<usize>,
}

impl RssSample {
    fn new(host: &TestHost, set: &PluginSet) -> RssSample {
        let probe = RssProbe::new(host, set);
        RssSample { runtime: host.runtime(probe.cni_path()), probe, calls: Default::default() }
    }

    /// ADD then DEL of `count` extra containers; the largest peak RSS (kB) of any plugin
    /// process they ran.
    fn peak_kb(&self, host: &TestHost, list: &ConfList, plain: bool, count: usize) -> i64 {
        for _ in 0..count {
            let k = self.calls.get();
            self.calls.set(k + 1);
            let container = host.container();
            let attachment = Attachment {
                container_id: format!("rss-probe-{k}"),
                ifname: "eth0".into(),
                netns: container.path.clone(),
                capability_args: port_mapping(plain, 30000 + k),
                ..Default::default()
            };
            self.runtime.add(list, &attachment).unwrap_or_else(|e| panic!("ADD through the RSS probe: {e}"));
            self.runtime.del(list, &attachment).unwrap_or_else(|e| panic!("DEL through the RSS probe: {e}"));
        }
        self.probe.take_peak_kb()
    }
}

fn port_mapping(plain: bool, host_port: usize) -> serde_json::Map<String, Value> {
    if plain {
        return Default::default();
    }
    json!({"portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]})
        .as_object()
        .cloned()
        .expect("object")
}

/// One chain's measurement at `n` containers, in a child process.
fn measure_in_child(label: &str, plain: bool, n: usize) -> Value {
    let n = n.to_string();
    let mut args = vec!["--one", label, &n];
    if plain {
        args.push("--plain");
    }
    run_child(&args)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let plain = args.iter().any(|a| a == "--plain");
    let berth_only = args.iter().any(|a| a == "--berth-only");
    let reference = if args.iter().any(|a| a == "--reference-1.1.1") { REFERENCE_DEBIAN } else { REFERENCE_NEWEST };
    args.retain(|a| a != "--plain" && a != "--berth-only" && a != "--reference-1.1.1");
    if args.first().map(String::as_str) == Some("--del-forms") {
        del_forms::main(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("--one") {
        println!("{}", measure(&args[1], plain, args[2].parse().expect("N")));
        return;
    }
    let out_dir = args.iter().position(|a| a == "--out").map(|i| {
        let dir = PathBuf::from(args.get(i + 1).expect("--out DIR"));
        args.drain(i..=i + 1);
        dir
    });
    let ns: Vec<usize> =
        if args.is_empty() { vec![100] } else { args.iter().map(|a| a.parse().expect("N is a number")).collect() };
    let workload = if plain { "bridge + host-local, no NAT" } else { "bridge + host-local, ipMasq, one port mapping each" };
    println!("workload: {workload}; reference: {reference}");
    println!(
        "{:>6}  {:<10} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>12} {:>9}",
        "N", "plugins", "ADD med", "ADD p90", "DEL med", "DEL p90", "ADD 1st10", "ADD last10", "RSS 1st ADD", "RSS at N"
    );
    let mut series = vec![];
    for n in ns {
        let berth = measure_in_child("berth", plain, n);
        print_row(n, "berth", &berth);
        if berth_only {
            continue;
        }
        let reference = measure_in_child(reference, plain, n);
        print_row(n, "reference", &reference);
        let ratio = |k: &str| reference[k].as_f64().expect("figure") / berth[k].as_f64().expect("figure");
        println!(
            "{:>6}  reference/berth: ADD median {:.1}x, DEL median {:.1}x, peak RSS {:.2}x (at N {:.2}x)",
            n,
            ratio("add_median_ms"),
            ratio("del_median_ms"),
            ratio("peak_rss_kb"),
            ratio("rss_at_n_kb")
        );
        series.push((n, berth, reference));
    }
    match out_dir {
        Some(_) if berth_only => eprintln!("--out needs both plugin sets; no plot with --berth-only"),
        Some(dir) => write_plot(&dir, &series, workload),
        None => {}
    }
}

fn print_row(n: usize, label: &str, f: &Value) {
    let ms = |k: &str| f[k].as_f64().expect("figure");
    println!(
        "{:>6}  {:<10} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>9.2}ms {:>9.2}ms {:>10}kB {:>7}kB",
        n,
        label,
        ms("add_median_ms"),
        ms("add_p90_ms"),
        ms("del_median_ms"),
        ms("del_p90_ms"),
        ms("add_first10_median_ms"),
        ms("add_last10_median_ms"),
        f["first_add_rss_kb"].as_i64().unwrap_or_default(),
        f["rss_at_n_kb"].as_i64().unwrap_or_default()
    );
}

/// Per-container ADD latency (the i-th ADD against the number of containers already there),
/// as CSV and as an SVG line chart; no plotting dependency.
fn write_plot(dir: &std::path::Path, series: &[(usize, Value, Value)], workload: &str) {
    std::fs::create_dir_all(dir).expect("output directory");
    let mut csv = String::from("n_total,plugins,containers_before,add_ms\n");
    // The largest run shows latency against the number of containers; plot that one.
    let (n, berth, reference) = series.iter().max_by_key(|(n, ..)| *n).expect("a run");
    let lines: Vec<(&str, &str, Vec<f64>)> = [("berth", "#1b7837", berth), ("reference", "#b2182b", reference)]
        .into_iter()
        .map(|(label, colour, f)| {
            let add: Vec<f64> = f["add"].as_array().expect("latencies").iter().filter_map(Value::as_f64).collect();
            (label, colour, add)
        })
        .collect();
    for (total, b, r) in series {
        for (label, f) in [("berth", b), ("reference", r)] {
            for (i, ms) in f["add"].as_array().expect("latencies").iter().enumerate() {
                csv += &format!("{total},{label},{i},{}\n", ms.as_f64().unwrap_or_default());
            }
        }
    }
    std::fs::write(dir.join("add-latency.csv"), csv).expect("write CSV");
    let (w, h, left, bottom, top, right) = (800.0, 450.0, 60.0, 50.0, 45.0, 20.0);
    let y_max = lines.iter().flat_map(|(_, _, v)| v.iter().copied()).map(|v| v.min(1e6)).fold(1.0, f64::max) * 1.1;
    let x = |i: usize| left + (w - left - right) * i as f64 / (*n as f64 - 1.0).max(1.0);
    let y = |ms: f64| h - bottom - (h - bottom - top) * (ms / y_max);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    svg += &format!("<text x=\"{left}\" y=\"18\" font-size=\"14\">ADD latency against containers already on the bridge</text>\n");
    svg += &format!("<text x=\"{left}\" y=\"33\" font-size=\"11\">{workload}</text>\n");
    svg += &format!("<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", h - bottom, w - right, h - bottom);
    svg += &format!("<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n", h - bottom);
    for k in 0..=5 {
        let ms = y_max * k as f64 / 5.0;
        svg += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{ms:.0}</text>\n", left - 6.0, y(ms) + 4.0);
        let i = (*n - 1) * k / 5;
        svg += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{i}</text>\n", x(i), h - bottom + 18.0);
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">containers already attached</text>\n",
        (left + w) / 2.0,
        h - 10.0
    );
    svg += &format!(
        "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">ADD ms</text>\n",
        h / 2.0,
        h / 2.0
    );
    for (k, (label, colour, add)) in lines.iter().enumerate() {
        let points: Vec<String> = add.iter().enumerate().map(|(i, ms)| format!("{:.1},{:.1}", x(i), y(*ms))).collect();
        svg += &format!("<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.2\" points=\"{}\"/>\n", points.join(" "));
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{label}</text>\n",
            w - right - 90.0,
            top + 16.0 * (k as f64 + 1.0)
        );
    }
    svg += "</svg>\n";
    std::fs::write(dir.join("add-latency.svg"), svg).expect("write SVG");
}

/// `--del-forms`: the two forms of DEL a runtime sends. With prevResult (the result ADD
/// printed, from the runtime's cache) the plugin is told the container's addresses; without
/// it (containerd after a restart, Kubernetes, a runtime without a result cache) it has to
/// find what the attachment holds. The port mappings come with both, as runtimes pass them.
///
/// Per plugin set, N containers are added (default workload: ipMasq and one port mapping
/// each), then deleted in turns: even ones with prevResult, odd ones through a runtime whose
/// result cache is empty, so both forms see the same number of containers left. The sets:
/// berth-bridge with firewallBackend nftables and iptables-nft, and the reference bridge and
/// portmap v1.9.1 with their nftables backends (`ipMasqBackend`, `backend`).
mod del_forms {
    use super::{median, percentile, port_mapping, reference_v191, run_child, use_nftables, PluginSet, TestHost};
    use berth_cni::runtime::{Attachment, Runtime};
    use berth_cni::spec::ConfList;
    use serde_json::{json, Value};
    use std::time::Instant;

    const SETS: &[&str] = &["berth-nftables", "berth-iptables-nft", "reference-v1.9.1-nftables"];

    fn plugin_set(label: &str) -> PluginSet {
        match label {
            "reference-v1.9.1-nftables" => reference_v191(),
            _ => PluginSet::berth(),
        }
    }

    fn conflist(label: &str, set: &PluginSet, data_dir: &str) -> ConfList {
        let mut bridge = json!({
            "type": set.bridge, "bridge": "benchbr0", "isGateway": true, "ipMasq": true,
            "ipam": { "type": set.host_local, "subnet": "10.200.0.0/16", "dataDir": data_dir },
        });
        let mut plugins = vec![];
        match label.strip_prefix("berth-") {
            Some(backend) => {
                bridge["firewallBackend"] = json!(backend);
                bridge["capabilities"] = json!({"portMappings": true});
                plugins.push(bridge);
            }
            None => {
                let mut portmap = json!({"type": "portmap", "snat": true, "capabilities": {"portMappings": true}});
                use_nftables(&mut bridge, &mut portmap);
                plugins.extend([bridge, portmap]);
            }
        }
        serde_json::from_value(json!({"cniVersion": "1.0.0", "name": "bench", "plugins": plugins})).expect("conflist")
    }

    /// N ADDs, then N DELs in both forms, in this process; prints JSON.
    pub(super) fn measure(label: &str, n: usize) {
        assert!(n >= 2, "--del-forms needs N >= 2: half the DELs take each form");
        let set = plugin_set(label);
        let host = TestHost::new();
        let list = conflist(label, &set, &host.dir.path().join("ipam").display().to_string());
        let runtime = host.runtime(set.cni_path());
        // The same plugins and namespace, but a result cache that is empty: DEL gets no
        // prevResult, only what the caller passes (the port mappings).
        let forgetful = Runtime { cache_dir: host.dir.path().join("empty-cache"), ..host.runtime(set.cni_path()) };
        let attachments: Vec<Attachment> = (0..n)
            .map(|i| {
                let c = host.container();
                let capability_args = port_mapping(false, 20000 + i);
                Attachment { container_id: c.name, ifname: "eth0".into(), netns: c.path, capability_args, ..Default::default() }
            })
            .collect();
        let timed = |f: &dyn Fn() -> berth_cni::CniResult<()>| {
            let start = Instant::now();
            f().unwrap_or_else(|e| panic!("{label}: {e}"));
            start.elapsed().as_secs_f64() * 1000.0
        };
        let add: Vec<f64> = attachments.iter().map(|a| timed(&|| runtime.add(&list, a).map(drop))).collect();
        let (mut with_prev, mut without_prev) = (vec![], vec![]);
        for (i, a) in attachments.iter().enumerate() {
            match i % 2 {
                0 => with_prev.push(timed(&|| runtime.del(&list, a))),
                _ => without_prev.push(timed(&|| forgetful.del(&list, a))),
            }
        }
        let summary = |v: &[f64]| json!({"median_ms": median(v), "p90_ms": percentile(v, 0.9)});
        let out = json!({"add": summary(&add), "del_prev": summary(&with_prev), "del_no_prev": summary(&without_prev)});
        println!("{out}");
    }

    pub(super) fn main(args: &[String]) {
        if args.first().map(String::as_str) == Some("--one") {
            measure(&args[1], args[2].parse().expect("N"));
            return;
        }
        // `--only LABEL,...`: some of the sets (another build of berth against the same figures).
        let mut args = args.to_vec();
        let only: Vec<String> = match args.iter().position(|a| a == "--only") {
            Some(i) => args.drain(i..=i + 1).nth(1).expect("--only LABEL,...").split(',').map(str::to_string).collect(),
            None => SETS.iter().map(|s| s.to_string()).collect(),
        };
        let ns = berth_conformance::bench::sizes(&args, 100);
        println!("DEL with and without prevResult; workload: bridge + host-local, ipMasq, one port mapping each");
        println!(
            "{:>6}  {:<27} {:>9} {:>13} {:>13} {:>15} {:>15} {:>9}",
            "N", "plugins", "ADD med", "DEL prev med", "DEL prev p90", "DEL no-prev med", "DEL no-prev p90", "no/prev"
        );
        for n in ns {
            let results: Vec<(&str, Value)> = SETS
                .iter()
                .filter(|label| only.iter().any(|o| o == *label))
                .map(|label| (*label, run_child(&["--del-forms", "--one", label, &n.to_string()])))
                .collect();
            for (label, f) in &results {
                let ms = |form: &str, k: &str| f[form][k].as_f64().expect("figure");
                println!(
                    "{:>6}  {:<27} {:>7.2}ms {:>11.2}ms {:>11.2}ms {:>13.2}ms {:>13.2}ms {:>8.2}x",
                    n,
                    label,
                    ms("add", "median_ms"),
                    ms("del_prev", "median_ms"),
                    ms("del_prev", "p90_ms"),
                    ms("del_no_prev", "median_ms"),
                    ms("del_no_prev", "p90_ms"),
                    ms("del_no_prev", "median_ms") / ms("del_prev", "median_ms")
                );
            }
            let median_of = |label: &str, form: &str| {
                let (_, f) = results.iter().find(|(l, _)| *l == label)?;
                f[form]["median_ms"].as_f64()
            };
            let Some(reference) = results.iter().map(|(l, _)| *l).find(|l| l.starts_with("reference")) else { continue };
            for (berth, form) in results
                .iter()
                .map(|(l, _)| *l)
                .filter(|l| l.starts_with("berth"))
                .flat_map(|l| [(l, "del_prev"), (l, "del_no_prev")])
            {
                if let (Some(r), Some(b)) = (median_of(reference, form), median_of(berth, form)) {
                    println!("{n:>6}  {form}: reference/{berth} {:.1}x", r / b);
                }
            }
        }
    }
}
