//! berth-host-local run as a runtime runs it: the built binary, CNI_* variables, stdin JSON.

mod common;

use berth_cni::spec::SUPPORTED;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn network(version: &str, data_dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("berth-host-local");
    ipam["dataDir"] = json!(data_dir);
    json!({"cniVersion": version, "name": "testnet", "type": "berth-bridge", "ipam": ipam})
}

fn add(conf: &Value, id: &str) -> Outcome {
    run(HOST_LOCAL, Call::new("ADD", id), conf)
}

#[test]
fn every_version_gets_its_result() {
    for version in SUPPORTED {
        let tmp = TempDir::new("versions");
        let resolv = tmp.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.53\nsearch example.com\noptions ndots:2\n").unwrap();
        let conf = network(
            version,
            tmp.path(),
            json!({
                "ranges": [
                    [{"subnet": "10.1.0.0/24", "routes": [{"dst": "10.2.0.0/16"}]}],
                    [{"subnet": "fd00:1::/64", "rangeStart": "fd00:1::10"}]
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:1::1"}],
                "resolvConf": resolv,
            }),
        );
        let out = add(&conf, "c1").result();
        assert_eq!(out["cniVersion"], *version);
        let ips = out["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2, "{out}");
        assert_eq!(ips[0]["address"], "10.1.0.2/24");
        assert_eq!(ips[0]["gateway"], "10.1.0.1");
        assert_eq!(ips[1]["address"], "fd00:1::10/64");
        assert_eq!(ips[1]["gateway"], "fd00:1::1");
        assert!(ips.iter().all(|ip| ip.get("interface").is_none()), "{out}");
        let tagged = version.starts_with("0.");
        assert_eq!(ips[0].get("version").is_some(), tagged, "{version}: {out}");
        if tagged {
            assert_eq!((ips[0]["version"].as_str(), ips[1]["version"].as_str()), (Some("4"), Some("6")));
        }
        let routes: Vec<&str> = out["routes"].as_array().unwrap().iter().map(|r| r["dst"].as_str().unwrap()).collect();
        assert_eq!(routes, ["0.0.0.0/0", "::/0", "10.2.0.0/16"]);
        assert_eq!(out["dns"], json!({"nameservers": ["10.0.0.53"], "search": ["example.com"], "options": ["ndots:2"]}));

        let net_dir = tmp.join("testnet");
        assert_eq!(
            names(&store_files(&net_dir)),
            ["10.1.0.2", "fd00:1::10", "last_reserved_ip.0", "last_reserved_ip.1", "lock"],
            "{version}"
        );
        assert_eq!(std::fs::read_to_string(net_dir.join("10.1.0.2")).unwrap(), "c1\r\neth0");

        // A repeated ADD gets the same addresses back.
        assert_eq!(add(&conf, "c1").addresses(), ["10.1.0.2/24", "fd00:1::10/64"]);
        if *version != "0.3.0" && *version != "0.3.1" {
            assert!(run(HOST_LOCAL, Call::new("CHECK", "c1"), &conf).ok);
            assert_eq!(run(HOST_LOCAL, Call::new("CHECK", "c2"), &conf).code(), 3);
        }
        assert!(run(HOST_LOCAL, Call::new("DEL", "c1"), &conf).result().is_null());
        assert_eq!(names(&store_files(&net_dir)), ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
        assert!(run(HOST_LOCAL, Call::new("DEL", "c1"), &conf).ok, "a second DEL succeeds");
        if *version == "1.1.0" {
            assert!(run(HOST_LOCAL, Call::new("STATUS", ""), &conf).ok);
        }
    }
}

#[test]
fn del_of_an_unknown_network_succeeds_and_creates_nothing() {
    let tmp = TempDir::new("del");
    let conf = network("1.0.0", &tmp.join("data"), json!({"subnet": "10.0.0.0/24"}));
    assert!(run(HOST_LOCAL, Call::new("DEL", "nobody"), &conf).ok);
    assert!(!tmp.join("data").exists());
    // Even with ranges that no longer parse: DEL only needs to know where the store is.
    let broken = network("1.0.0", &tmp.join("data"), json!({"subnet": "10.0.0.0/31"}));
    assert!(run(HOST_LOCAL, Call::new("DEL", "nobody"), &broken).ok);
    assert_eq!(add(&broken, "x").code(), 7);
}

#[test]
fn requested_addresses_from_args_and_capability() {
    let tmp = TempDir::new("requested");
    let conf = network("1.0.0", tmp.path(), json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
    let out = run(HOST_LOCAL, Call::new("ADD", "a").args("IgnoreUnknown=1;IP=10.0.0.40,fd00::40"), &conf);
    assert_eq!(out.addresses(), ["10.0.0.40/24", "fd00::40/64"]);

    let mut with_cap = conf.clone();
    with_cap["runtimeConfig"] = json!({"ips": ["10.0.0.41/24"]});
    assert_eq!(run(HOST_LOCAL, Call::new("ADD", "b"), &with_cap).addresses(), ["10.0.0.41/24", "fd00::41/64"]);

    let mut with_args = conf.clone();
    with_args["args"] = json!({"cni": {"ips": ["10.0.0.40"]}});
    let taken = run(HOST_LOCAL, Call::new("ADD", "c"), &with_args);
    assert_eq!(taken.code(), 7);
    assert!(taken.msg().contains("10.0.0.40 is already allocated to container a (eth0)"), "{}", taken.msg());

    let outside = run(HOST_LOCAL, Call::new("ADD", "d").args("IP=192.168.1.1"), &conf);
    assert_eq!(outside.code(), 7);
    assert!(outside.msg().contains("192.168.1.1") && outside.msg().contains("not in any range"), "{}", outside.msg());
    // The failures left nothing behind.
    let held: Vec<String> =
        store_files(&tmp.join("testnet")).into_iter().map(|(n, _)| n).filter(|n| n.parse::<IpAddr>().is_ok()).collect();
    assert_eq!(held, ["10.0.0.40", "10.0.0.41", "fd00::40", "fd00::41"]);
}

#[test]
fn sixty_four_concurrent_adds_get_distinct_addresses() {
    let tmp = TempDir::new("concurrent");
    let conf = network("1.0.0", tmp.path(), json!({"subnet": "10.20.0.0/24"}));
    let ids: Vec<String> = (0..64).map(|i| format!("ctr{i}")).collect();
    let children: Vec<_> = ids.iter().map(|id| spawn(HOST_LOCAL, Call::new("ADD", id), &conf)).collect();
    let mut seen = HashSet::new();
    for (id, child) in ids.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{id}: {stdout}");
        let v: Value = serde_json::from_str(&stdout).unwrap();
        let addr = v["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(seen.insert(addr.clone()), "{addr} handed out twice");
    }
    assert_eq!(seen.len(), 64);
    let files = store_files(&tmp.join("testnet"));
    let owners: HashSet<&str> = files.iter().filter(|(n, _)| n.parse::<IpAddr>().is_ok()).map(|(_, c)| c.as_str()).collect();
    assert_eq!(owners.len(), 64);
    assert!(ids.iter().all(|id| owners.contains(format!("{id}\r\neth0").as_str())));
}

#[test]
fn concurrent_adds_beyond_capacity_fail_cleanly() {
    let tmp = TempDir::new("overflow");
    // .2 ..= .14: 13 addresses for 24 containers.
    let conf = network("1.0.0", tmp.path(), json!({"subnet": "10.21.0.0/28"}));
    let children: Vec<_> = (0..24).map(|i| spawn(HOST_LOCAL, Call::new("ADD", &format!("c{i}")), &conf)).collect();
    let outcomes: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let ok = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 13);
    for o in outcomes.iter().filter(|o| !o.status.success()) {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["code"], 50, "{v}");
    }
    let addresses = store_files(&tmp.join("testnet")).into_iter().filter(|(n, _)| n.parse::<IpAddr>().is_ok()).count();
    assert_eq!(addresses, 13);
}

/// Tiny deterministic generator, seeded per run and printed so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What a SIGKILLed ADD may leave: complete allocation files of the killed containers, the
/// lock, temporary files (garbage until the next DEL or GC), owner indexes, and round-robin
/// cursors that may be torn (written in place, as the reference does; a torn one reads as
/// none and only restarts the round robin).
fn assert_store_parseable(dir: &Path, ids: &HashSet<String>) {
    for (name, content) in store_files(dir) {
        if name == "lock" || name.starts_with(".tmp-") {
            continue;
        }
        if let Some(set) = name.strip_prefix("last_reserved_ip.") {
            assert!(set.parse::<usize>().is_ok(), "{name}");
            continue;
        }
        assert!(name.parse::<IpAddr>().is_ok(), "unexpected file {name}");
        let (id, ifname) = content.split_once("\r\n").unwrap_or_else(|| panic!("{name} holds {content:?}"));
        assert!(ids.contains(id) && ifname == "eth0", "{name} holds {content:?}");
    }
}

#[test]
fn adds_killed_at_random_instants_leave_a_store_del_and_gc_can_empty() {
    let tmp = TempDir::new("sigkill");
    let conf = network("1.1.0", tmp.path(), json!({"ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "fd30::/64"}]]}));
    let dir = tmp.join("testnet");

    // How long an ADD takes here, so the kills spread over a whole run.
    let started = Instant::now();
    add(&conf, "probe").result();
    let span = (started.elapsed().as_micros() as u64 * 3 / 2).max(500);
    assert!(run(HOST_LOCAL, Call::new("DEL", "probe"), &conf).ok);

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("sigkill test: seed {seed}, kills within {span} µs");
    let mut rng = XorShift(seed);
    let mut ids = HashSet::new();
    let (mut killed, mut finished, mut leftovers) = (0, 0, 0);
    for round in 0..8 {
        let batch: Vec<String> = (0..16).map(|i| format!("k{round}-{i}")).collect();
        let mut kills: Vec<(u64, usize)> = (0..batch.len()).map(|i| (rng.next() % span, i)).collect();
        kills.sort();
        let t0 = Instant::now();
        let mut children: Vec<_> = batch.iter().map(|id| spawn(HOST_LOCAL, Call::new("ADD", id), &conf)).collect();
        for (at, i) in kills {
            let deadline = t0 + Duration::from_micros(at);
            if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = children[i].kill(); // SIGKILL; a finished child is simply reaped below
        }
        for mut c in children {
            match c.wait().unwrap().signal() {
                Some(_) => killed += 1,
                None => finished += 1,
            }
        }
        ids.extend(batch);
        leftovers += store_files(&dir).iter().filter(|(n, _)| n.starts_with(".tmp-")).count();
        assert_store_parseable(&dir, &ids);
    }
    eprintln!("sigkill test: {killed} killed, {finished} finished, {leftovers} temporary files left by kills");
    assert!(killed > 0, "no ADD was killed: the delays are too long");

    // The store still works, and the survivor is not touched by the cleanup below.
    let survivor = add(&conf, "survivor").addresses();
    assert_eq!(survivor.len(), 2);

    // DEL half of the killed containers, GC the rest away.
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    for id in sorted.iter().step_by(2) {
        assert!(run(HOST_LOCAL, Call::new("DEL", id), &conf).ok);
    }
    let files = store_files(&dir);
    assert!(!files.iter().any(|(n, _)| n.starts_with(".tmp-")), "DEL swept what the kills left");
    for id in sorted.iter().step_by(2) {
        assert!(!files.iter().any(|(_, c)| c == &format!("{id}\r\neth0")), "{id} survived its DEL");
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "survivor", "ifname": "eth0"}]);
    assert!(run(HOST_LOCAL, Call::new("GC", ""), &gc).ok);
    let left: Vec<(String, String)> = store_files(&dir).into_iter().filter(|(n, _)| n.parse::<IpAddr>().is_ok()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|(_, c)| c == "survivor\r\neth0"), "{left:?}");
    assert!(run(HOST_LOCAL, Call::new("DEL", "survivor"), &conf).ok);
    assert_eq!(names(&store_files(&dir)), ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
}

#[test]
fn gc_keeps_exactly_the_valid_attachments() {
    let tmp = TempDir::new("gc");
    let conf = network("1.1.0", tmp.path(), json!({"subnet": "10.40.0.0/24"}));
    for id in ["a", "b", "c"] {
        add(&conf, id).result();
    }
    run(HOST_LOCAL, Call::new("ADD", "b").ifname("net1"), &conf).result();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "b", "ifname": "eth0"},
        {"containerID": "c", "ifname": "eth0"},
        {"containerID": "gone", "ifname": "eth0"}
    ]);
    assert!(run(HOST_LOCAL, Call::new("GC", ""), &gc).ok);
    let owners: Vec<String> = store_files(&tmp.join("testnet"))
        .into_iter()
        .filter(|(n, _)| n.parse::<IpAddr>().is_ok())
        .map(|(n, c)| format!("{n}={}", c.replace("\r\n", "/")))
        .collect();
    assert_eq!(owners, ["10.40.0.3=b/eth0", "10.40.0.4=c/eth0"]);

    // GC without the list is refused rather than taken as "nothing is valid".
    let refused = run(HOST_LOCAL, Call::new("GC", ""), &conf);
    assert_eq!(refused.code(), 7);
    assert!(refused.msg().contains("cni.dev/valid-attachments"), "{}", refused.msg());
    // GC needs CNI 1.1.
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    assert_eq!(run(HOST_LOCAL, Call::new("GC", ""), &old).code(), 1);
}

#[test]
fn status_reports_an_exhausted_range_with_code_50() {
    let tmp = TempDir::new("status");
    // A /30 has one address to hand out: .1 is the gateway, .0 and .3 network and broadcast.
    let conf = network("1.1.0", tmp.path(), json!({"ranges": [[{"subnet": "10.50.0.0/24"}], [{"subnet": "10.51.0.0/30"}]]}));
    assert!(run(HOST_LOCAL, Call::new("STATUS", ""), &conf).ok, "no store yet: everything is free");
    assert_eq!(add(&conf, "a").addresses(), ["10.50.0.2/24", "10.51.0.2/30"]);

    let status = run(HOST_LOCAL, Call::new("STATUS", ""), &conf);
    assert_eq!(status.code(), 50);
    assert!(status.msg().contains("range set 1") && status.msg().contains("10.51.0.0/30"), "{}", status.msg());
    // ADD agrees, and takes nothing from the first set.
    assert_eq!(add(&conf, "b").code(), 50);
    assert_eq!(store_files(&tmp.join("testnet")).iter().filter(|(n, _)| n.parse::<IpAddr>().is_ok()).count(), 2);

    assert!(run(HOST_LOCAL, Call::new("DEL", "a"), &conf).ok);
    assert!(run(HOST_LOCAL, Call::new("STATUS", ""), &conf).ok);

    // Exclusions can exhaust a range too.
    let excluded = network("1.1.0", &tmp.join("other"), json!({"subnet": "10.52.0.0/30", "exclude": ["10.52.0.2"]}));
    assert_eq!(run(HOST_LOCAL, Call::new("STATUS", ""), &excluded).code(), 50);
}

#[test]
fn configuration_errors_are_code_7_naming_the_field() {
    let tmp = TempDir::new("badconf");
    for (ipam, field) in [
        (json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.9"}]]}), "ipam.ranges[0][0].rangeEnd"),
        (json!({"subnet": "not-a-subnet"}), "ipam.subnet"),
        (json!({"ranges": [[{"subnet": "10.0.0.0/24", "exclude": ["10.0.0.x"]}]]}), "ipam.ranges[0][0].exclude[0]"),
    ] {
        let out = add(&network("1.0.0", tmp.path(), ipam), "a");
        assert_eq!(out.code(), 7);
        assert!(out.msg().starts_with(field), "{}", out.msg());
    }
}
