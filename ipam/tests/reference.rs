//! berth-host-local and berth-static side by side with the reference plugins
//! (containernetworking/plugins, /usr/lib/cni): same configuration, same calls, same answers,
//! same files on disk.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

enum Op<'a> {
    Add(&'a str),
    AddWith(&'a str, &'a str),
    Del(&'a str),
}

/// What a caller sees of an ADD: success, and on success the addresses, routes and DNS.
fn visible(out: &Outcome) -> Value {
    if !out.ok {
        return json!("error");
    }
    let v = out.json();
    let ips: Vec<Value> = v["ips"].as_array().unwrap().iter().map(|ip| json!([ip["address"], ip["gateway"]])).collect();
    let dns = if v["dns"].is_null() { json!({}) } else { v["dns"].clone() };
    json!({"ips": ips, "routes": v.get("routes").cloned().unwrap_or(json!([])), "dns": dns})
}

/// The store without the lock file (the reference creates it with other permissions).
fn store(dir: &Path) -> Vec<(String, String)> {
    store_files(&dir.join("refnet")).into_iter().filter(|(n, _)| n != "lock").collect()
}

/// Runs `ops` on both plugins, each in its own data directory, comparing after every step.
/// Returns berth's ADD outputs, for further checks.
fn compare(ipam: Value, ops: &[Op]) -> Vec<Value> {
    let reference = require_reference(REF_HOST_LOCAL);
    let (ref_dir, our_dir) = (TempDir::new("ref"), TempDir::new("ours"));
    let conf_in = |dir: &TempDir| {
        let mut ipam = ipam.clone();
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(dir.path());
        let mut conf = json!({"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "ipam": ipam});
        // Top-level keys ride in `ipam` here, to keep one argument.
        for key in ["runtimeConfig", "args"] {
            if let Some(v) = conf["ipam"].as_object_mut().and_then(|i| i.remove(key)) {
                conf[key] = v;
            }
        }
        conf
    };
    let (ref_conf, our_conf) = (conf_in(&ref_dir), conf_in(&our_dir));
    let mut outputs = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let call = match *op {
            Op::Add(id) => Call::new("ADD", id),
            Op::AddWith(id, args) => Call::new("ADD", id).args(args),
            Op::Del(id) => Call::new("DEL", id),
        };
        let theirs = run(reference, call, &ref_conf);
        let ours = run(HOST_LOCAL, call, &our_conf);
        assert_eq!(ours.ok, theirs.ok, "step {step}: reference {} / berth {}", theirs.stdout, ours.stdout);
        if call.command == "ADD" {
            assert_eq!(visible(&ours), visible(&theirs), "step {step}: results differ");
            outputs.push(visible(&ours));
        }
        assert_eq!(store(our_dir.path()), store(ref_dir.path()), "step {step}: stores differ");
    }
    outputs
}

#[test]
fn legacy_range_round_robin_wrap_and_exhaustion() {
    use Op::*;
    let outputs = compare(
        json!({"subnet": "10.60.0.0/29"}),
        &[
            Add("a"),
            Add("b"),
            Add("c"),
            Add("d"),
            Add("e"),
            Add("f"), // full
            Del("c"),
            Add("f"), // wraps around to .4
            Del("a"),
            Del("nobody"),
            Add("g"),
            Add("h"),
            Del("b"),
            Del("d"),
            Del("e"),
            Del("f"),
            Del("g"),
        ],
    );
    assert_eq!(outputs[0]["ips"], json!([["10.60.0.2/29", "10.60.0.1"]]));
}

#[test]
fn range_sets_with_custom_bounds_gateways_routes_and_dns() {
    use Op::*;
    let tmp = TempDir::new("resolv");
    let resolv = tmp.join("resolv.conf");
    std::fs::write(
        &resolv,
        "domain example.org\nnameserver 10.0.0.53\nnameserver 10.0.0.54\nsearch a.example b.example\noptions rotate\n",
    )
    .unwrap();
    compare(
        json!({
            "ranges": [
                [
                    {"subnet": "10.61.0.0/24", "rangeStart": "10.61.0.5", "rangeEnd": "10.61.0.8", "gateway": "10.61.0.6"},
                    {"subnet": "10.61.1.0/24", "rangeStart": "10.61.1.253"}
                ],
                [{"subnet": "fd61::/120", "rangeStart": "fd61::fa"}]
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.61.0.6"}, {"dst": "::/0"}],
            "resolvConf": resolv,
        }),
        &[
            Add("a"),
            Add("b"),
            Add("c"),
            Add("d"),
            Add("e"),
            Add("f"),
            Add("g"), // the IPv6 set (6 addresses) is full: nothing is kept from the first set
            Del("b"),
            Add("g"),
            Del("e"),
            Del("a"),
            Add("h"),
            Add("i"),
        ],
    );
}

#[test]
fn ipv6_legacy_range() {
    use Op::*;
    compare(
        json!({"subnet": "2001:db8:1::/64", "rangeStart": "2001:db8:1::fffe", "rangeEnd": "2001:db8:1::1:2", "gateway": "2001:db8:1::1:0"}),
        &[Add("a"), Add("b"), Add("c"), Del("a"), Add("d"), Add("e"), Add("f"), Add("g")],
    );
}

#[test]
fn requested_addresses() {
    use Op::*;
    compare(
        json!({"ranges": [[{"subnet": "10.62.0.0/24"}], [{"subnet": "fd62::/64"}]]}),
        &[
            AddWith("a", "IP=10.62.0.50"),
            AddWith("b", "IP=10.62.0.50"), // taken: fails
            AddWith("c", "IP=10.62.0.1"),  // the gateway: fails
            AddWith("d", "IP=fd62::1:0"),
            Add("e"),
            Del("a"),
            AddWith("f", "IP=10.62.0.50"),
        ],
    );
    for (key, value) in [("runtimeConfig", json!({"ips": ["10.63.0.77/24"]})), ("args", json!({"cni": {"ips": ["10.63.0.77"]}}))]
    {
        let mut ipam = json!({"ranges": [[{"subnet": "10.62.0.0/24"}], [{"subnet": "10.63.0.0/24"}]]});
        ipam[key] = value;
        compare(ipam, &[Add("a"), Del("a"), Add("b")]);
    }
}

/// A deliberate difference: a requested address outside every range fails before anything is
/// reserved, so the round-robin cursors stay where they were (the reference allocates from the
/// other range sets first, then releases, leaving their cursors moved).
#[test]
fn requested_address_outside_every_range_fails_early() {
    let reference = require_reference(REF_HOST_LOCAL);
    let (ref_dir, our_dir) = (TempDir::new("outside-ref"), TempDir::new("outside-ours"));
    let conf = |dir: &TempDir| {
        json!({"cniVersion": "1.0.0", "name": "refnet",
            "ipam": {"type": "host-local", "subnet": "10.67.0.0/24", "dataDir": dir.path()}})
    };
    let theirs = run(reference, Call::new("ADD", "a").args("IP=10.99.0.1"), &conf(&ref_dir));
    assert!(!theirs.ok && theirs.stdout.contains("10.99.0.1"), "{}", theirs.stdout);
    assert_eq!(names(&store(ref_dir.path())), ["last_reserved_ip.0"]);
    let ours = run(HOST_LOCAL, Call::new("ADD", "a").args("IP=10.99.0.1"), &conf(&our_dir));
    assert_eq!(ours.code(), 7);
    assert!(ours.msg().contains("10.99.0.1"), "{}", ours.msg());
    assert!(!our_dir.join("refnet").exists());
}

#[test]
fn the_two_plugins_share_a_store() {
    let reference = require_reference(REF_HOST_LOCAL);
    let dir = TempDir::new("shared");
    let conf = json!({"cniVersion": "1.0.0", "name": "refnet", "type": "bridge",
        "ipam": {"type": "host-local", "subnet": "10.65.0.0/24", "dataDir": dir.path()}});
    let mut got = Vec::new();
    for (i, plugin) in [reference, HOST_LOCAL, reference, HOST_LOCAL].into_iter().enumerate() {
        got.extend(run(plugin, Call::new("ADD", &format!("c{i}")), &conf).addresses());
    }
    assert_eq!(got, ["10.65.0.2/24", "10.65.0.3/24", "10.65.0.4/24", "10.65.0.5/24"]);
    // Each releases, and checks, what the other allocated.
    assert!(run(HOST_LOCAL, Call::new("CHECK", "c0"), &conf).ok);
    assert!(run(reference, Call::new("CHECK", "c1"), &conf).ok);
    assert!(run(HOST_LOCAL, Call::new("DEL", "c0"), &conf).ok);
    assert!(run(reference, Call::new("DEL", "c1"), &conf).ok);
    assert!(!run(reference, Call::new("CHECK", "c0"), &conf).ok);
    assert_eq!(run(HOST_LOCAL, Call::new("CHECK", "c1"), &conf).code(), 3);
    let left: Vec<String> = store(dir.path()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(left, ["10.65.0.4", "10.65.0.5", "last_reserved_ip.0"]);
}

/// A deliberate difference: the reference refuses a second ADD for the same container and
/// interface; berth hands back what the container already holds.
#[test]
fn repeated_add_differs_deliberately() {
    let reference = require_reference(REF_HOST_LOCAL);
    let dir = TempDir::new("repeat");
    let conf = json!({"cniVersion": "1.0.0", "name": "refnet",
        "ipam": {"type": "host-local", "subnet": "10.66.0.0/24", "dataDir": dir.path()}});
    assert_eq!(run(reference, Call::new("ADD", "a"), &conf).addresses(), ["10.66.0.2/24"]);
    assert!(!run(reference, Call::new("ADD", "a"), &conf).ok);
    assert_eq!(run(HOST_LOCAL, Call::new("ADD", "a"), &conf).addresses(), ["10.66.0.2/24"]);
}

fn static_conf(ipam: Value, runtime: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("static");
    json!({"cniVersion": "1.0.0", "name": "staticnet", "type": "bridge", "ipam": ipam, "runtimeConfig": runtime})
}

#[test]
fn static_matches_the_reference() {
    let reference = require_reference(REF_STATIC);
    let ipam = json!({
        "addresses": [{"address": "10.70.0.5/24", "gateway": "10.70.0.1"}, {"address": "fd70::5/64"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.71.0.0/16", "gw": "10.70.0.254"}],
        "dns": {"nameservers": ["10.70.0.53"], "domain": "example.net", "search": ["example.net"], "options": ["ndots:3"]}
    });
    let cases = [
        (static_conf(ipam.clone(), json!({})), "", true),
        (static_conf(ipam.clone(), json!({})), "IP=10.72.0.9/16,fd72::9/64;GATEWAY=10.72.0.1", true),
        (static_conf(ipam.clone(), json!({"ips": ["10.73.0.3/24"]})), "", true),
        (static_conf(json!({"addresses": [{"address": "10.74.0.1"}]}), json!({})), "", false),
        (static_conf(json!({"addresses": [{"address": "10.74.0.1/24", "gateway": "bogus"}]}), json!({})), "", false),
        (static_conf(ipam.clone(), json!({})), "IP=10.72.0.9", false),
    ];
    for (conf, args, ok) in cases {
        let theirs = run(reference, Call::new("ADD", "s1").args(args), &conf);
        let ours = run(STATIC, Call::new("ADD", "s1").args(args), &conf);
        assert_eq!(visible(&ours), visible(&theirs), "{conf} {args}: reference {} / berth {}", theirs.stdout, ours.stdout);
        assert_eq!(ours.ok, ok, "{conf} {args}: {}", ours.stdout);
        if !ours.ok {
            assert_eq!(ours.code(), 7);
        }
    }
    let mut with_args = static_conf(ipam, json!({}));
    with_args["args"] = json!({"cni": {"ips": ["10.75.0.2/24"]}});
    let theirs = run(reference, Call::new("ADD", "s1"), &with_args);
    let ours = run(STATIC, Call::new("ADD", "s1"), &with_args);
    assert_eq!(visible(&ours), visible(&theirs));
    assert!(run(STATIC, Call::new("DEL", "s1"), &with_args).ok);
}
