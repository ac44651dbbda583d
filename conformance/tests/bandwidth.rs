//! berth-bandwidth chained after a bridge, as a user sees it: a TCP stream between the
//! container and its host namespace runs at the configured rate in each direction, unshaped
//! without the plugin, at a new rate after a new ADD, at full speed again after DEL; bad
//! configurations are refused naming the field and leave nothing; GC removes the ifbs of
//! attachments it does not keep; the reference conflist with only `type` changed gives the
//! same rates as the reference plugin; container IDs of 300 characters work as short ones;
//! ifbs an earlier release made are found, another attachment's are left alone. Needs root
//! (namespaces) and this kernel's tbf, ingress and ifb; the reference v1.9.1 plugins from
//! /work/shared/ref-plugins for the parity test and the long-ID test.

use berth_cni::runtime::{Attachment, Runtime};
use berth_cni::skel::Command;
use berth_cni::spec::{ConfList, RunResult};
use berth_cni::CniError;
use berth_conformance::plugins::berth_dir;
use berth_conformance::throughput::tcp_bits_per_sec;
use berth_conformance::{Container, TestHost};
use berth_netlink::{Link, Netlink};
use berth_netns::NetNs;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

const INGRESS: u64 = 8_000_000;
const EGRESS: u64 = 20_000_000;
/// 32 KiB: over twenty full packets, a few percent of a second at these rates.
const BURST: u64 = 32 * 1024 * 8;
const WINDOW: Duration = Duration::from_secs(3);
const GATEWAY: &str = "10.23.0.1";
const NETWORK: &str = "bw-net";

fn bridge(kind: &str, ipam: &str, host: &TestHost) -> Value {
    json!({
        "type": kind,
        "bridge": "bwbr0",
        "isGateway": true,
        "ipam": { "type": ipam, "subnet": "10.23.0.0/24", "dataDir": host.dir.path().join("ipam").display().to_string() },
    })
}

fn limits() -> Value {
    json!({ "ingressRate": INGRESS, "ingressBurst": BURST, "egressRate": EGRESS, "egressBurst": BURST })
}

fn conflist(plugins: Vec<Value>) -> ConfList {
    ConfList::from_slice(json!({ "cniVersion": "1.0.0", "name": NETWORK, "plugins": plugins }).to_string().as_bytes())
        .expect("conflist")
}

fn shaped_chain(host: &TestHost, bandwidth: &str) -> ConfList {
    let mut bw = limits();
    bw["type"] = json!(bandwidth);
    conflist(vec![bridge("berth-bridge", "berth-host-local", host), bw])
}

fn attachment(c: &Container) -> Attachment {
    Attachment { container_id: c.name.clone(), ifname: "eth0".into(), netns: c.path.clone(), ..Default::default() }
}

/// (container ingress, container egress) in bits per second, against the gateway's address
/// in the host namespace.
fn rates(host: &TestHost, c: &Container) -> (f64, f64) {
    let cns = NetNs::open(&c.path).expect("container namespace");
    let hns = NetNs::open(host.path()).expect("host namespace");
    let container_ip = container_address(c);
    let gateway: IpAddr = GATEWAY.parse().unwrap();
    let ingress = tcp_bits_per_sec(&hns, &cns, container_ip, WINDOW).expect("host -> container stream");
    let egress = tcp_bits_per_sec(&cns, &hns, gateway, WINDOW).expect("container -> host stream");
    (ingress, egress)
}

fn container_address(c: &Container) -> IpAddr {
    let mut nl = Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
    let eth0 = nl.link_by_name("eth0").unwrap().expect("eth0");
    nl.addresses(Some(eth0.index)).unwrap().iter().map(|(_, a)| a.addr()).find(IpAddr::is_ipv4).expect("an IPv4 address")
}

fn assert_near(measured: f64, configured: u64, what: &str) {
    eprintln!("{what}: {:.2} Mbit/s (configured {:.2})", measured / 1e6, configured as f64 / 1e6);
    let ratio = measured / configured as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{what}: measured {:.2} Mbit/s, configured {:.2} Mbit/s",
        measured / 1e6,
        configured as f64 / 1e6
    );
}

/// Far above what is configured: the stream is not shaped.
fn assert_unshaped(measured: f64, what: &str) {
    assert!(measured > 5.0 * EGRESS as f64, "{what}: {:.1} Mbit/s is not full speed", measured / 1e6);
}

fn host_end(host: &TestHost, c: &Container) -> Link {
    let mut nl = Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
    let peer = nl.link_by_name("eth0").unwrap().expect("eth0").peer_index.expect("a veth");
    host.netlink().link_by_index(peer).unwrap().expect("host end")
}

fn ifbs(host: &TestHost) -> Vec<Link> {
    host.netlink().links().unwrap().into_iter().filter(|l| l.kind.as_deref() == Some("ifb")).collect()
}

/// What the plugin may have left on a host end: a tbf or the ingress qdisc.
fn shaping_left(host: &TestHost, veth: &Link) -> Vec<String> {
    let qdiscs = host.netlink().qdiscs(veth.index).unwrap();
    qdiscs.into_iter().filter(|q| q.kind == "tbf" || q.is_ingress()).map(|q| q.kind).collect()
}

/// One berth-bandwidth call with `conf` (name, cniVersion and `prev` added), as the runtime
/// makes it in a chain.
fn bandwidth_call(host: &TestHost, command: Command, c: &Container, conf: Value, prev: &RunResult) -> Result<Vec<u8>, CniError> {
    call_as(host, "berth-bandwidth", command, &c.name, c, &bandwidth_conf(conf, prev))
}

/// One call of `plugin` for the container `c` under the container ID `id`, made directly:
/// the runtime's result cache names its files after the container ID, which long IDs
/// overflow (a file name holds at most 255 bytes).
fn call_as(host: &TestHost, plugin: &str, command: Command, id: &str, c: &Container, conf: &Value) -> Result<Vec<u8>, CniError> {
    let dirs = [berth_dir(), berth_conformance::plugins::reference_v191_dir()];
    host.call(&dirs, plugin, command, id, Some(&c.path), "eth0", conf)
}

/// The reference bridge's configuration on this network, with `prevResult` when given.
fn reference_bridge_conf(host: &TestHost, prev: Option<&RunResult>) -> Value {
    let mut conf = bridge("bridge", "host-local", host);
    conf["name"] = json!(NETWORK);
    conf["cniVersion"] = json!("1.0.0");
    if let Some(prev) = prev {
        conf["prevResult"] = prev.to_value("1.0.0").unwrap();
    }
    conf
}

/// The chain's two ADDs for `c` under `id`, as the runtime makes them: the bridge's result
/// (prevResult of the others) and berth-bandwidth's. The bridge is the reference one:
/// berth-bridge, too, refuses IDs of 300 characters for now (its veth's alias).
fn add_shaped_as(host: &TestHost, id: &str, c: &Container) -> (RunResult, Result<Vec<u8>, CniError>) {
    let out = call_as(host, "bridge", Command::Add, id, c, &reference_bridge_conf(host, None)).expect("bridge ADD");
    let prev = berth_conformance::parse_result(&out, "1.0.0");
    let shaped = call_as(host, "berth-bandwidth", Command::Add, id, c, &bandwidth_conf(limits(), &prev));
    (prev, shaped)
}

fn bandwidth_conf(conf: Value, prev: &RunResult) -> Value {
    let mut conf = conf;
    conf["type"] = json!("berth-bandwidth");
    conf["name"] = json!(NETWORK);
    conf["cniVersion"] = json!("1.0.0");
    conf["prevResult"] = prev.to_value("1.0.0").unwrap();
    conf
}

fn gc_keeping(host: &TestHost, keep: &[&str]) {
    let valid: Vec<Value> = keep.iter().map(|id| json!({"containerID": id, "ifname": "eth0"})).collect();
    let gc = json!({
        "cniVersion": "1.1.0", "name": NETWORK, "type": "berth-bandwidth", "cni.dev/valid-attachments": valid,
    });
    host.call(&[berth_dir()], "berth-bandwidth", Command::Gc, "", None, "", &gc).expect("GC");
}

/// The names of the ifbs in the host, sorted.
fn ifb_names(host: &TestHost) -> Vec<String> {
    let mut names: Vec<String> = ifbs(host).into_iter().map(|l| l.name).collect();
    names.sort();
    names
}

fn runtime(host: &TestHost, dirs: &[PathBuf]) -> Runtime {
    host.runtime(dirs.to_vec())
}

#[test]
fn shapes_each_direction_reapplies_and_del_restores_full_speed() {
    let host = TestHost::new();
    let rt = runtime(&host, &[berth_dir()]);
    let plain = conflist(vec![bridge("berth-bridge", "berth-host-local", &host)]);
    let shaped = shaped_chain(&host, "berth-bandwidth");

    // Without the plugin: full speed both ways.
    let c0 = host.container();
    rt.add(&plain, &attachment(&c0)).expect("ADD without bandwidth");
    let (i0, e0) = rates(&host, &c0);
    assert_unshaped(i0, "ingress without the plugin");
    assert_unshaped(e0, "egress without the plugin");

    let c = host.container();
    let result = rt.add(&shaped, &attachment(&c)).expect("ADD bridge + bandwidth");
    assert_eq!(ifbs(&host).len(), 1, "one ifb for the container's egress");
    rt.check(&shaped, &attachment(&c)).expect("CHECK");
    let (i, e) = rates(&host, &c);
    assert_near(i, INGRESS, "container ingress");
    assert_near(e, EGRESS, "container egress");

    // A new ADD with other rates applies them in place (the runtime's result as prevResult).
    let swapped = json!({ "ingressRate": EGRESS, "ingressBurst": BURST, "egressRate": INGRESS, "egressBurst": BURST });
    bandwidth_call(&host, Command::Add, &c, swapped, &result).expect("second ADD");
    let (i, e) = rates(&host, &c);
    assert_near(i, EGRESS, "container ingress after the new ADD");
    assert_near(e, INGRESS, "container egress after the new ADD");
    assert_eq!(ifbs(&host).len(), 1, "the ifb is reused");

    // CHECK sees the kernel no longer matching the configuration.
    let err = rt.check(&shaped, &attachment(&c)).expect_err("CHECK against the old rates");
    assert!(err.msg.contains("tbf"), "{err}");

    // berth-bandwidth's DEL alone: full speed again, nothing left, and a second DEL succeeds.
    let veth = host_end(&host, &c);
    bandwidth_call(&host, Command::Del, &c, limits(), &result).expect("DEL");
    assert!(berth_conformance::eventually(Duration::from_secs(5), || ifbs(&host).is_empty()), "the ifb is gone");
    assert_eq!(shaping_left(&host, &veth), Vec::<String>::new());
    let (i, e) = rates(&host, &c);
    assert_unshaped(i, "ingress after DEL");
    assert_unshaped(e, "egress after DEL");
    bandwidth_call(&host, Command::Del, &c, limits(), &result).expect("DEL when already gone");
    rt.del(&shaped, &attachment(&c)).expect("DEL of the chain");
    rt.del(&plain, &attachment(&c0)).expect("DEL of the plain attachment");
}

#[test]
fn bad_input_is_refused_naming_the_field_and_leaves_nothing() {
    let host = TestHost::new();
    let rt = runtime(&host, &[berth_dir()]);
    let c = host.container();
    let prev = rt.add(&conflist(vec![bridge("berth-bridge", "berth-host-local", &host)]), &attachment(&c)).expect("bridge ADD");
    let veth = host_end(&host, &c);
    let cases = [
        (json!({"ingressRate": 0, "ingressBurst": BURST}), "ingressRate"),
        (json!({"egressRate": -8_000_000i64, "egressBurst": BURST}), "egressRate"),
        (json!({"ingressRate": INGRESS, "ingressBurst": 8000}), "ingressBurst"),
        (json!({"ingressRate": INGRESS, "ingressBurst": BURST, "egressRate": EGRESS}), "egressBurst"),
        (
            json!({"runtimeConfig": {"bandwidth": {"egressRate": EGRESS, "egressBurst": 100}}}),
            "runtimeConfig.bandwidth.egressBurst",
        ),
    ];
    for (conf, field) in cases {
        let err = bandwidth_call(&host, Command::Add, &c, conf.clone(), &prev).expect_err(&conf.to_string());
        assert_eq!(err.code, 7, "{conf}: {err}");
        assert!(err.msg.starts_with(field), "{conf}: {}", err.msg);
        assert!(ifbs(&host).is_empty() && shaping_left(&host, &veth).is_empty(), "{conf} left something");
    }

    // No veth in prevResult.
    let mut no_veth = prev.clone();
    no_veth.interfaces.retain(|i| !i.sandbox.is_empty());
    let err = bandwidth_call(&host, Command::Add, &c, limits(), &no_veth).expect_err("no veth");
    assert_eq!(err.code, 7, "{err}");
    assert!(err.msg.contains("prevResult.interfaces"), "{}", err.msg);

    // A failure half-way (the ifb's name is taken) undoes the tbf already set on the host end.
    let taken = berth_bandwidth::ifb_name(NETWORK, &c.name, "eth0");
    let peer = berth_netlink::VethPeer { name: "bwtaken1", netns: None, mac: None };
    host.netlink().create_veth(&taken, &peer, None, None).expect("a veth in the ifb's place");
    let err = bandwidth_call(&host, Command::Add, &c, limits(), &prev).expect_err("the ifb's name is taken");
    assert_eq!(err.code, 100, "{err}");
    assert!(err.msg.contains(&taken), "{}", err.msg);
    assert!(shaping_left(&host, &veth).is_empty(), "the tbf set before the failure is undone");
    rt.del(&conflist(vec![bridge("berth-bridge", "berth-host-local", &host)]), &attachment(&c)).expect("DEL");
}

#[test]
fn gc_removes_the_ifbs_of_attachments_it_does_not_keep() {
    let host = TestHost::new();
    let rt = runtime(&host, &[berth_dir()]);
    let shaped = shaped_chain(&host, "berth-bandwidth");
    let (keep, drop) = (host.container(), host.container());
    let kept_result = rt.add(&shaped, &attachment(&keep)).expect("ADD");
    rt.add(&shaped, &attachment(&drop)).expect("ADD");
    // Another network's ifb is not this GC's to remove.
    let other = host.container();
    let mut other_bridge = bridge("berth-bridge", "berth-host-local", &host);
    other_bridge["bridge"] = json!("bwbr1");
    other_bridge["ipam"]["subnet"] = json!("10.24.0.0/24");
    let mut bw = limits();
    bw["type"] = json!("berth-bandwidth");
    let mut other_chain = conflist(vec![other_bridge, bw]);
    other_chain.name = "bw-other".into();
    rt.add(&other_chain, &attachment(&other)).expect("ADD on another network");
    assert_eq!(ifbs(&host).len(), 3);

    let gc = json!({
        "cniVersion": "1.1.0", "name": NETWORK, "type": "berth-bandwidth",
        "cni.dev/valid-attachments": [{"containerID": keep.name, "ifname": "eth0"}],
    });
    host.call(&[berth_dir()], "berth-bandwidth", Command::Gc, "", None, "", &gc).expect("GC");
    let left: Vec<String> = ifbs(&host).into_iter().map(|l| l.name).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    bandwidth_call(&host, Command::Check, &keep, limits(), &kept_result).expect("the kept attachment is still shaped");
    let err = bandwidth_call(&host, Command::Check, &drop, limits(), &kept_result).expect_err("the dropped one is not");
    assert!(err.msg.contains("ifb"), "{err}");
    assert!(left.contains(&berth_bandwidth::ifb_name("bw-other", &other.name, "eth0")), "{left:?}");
}

/// The reference conflist (reference bridge + host-local + bandwidth v1.9.1), then the same
/// with `bandwidth` changed to `berth-bandwidth`: the same rates.
#[test]
fn the_reference_conflist_with_berth_bandwidth_gives_the_same_rates() {
    let reference = berth_conformance::plugins::reference_v191_dir();
    assert!(reference.join("bandwidth").is_file(), "the reference plugins v1.9.1 are missing from {}", reference.display());
    let host = TestHost::new();
    let rt = runtime(&host, &[berth_dir(), reference]);
    let mut measured = Vec::new();
    for kind in ["bandwidth", "berth-bandwidth"] {
        let mut bw = limits();
        bw["type"] = json!(kind);
        let list = conflist(vec![bridge("bridge", "host-local", &host), bw]);
        let c = host.container();
        rt.add(&list, &attachment(&c)).unwrap_or_else(|e| panic!("{kind} ADD: {e}"));
        let (i, e) = rates(&host, &c);
        assert_near(i, INGRESS, &format!("{kind}: container ingress"));
        assert_near(e, EGRESS, &format!("{kind}: container egress"));
        rt.del(&list, &attachment(&c)).unwrap_or_else(|e| panic!("{kind} DEL: {e}"));
        measured.push((i, e));
    }
    eprintln!(
        "reference / berth (Mbit/s): {:.2}/{:.2} in, {:.2}/{:.2} out",
        measured[0].0 / 1e6,
        measured[1].0 / 1e6,
        measured[0].1 / 1e6,
        measured[1].1 / 1e6
    );
    assert!(ifbs(&host).is_empty(), "both DELs removed their ifb");
}

/// Container IDs of 300 characters (CNI allows any length): two sharing their first 250
/// characters are shaped each on its own ifb, CHECK passes, GC keeps exactly the one it is
/// told to keep and removes the other, then the kept one when it is no longer kept; DEL
/// removes the ifb and the host end's qdiscs. Found by black-box fuzzing: the ifb's alias
/// (at most 255 bytes) held the whole ID and ADD failed with code 100.
#[test]
fn container_ids_of_300_characters_are_shaped_checked_and_collected() {
    let host = TestHost::new();
    let shared = "x".repeat(250);
    let (id_a, id_b) = (format!("{shared}-a{}", "0".repeat(48)), format!("{shared}-b{}", "0".repeat(48)));
    assert_eq!((id_a.len(), id_b.len()), (300, 300));
    let (a, b) = (host.container(), host.container());
    let (prev_a, added_a) = add_shaped_as(&host, &id_a, &a);
    added_a.expect("bandwidth ADD with a 300-character container ID");
    let (prev_b, added_b) = add_shaped_as(&host, &id_b, &b);
    added_b.expect("bandwidth ADD of another ID with the same first 250 characters");
    let (ifb_a, ifb_b) = (berth_bandwidth::ifb_name(NETWORK, &id_a, "eth0"), berth_bandwidth::ifb_name(NETWORK, &id_b, "eth0"));
    let mut both = vec![ifb_a.clone(), ifb_b.clone()];
    both.sort();
    assert_eq!(ifb_names(&host), both, "one ifb each");
    let check = |id: &str, c: &Container, prev: &RunResult| {
        call_as(&host, "berth-bandwidth", Command::Check, id, c, &bandwidth_conf(limits(), prev))
    };
    check(&id_a, &a, &prev_a).expect("CHECK of the first");
    check(&id_b, &b, &prev_b).expect("CHECK of the second");
    let egress =
        tcp_bits_per_sec(&NetNs::open(&a.path).unwrap(), &NetNs::open(host.path()).unwrap(), GATEWAY.parse().unwrap(), WINDOW);
    assert_near(egress.expect("container -> host stream"), EGRESS, "egress of the container with the long ID");

    gc_keeping(&host, &[&id_a]);
    assert_eq!(ifb_names(&host), vec![ifb_a.clone()], "GC kept the first and removed the second");
    check(&id_a, &a, &prev_a).expect("the kept one is still shaped");
    let err = check(&id_b, &b, &prev_b).expect_err("the removed one is not");
    assert!(err.msg.contains(&ifb_b), "{err}");
    gc_keeping(&host, &[&id_b]);
    assert_eq!(ifb_names(&host), Vec::<String>::new(), "GC without the first removed it");

    // ADD again, then DEL: nothing left, and a second DEL succeeds.
    call_as(&host, "berth-bandwidth", Command::Add, &id_a, &a, &bandwidth_conf(limits(), &prev_a)).expect("ADD again");
    assert_eq!(ifb_names(&host), vec![ifb_a]);
    let veth = host_end(&host, &a);
    for attempt in ["DEL", "DEL when already gone"] {
        call_as(&host, "berth-bandwidth", Command::Del, &id_a, &a, &bandwidth_conf(limits(), &prev_a)).expect(attempt);
    }
    assert!(berth_conformance::eventually(Duration::from_secs(5), || ifbs(&host).is_empty()), "the ifb is gone");
    assert_eq!(shaping_left(&host, &veth), Vec::<String>::new());
    for (id, c, prev) in [(&id_a, &a, &prev_a), (&id_b, &b, &prev_b)] {
        call_as(&host, "bridge", Command::Del, id, c, &reference_bridge_conf(&host, Some(prev))).expect("bridge DEL");
    }
}

/// The ifbs of berth-bandwidth before long IDs were labelled (alias written whole, as it
/// still is when it fits): GC keeps and removes them by their owner, DEL finds and removes
/// them without prevResult. A link of the ifb's name that is another attachment's (its alias
/// names another; the names' hashes collide) is refused by ADD, which leaves nothing, and
/// left alone by DEL.
#[test]
fn ifbs_of_earlier_releases_are_found_and_anothers_left_alone() {
    let host = TestHost::new();
    let c = host.container();
    let earlier = |id: &str| {
        let alias = format!("berth-bandwidth net={NETWORK} id={id} if=eth0");
        host.netlink().create_ifb(&berth_bandwidth::ifb_name(NETWORK, id, "eth0"), None, &alias).expect("an earlier ifb");
    };
    let (runtime_id, long_id) = ("0123456789abcdef".repeat(4), "c".repeat(200));
    earlier(&runtime_id);
    earlier(&long_id);
    gc_keeping(&host, &[&runtime_id, &long_id]);
    assert_eq!(ifbs(&host).len(), 2, "GC keeps what it is told to keep");
    gc_keeping(&host, &[&runtime_id]);
    assert_eq!(ifb_names(&host), [berth_bandwidth::ifb_name(NETWORK, &runtime_id, "eth0")], "GC removed the other");
    let mut no_prev = limits();
    no_prev["type"] = json!("berth-bandwidth");
    no_prev["name"] = json!(NETWORK);
    no_prev["cniVersion"] = json!("1.0.0");
    call_as(&host, "berth-bandwidth", Command::Del, &runtime_id, &c, &no_prev).expect("DEL without prevResult");
    assert!(berth_conformance::eventually(Duration::from_secs(5), || ifbs(&host).is_empty()), "DEL removed it");

    let rt = runtime(&host, &[berth_dir()]);
    let plain = conflist(vec![bridge("berth-bridge", "berth-host-local", &host)]);
    let prev = rt.add(&plain, &attachment(&c)).expect("bridge ADD");
    let veth = host_end(&host, &c);
    let name = berth_bandwidth::ifb_name(NETWORK, &c.name, "eth0");
    let anothers = format!("berth-bandwidth net={NETWORK} id=another if=eth0");
    host.netlink().create_ifb(&name, None, &anothers).expect("another's ifb under this name");
    let err = bandwidth_call(&host, Command::Add, &c, limits(), &prev).expect_err("ADD onto another's ifb");
    assert_eq!(err.code, 100, "{err}");
    assert!(err.msg.contains(&name) && err.msg.contains("another"), "{}", err.msg);
    assert!(shaping_left(&host, &veth).is_empty(), "the failed ADD left nothing");
    bandwidth_call(&host, Command::Del, &c, limits(), &prev).expect("DEL");
    let ifb = host.netlink().link_by_name(&name).unwrap().expect("another's ifb stays");
    assert_eq!(host.netlink().link_detail(ifb.index).unwrap().and_then(|d| d.alias), Some(anothers));
    rt.del(&plain, &attachment(&c)).expect("bridge DEL");
}
