//! `berth-bench-dns [NAMES] [SECONDS] [CLIENTS]` (root): berth-dns's server against
//! aardvark-dns (Debian's, /usr/lib/podman/aardvark-dns), in the same run, serving the same
//! NAMES names (default 100) on two addresses of one throwaway namespace. CLIENTS threads
//! (default 2) each ask A queries one at a time for SECONDS (default 3) per server; printed:
//! queries per second, p50 and p99 latency, and the server's resident memory after the load.

use berth_conformance::bench::percentile;
use berth_conformance::dns::{ask, socket_in};
use berth_conformance::plugins::berth_dir;
use berth_conformance::TestHost;
use berth_dns::store::{Entry, NetworkState};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
const BERTH_AT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const AARDVARK_AT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn names(count: u64) -> Vec<(String, Ipv4Addr)> {
    (0..count).map(|i| (format!("c{i}"), Ipv4Addr::new(10, 77, 1 + (i / 250) as u8, 1 + (i % 250) as u8))).collect()
}

/// Kills the servers when the benchmark ends, however it ends.
struct Killer(Vec<u32>);

impl Drop for Killer {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill has no memory-safety preconditions; these are servers started here.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

fn start_berth(host: &TestHost, records: &[(String, Ipv4Addr)]) -> u32 {
    let dir = host.dir.path().join("berth/bench");
    let resolv = host.dir.path().join("resolv.conf");
    std::fs::write(&resolv, "").expect("resolv.conf");
    let entries = records
        .iter()
        .map(|(name, ip)| Entry {
            container_id: format!("id-{name}"),
            ifname: "eth0".into(),
            netns: Default::default(),
            names: vec![name.clone()],
            ips: vec![IpAddr::V4(*ip)],
        })
        .collect();
    let state =
        NetworkState { listen: vec![BERTH_AT.into()], port: 53, domain: "dns.podman".into(), resolv_conf: resolv, entries };
    state.save(&dir).expect("records");
    let mut cmd = Command::new(berth_dir().join("berth-dns"));
    cmd.arg("serve").arg("--dir").arg(&dir).stdout(Stdio::piped()).stderr(Stdio::null());
    host.ns.prepare_command(&mut cmd).expect("enter host");
    let mut child = cmd.spawn().expect("start berth-dns serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ready", "berth-dns serve");
    let pid = child.id();
    // Killed by `Killer` at the end and reaped here, off the main thread.
    std::thread::spawn(move || child.wait());
    pid
}

fn start_aardvark(host: &TestHost, records: &[(String, Ipv4Addr)]) -> u32 {
    assert!(Path::new(AARDVARK).is_file(), "{AARDVARK} is missing: apt-get install aardvark-dns");
    let dir = host.dir.path().join("aardvark");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut config = format!("{AARDVARK_AT}\n");
    for (name, ip) in records {
        config.push_str(&format!("id{name:0>60} {ip}  {name}\n"));
    }
    std::fs::write(dir.join("bench"), config).expect("aardvark config");
    let mut cmd = Command::new(AARDVARK);
    cmd.arg("--config").arg(&dir).args(["-p", "53", "run"]).stdout(Stdio::null()).stderr(Stdio::null());
    host.ns.prepare_command(&mut cmd).expect("enter host");
    // It forks; the parent exits once the child serves, and the child writes its pid.
    assert!(cmd.status().expect("run aardvark-dns").success(), "aardvark-dns run failed");
    let pid = std::fs::read_to_string(dir.join("aardvark.pid")).expect("aardvark.pid");
    pid.trim().parse().expect("pid")
}

/// `clients` threads asking for `seconds`: (queries per second, p50, p99).
fn load(
    host: &TestHost,
    server: Ipv4Addr,
    records: &[(String, Ipv4Addr)],
    seconds: u64,
    clients: u64,
) -> (f64, Duration, Duration) {
    let to = SocketAddr::new(server.into(), 53);
    let warm = socket_in(Some(&host.path()), server.into());
    let first = ask(&warm, to, 1, &records[0].0, berth_dns::wire::TYPE_A).expect("a first answer");
    assert_eq!(berth_conformance::dns::addresses(&first), vec![IpAddr::V4(records[0].1)], "{server} answers");
    let names: Vec<String> = records.iter().map(|(n, _)| n.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (socket, names) = (socket_in(Some(&host.path()), server.into()), names.clone());
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                let mut i = t as usize;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let answer = ask(&socket, to, i as u16, &names[i % names.len()], berth_dns::wire::TYPE_A);
                    assert!(answer.is_some_and(|a| !a.records.is_empty()), "no answer from {to}");
                    samples.push(start.elapsed());
                    i += 1;
                }
                samples
            })
        })
        .collect();
    let all: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().expect("client")).collect();
    let qps = all.len() as f64 / seconds as f64;
    (qps, percentile(&all, 0.5), percentile(&all, 0.99))
}

fn memory_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn main() {
    berth_conformance::require_root();
    let (count, seconds, clients) = (arg(1, 100), arg(2, 3), arg(3, 2));
    let host = TestHost::new();
    let mut nl = host.netlink();
    let lo = nl.link_by_name("lo").expect("links").expect("lo");
    for at in [BERTH_AT, AARDVARK_AT] {
        nl.add_address(lo.index, ipnet::IpNet::new(at.into(), 32).expect("prefix")).expect("address on lo");
    }
    let records = names(count);
    let berth = start_berth(&host, &records);
    let mut killer = Killer(vec![berth]);
    let aardvark = start_aardvark(&host, &records);
    killer.0.push(aardvark);
    println!("{count} names, {clients} clients one query at a time, {seconds} s per server");
    println!("{:<14} {:>10} {:>10} {:>10} {:>10} {:>10}", "server", "qps", "p50 µs", "p99 µs", "RSS KiB", "peak KiB");
    for (label, at, pid) in [("berth-dns", BERTH_AT, berth), ("aardvark-dns", AARDVARK_AT, aardvark)] {
        let (qps, p50, p99) = load(&host, at, &records, seconds, clients);
        let (rss, peak) = (memory_kib(pid, "VmRSS:"), memory_kib(pid, "VmHWM:"));
        println!("{label:<14} {qps:>10.0} {:>10} {:>10} {rss:>10} {peak:>10}", p50.as_micros(), p99.as_micros());
    }
    drop(killer);
}
