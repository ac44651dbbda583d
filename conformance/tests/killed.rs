//! Every plugin SIGKILLed at any instant of its ADD and of its DEL, then the runtime's DEL or
//! a GC that keeps nothing: nothing of the attachments may be left (links in the host and the
//! containers, firewall entries, IPAM allocations, cached results, DNS records and servers,
//! DHCP leases the keeper renews, Open vSwitch ports). See `berth_conformance::kill`; the
//! seed is printed, `BERTH_KILL_SEED=N` draws the same kill instants (as fractions of each
//! call's duration) again. Needs root (namespaces); the Open vSwitch case boots the kernel lab
//! once (`lab_*`). About 65 s in all, the lab's boot included.

use berth_cni::iface::host_veth_name;
use berth_cni::runtime::Attachment;
use berth_cni::skel::Command;
use berth_cni::spec::ConfList;
use berth_cni::CniError;
use berth_conformance::dns::Servers;
use berth_conformance::dnsmasq::{Dnsmasq, KeeperGuard};
use berth_conformance::kill::{container_round, files_naming, processes_mentioning, Cleanup, KillCase, Phase, Round};
use berth_conformance::plugins::berth_dir;
use berth_conformance::{eventually, lab, TestHost};
use berth_netlink::{MacvlanMode, MacvlanSpec, Netlink, VethPeer};
use berth_netns::NetNs;
use serde_json::{json, Value};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Killed rounds per phase and cleanup: enough to land in most steps of a plugin whose ADD
/// takes a few milliseconds, few enough that this file stays within its CI budget.
const ROUNDS: usize = 10;

const VARIANTS: [(Phase, Cleanup); 4] =
    [(Phase::Add, Cleanup::Del), (Phase::Add, Cleanup::Gc), (Phase::Del, Cleanup::Del), (Phase::Del, Cleanup::Gc)];

fn conflist(name: &str, plugins: Vec<Value>) -> ConfList {
    let raw = json!({"cniVersion": "1.1.0", "name": name, "plugins": plugins});
    serde_json::from_value(raw).expect("conflist")
}

fn host_local(host: &TestHost, ranges: Value) -> Value {
    json!({"type": "berth-host-local", "ranges": ranges, "dataDir": host.dir.path().join("ipam").display().to_string()})
}

fn run_all(case: &KillCase, rounds: usize) {
    for (phase, cleanup) in VARIANTS {
        case.run(phase, cleanup, rounds);
    }
}

fn bridge(host: &TestHost, backend: &str, subnet: u8) -> Value {
    json!({
        "type": "berth-bridge", "bridge": format!("kbr{subnet}"), "isGateway": true, "isDefaultGateway": true,
        "ipMasq": true, "hairpinMode": true, "firewallBackend": backend, "capabilities": {"portMappings": true},
        "ipam": host_local(host, json!([[{"subnet": format!("10.{subnet}.0.0/24")}], [{"subnet": format!("fd00:{subnet}::/64")}]])),
    })
}

/// berth-bridge with its firewall backend: a published port per round, masquerade, IPv4 and
/// IPv6 from berth-host-local. GC runs with the containers still there: it must find the
/// veths by their owner.
fn bridge_case(backend: &str, subnet: u8) {
    let host = TestHost::new();
    let port = Cell::new(7000u16);
    let list = conflist(&format!("kill-{backend}"), vec![bridge(&host, backend, subnet)]);
    let mut case = KillCase::new(format!("berth-bridge {backend}"), &host, list);
    case.new_round = Box::new(|id| {
        let mut round = container_round(&host, id);
        port.set(port.get() + 1);
        let maps = json!([{"hostPort": port.get(), "containerPort": 80, "protocol": "tcp"}]);
        round.attachment.capability_args.insert("portMappings".into(), maps);
        round
    });
    run_all(&case, ROUNDS);
}

#[test]
fn berth_bridge_nftables_killed_at_any_instant() {
    bridge_case("nftables", 71);
}

#[test]
fn berth_bridge_iptables_killed_at_any_instant() {
    bridge_case("iptables-nft", 72);
}

/// berth-macvlan on a master wired to a LAN namespace. A GC round removes the container
/// first: a macvlan lives only there.
#[test]
fn berth_macvlan_killed_at_any_instant() {
    let host = TestHost::new();
    let wire = host.container();
    let wire_ns = NetNs::open(&wire.path).unwrap();
    let mut nl = host.netlink();
    let master = nl.create_veth("kmv0", &VethPeer { name: "lan0", netns: Some(&wire_ns), mac: None }, None, None).unwrap();
    nl.set_up(master.index).unwrap();
    let macvlan = json!({
        "type": "berth-macvlan", "master": "kmv0", "mode": "bridge",
        "ipam": host_local(&host, json!([[{"subnet": "10.73.0.0/24"}]])),
    });
    let mut case = KillCase::new("berth-macvlan", &host, conflist("kill-macvlan", vec![macvlan]));
    case.containers_gone_before_gc = true;
    run_all(&case, ROUNDS);
}

/// The device berth-host-device moves: a veth of the host (its peer stays there), made again
/// when a GC round removed it with the container it was in.
const DEVICE: &str = "kdev0";
const DEVICE_PEER: &str = "kdev0peer";

fn ensure_device(host: &TestHost) {
    let mut nl = host.netlink();
    if nl.link_by_name(DEVICE).unwrap().is_some() {
        return;
    }
    // The peer goes with the removed namespace's veth, in a kernel workqueue.
    let gone = eventually(Duration::from_secs(5), || nl.link_by_name(DEVICE_PEER).unwrap().is_none());
    assert!(gone, "{DEVICE} is missing from the host but its peer is there: a DEL left it in a container");
    nl.create_veth(DEVICE, &VethPeer { name: DEVICE_PEER, netns: None, mac: None }, None, None).expect("device veth");
}

/// berth-host-device moving one host interface in and out. After DEL the interface must be
/// back in the host under its own name, without berth's mark.
#[test]
fn berth_host_device_killed_at_any_instant() {
    let host = TestHost::new();
    let device = json!({
        "type": "berth-host-device", "device": DEVICE,
        "ipam": host_local(&host, json!([[{"subnet": "10.74.0.0/24"}]])),
    });
    let mut case = KillCase::new("berth-host-device", &host, conflist("kill-hostdev", vec![device]));
    case.containers_gone_before_gc = true;
    case.new_round = Box::new(|id| {
        ensure_device(&host);
        container_round(&host, id)
    });
    // Not moved when its ADD was killed early: it stays the host's, without berth's mark.
    case.test_links = vec![DEVICE.into(), DEVICE_PEER.into()];
    case.extra_check = Box::new(|_| device_marks(&host));
    run_all(&case, ROUNDS);
}

/// Host interfaces that still carry berth-host-device's mark (its alias).
fn device_marks(host: &TestHost) -> Vec<String> {
    let links = host.netlink().links_detailed().unwrap();
    links
        .into_iter()
        .filter(|l| l.alias.as_deref().is_some_and(|a| a.starts_with("berth-host-device:")))
        .map(|l| format!("{} in the host still carries the alias {:?}", l.link.name, l.alias))
        .collect()
}

/// berth-bandwidth chained after berth-bridge: the ifb and the qdiscs.
#[test]
fn berth_bandwidth_killed_at_any_instant() {
    let host = TestHost::new();
    let shaping = json!({
        "type": "berth-bandwidth", "ingressRate": 8_000_000, "ingressBurst": 262_144,
        "egressRate": 8_000_000, "egressBurst": 262_144,
    });
    let list = conflist("kill-bandwidth", vec![bridge(&host, "nftables", 75), shaping]);
    run_all(&KillCase::new("berth-bandwidth after berth-bridge", &host, list), ROUNDS);
}

/// berth-dns's entry of a conflist, its data and resolv.conf in `host`'s scratch directory,
/// and the guard that stops the servers it starts.
fn dns_plugin(host: &TestHost) -> (PathBuf, Servers, Value) {
    let data = host.dir.path().join("dns");
    let resolv = host.dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let dns = json!({"type": "berth-dns", "dataDir": data.display().to_string(), "resolvConf": resolv.display().to_string()});
    (data.clone(), Servers { data_dir: data }, dns)
}

/// berth-dns chained after berth-bridge, each container named after its ID: no record may be
/// left, and no server once the network's last record is gone.
#[test]
fn berth_dns_killed_at_any_instant() {
    let host = TestHost::new();
    let (data, _servers, dns) = dns_plugin(&host);
    let data_text = data.display().to_string();
    let list = conflist("kill-dns", vec![bridge(&host, "nftables", 76), dns]);
    let mut case = KillCase::new("berth-dns after berth-bridge", &host, list);
    case.new_round = Box::new(|id| {
        let mut round = container_round(&host, id);
        round.attachment.args = vec![("IgnoreUnknown".into(), "1".into()), ("K8S_POD_NAME".into(), id.into())];
        round
    });
    case.extra_check = Box::new(|_| {
        let running = processes_mentioning(&data_text);
        running.into_iter().map(|pid| format!("DNS server {pid} runs with no record left")).collect()
    });
    run_all(&case, ROUNDS);
}

/// An IPAM plugin run alone, as a runtime would run it: its allocation files.
fn ipam_case(kind: &str, ipam: Value) {
    let host = TestHost::new();
    let mut plugin = json!({"type": kind});
    plugin["ipam"] = ipam;
    let plugin = substitute_data_dir(plugin, &host);
    let list = conflist(&format!("kill-{kind}"), vec![plugin]);
    let mut case = KillCase::new(kind, &host, list);
    // IPAM touches no namespace: the host's stands for the container's.
    case.new_round = Box::new(|id| host_round(&host, id));
    run_all(&case, ROUNDS);
}

fn substitute_data_dir(mut plugin: Value, host: &TestHost) -> Value {
    if plugin["ipam"].get("dataDir").is_some() {
        plugin["ipam"]["dataDir"] = json!(host.dir.path().join("ipam").display().to_string());
    }
    plugin
}

fn host_round(host: &TestHost, id: &str) -> Round {
    Round {
        attachment: Attachment { container_id: id.into(), ifname: "eth0".into(), netns: host.path(), ..Default::default() },
        container: None,
    }
}

#[test]
fn berth_host_local_killed_at_any_instant() {
    ipam_case(
        "berth-host-local",
        json!({"type": "berth-host-local", "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]], "dataDir": ""}),
    );
}

#[test]
fn berth_static_killed_at_any_instant() {
    ipam_case(
        "berth-static",
        json!({"type": "berth-static", "addresses": [{"address": "10.78.0.2/24", "gateway": "10.78.0.1"}]}),
    );
}

/// berth-dhcp as berth-bridge's IPAM plugin, against dnsmasq on the bridge: the bridge's
/// process is killed, and the berth-dhcp it runs with it. After the rounds and their DEL or
/// GC, the keeper holds nothing of them, and dnsmasq lists no lease of theirs: an ADD killed
/// after its REQUEST went out, before the keeper held the lease, left a pending record that
/// the clean-up released.
#[test]
fn berth_dhcp_killed_at_any_instant() {
    let host = TestHost::new();
    let mut nl = host.netlink();
    let bridge = nl.ensure_bridge("kdhbr0", None).unwrap();
    nl.add_address(bridge.index, "10.79.0.1/24".parse().unwrap()).unwrap();
    nl.set_up(bridge.index).unwrap();
    let server_dir = host.dir.path().join("dnsmasq");
    std::fs::create_dir_all(&server_dir).unwrap();
    let keeper = KeeperGuard::new(host.dir.path().join("keeper.sock"));
    let server = Dnsmasq::start(&host.path(), "kdhbr0", "10.79.0.50,10.79.0.250", &server_dir, &[]);
    let ipam = json!({"type": "berth-dhcp", "daemonSocketPath": keeper.socket, "timeout": 3});
    let list = conflist("kill-dhcp", vec![json!({"type": "berth-bridge", "bridge": "kdhbr0", "ipam": ipam})]);
    let mut case = KillCase::new("berth-dhcp under berth-bridge", &host, list);
    case.unscanned = vec![server_dir.clone()];
    run_all(&case, ROUNDS);
    // dnsmasq rewrites its lease file shortly after a release.
    let mut forgotten = Vec::new();
    let released = eventually(Duration::from_secs(5), || {
        forgotten = leased_to(&server);
        forgotten.is_empty()
    });
    assert!(released, "dnsmasq still lists {} lease(s) nobody will release: {forgotten:?}", forgotten.len());
}

/// The container IDs dnsmasq holds leases for, from the client identifiers berth-dhcp sends
/// (`CONTAINER/NETWORK/IFNAME`).
fn leased_to(server: &Dnsmasq) -> Vec<String> {
    let text = std::fs::read_to_string(&server.lease_file).unwrap_or_default();
    let mut ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|hex| hex.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).map(char::from).collect::<String>())
        .map(|client| client.split('/').next().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn berth_host_killed_at_any_instant() {
    let host = TestHost::new();
    let mut case =
        KillCase::new("berth-host", &host, conflist("kill-host", vec![json!({"type": "berth-host", "interfaces": ["lo"]})]));
    case.new_round = Box::new(|id| host_round(&host, id));
    case.run(Phase::Add, Cleanup::Del, ROUNDS);
    case.run(Phase::Del, Cleanup::Gc, ROUNDS);
}

#[test]
fn berth_none_killed_at_any_instant() {
    let host = TestHost::new();
    let mut case = KillCase::new("berth-none", &host, conflist("kill-none", vec![json!({"type": "berth-none"})]));
    case.new_round = Box::new(|id| {
        let mut round = container_round(&host, id);
        round.attachment.ifname = "lo".into();
        round
    });
    case.run(Phase::Add, Cleanup::Del, ROUNDS);
    case.run(Phase::Del, Cleanup::Gc, ROUNDS);
}

/// lab_: berth-ovs in the kernel lab (the openvswitch datapath), one boot for all four
/// variants: no port, interface, veth or allocation may be left. A GC round removes the
/// container first (Open vSwitch keeps the ports of a container that is gone).
#[test]
fn lab_berth_ovs_killed_at_any_instant() {
    if lab::in_lab() {
        return ovs_inside();
    }
    let out = lab::assert_test_passes_inside("lab_berth_ovs_killed_at_any_instant");
    for line in out.stderr.lines().filter(|l| l.starts_with("kill: ")) {
        eprintln!("{line}");
    }
}

/// Rounds in the lab, whose emulated CPU makes every call (and every round) about a hundred
/// times slower: within the file's CI budget.
const LAB_ROUNDS: usize = 4;

fn ovs_inside() {
    let host = TestHost::new();
    let ovs = berth_conformance::ovs::OvsDaemons::start(&host);
    let plugin = json!({
        "type": "berth-ovs", "bridge": "kovs0", "createBridge": true, "ovsdbSocket": ovs.endpoint(), "vlan": 100,
        "ipam": host_local(&host, json!([[{"subnet": "10.80.0.0/24"}]])),
    });
    let mut case = KillCase::new("berth-ovs", &host, conflist("kill-ovs", vec![plugin]));
    case.timing_runs = 2;
    // As after a restart: GC finds the ports of containers that are gone.
    case.containers_gone_before_gc = true;
    case.extra_check = Box::new(|rounds| {
        let ports = ovs.names("Interface");
        let veths: Vec<String> =
            rounds.iter().map(|r| host_veth_name(&r.attachment.container_id, &r.attachment.ifname)).collect();
        ports.into_iter().filter(|p| veths.contains(p)).map(|p| format!("Open vSwitch still has interface {p}")).collect()
    });
    run_all(&case, LAB_ROUNDS);
    ovs_gc_removes_the_ports_it_does_not_keep(&host, &ovs, &case.list);
}

/// Regression (in the same boot): berth-ovs's GC removes the port of an attachment it does
/// not keep, whose container is gone, and releases its address; it had no GC.
fn ovs_gc_removes_the_ports_it_does_not_keep(host: &TestHost, ovs: &berth_conformance::ovs::OvsDaemons, list: &ConfList) {
    let runtime = host.runtime(vec![berth_dir()]);
    let (kept, gone) = (host.container(), host.container());
    for c in [&kept, &gone] {
        runtime.add(list, &attachment(&c.name, &c.path)).expect("ADD");
    }
    host.remove_container(&gone);
    plugin_gc(host, list, &[&kept.name]);
    let interfaces = ovs.names("Interface");
    assert!(interfaces.contains(&host_veth_name(&kept.name, "eth0")), "the kept port stays: {interfaces:?}");
    assert!(!interfaces.contains(&host_veth_name(&gone.name, "eth0")), "the other one is gone: {interfaces:?}");
    let left = files_naming(&host.dir.path().join("ipam"), &[], &[&gone.name]);
    assert!(left.is_empty(), "its address is released: {left:?}");
    runtime.del(list, &attachment(&kept.name, &kept.path)).expect("DEL");
}

// ---- Regressions: the states the kills above left behind, made by hand ----

/// Each plugin of `list` asked for GC directly (not through the runtime, whose GC also DELs
/// the attachments it has cached), keeping `keep`.
fn plugin_gc(host: &TestHost, list: &ConfList, keep: &[&str]) {
    let valid: Vec<Value> = keep.iter().map(|id| json!({"containerID": id, "ifname": "eth0"})).collect();
    for plugin in &list.plugins {
        let mut conf =
            Value::Object(berth_cni::runtime::plugin_config(list, "1.1.0", plugin, &Default::default(), None).unwrap());
        conf["cni.dev/valid-attachments"] = json!(valid);
        let kind = plugin["type"].as_str().unwrap();
        host.call(&[berth_dir()], kind, Command::Gc, "", None, "", &conf).unwrap_or_else(|e| panic!("GC of {kind}: {e}"));
    }
}

/// One plugin of `list` called directly for `id` in `netns`, without prevResult.
fn plugin_call(host: &TestHost, list: &ConfList, command: Command, id: &str, netns: &Path) -> Result<Vec<u8>, CniError> {
    let plugin = &list.plugins[0];
    let conf = Value::Object(berth_cni::runtime::plugin_config(list, "1.1.0", plugin, &Default::default(), None).unwrap());
    host.call(&[berth_dir()], plugin["type"].as_str().unwrap(), command, id, Some(netns), "eth0", &conf)
}

fn attachment(id: &str, netns: &Path) -> Attachment {
    Attachment { container_id: id.into(), ifname: "eth0".into(), netns: netns.to_path_buf(), ..Default::default() }
}

fn link_in(netns: &Path, name: &str) -> Option<berth_netlink::LinkDetail> {
    let mut nl = Netlink::open_in(&NetNs::open(netns).unwrap()).unwrap();
    let link = nl.link_by_name(name).unwrap()?;
    nl.link_detail(link.index).unwrap()
}

/// The runtime's GC DELs the cached attachments it does not keep, as libcni's does: their
/// cached results went on otherwise.
#[test]
fn runtime_gc_dels_the_cached_attachments_it_does_not_keep() {
    let host = TestHost::new();
    let runtime = host.runtime(vec![berth_dir()]);
    let list = conflist("gc-cache", vec![json!({"type": "berth-none"})]);
    let (kept, dropped) = (host.container(), host.container());
    for c in [&kept, &dropped] {
        runtime.add(&list, &attachment(&c.name, &c.path)).expect("ADD");
    }
    runtime.gc(&list, &[(kept.name.clone(), "eth0".into())]).expect("GC");
    assert!(runtime.read_cache(&list.name, &kept.name, "eth0").unwrap().is_some(), "the kept attachment is still cached");
    assert!(runtime.read_cache(&list.name, &dropped.name, "eth0").unwrap().is_none(), "the other one is forgotten");
    assert!(!link_in(&dropped.path, "lo").unwrap().link.up, "berth-none's DEL ran for it (lo is down)");
}

/// berth-macvlan's and berth-host-device's GC release the addresses of the attachments they
/// do not keep (their containers are gone): they had no GC.
#[test]
fn macvlan_and_host_device_gc_release_addresses() {
    let host = TestHost::new();
    let mut nl = host.netlink();
    let master = nl.create_veth("kgc0", &VethPeer { name: "kgc0peer", netns: None, mac: None }, None, None).unwrap();
    nl.set_up(master.index).unwrap();
    nl.create_veth("kgcdev0", &VethPeer { name: "kgcdev0peer", netns: None, mac: None }, None, None).unwrap();
    let runtime = host.runtime(vec![berth_dir()]);
    let ipam = |subnet: &str| host_local(&host, json!([[{"subnet": subnet}]]));
    let lists = [
        conflist("gc-mv", vec![json!({"type": "berth-macvlan", "master": "kgc0", "ipam": ipam("10.81.0.0/24")})]),
        conflist("gc-hd", vec![json!({"type": "berth-host-device", "device": "kgcdev0", "ipam": ipam("10.82.0.0/24")})]),
    ];
    for list in &lists {
        let c = host.container();
        runtime.add(list, &attachment(&c.name, &c.path)).unwrap_or_else(|e| panic!("{} ADD: {e}", list.name));
        host.remove_container(&c);
        assert!(!files_naming(&host.dir.path().join("ipam"), &[], &[&c.name]).is_empty(), "{}: allocated", list.name);
        plugin_gc(&host, list, &[]);
        let left = files_naming(&host.dir.path().join("ipam"), &[], &[&c.name]);
        assert!(left.is_empty(), "{}: GC left {left:?}", list.name);
    }
}

/// A macvlan an ADD killed before its rename left under its temporary name: DEL removes it,
/// and a new ADD replaces it.
#[test]
fn macvlan_left_under_its_temporary_name_is_found() {
    let host = TestHost::new();
    let mut nl = host.netlink();
    let master = nl.create_veth("ktmp0", &VethPeer { name: "ktmp0peer", netns: None, mac: None }, None, None).unwrap();
    nl.set_up(master.index).unwrap();
    let list = conflist("tmp-mv", vec![json!({"type": "berth-macvlan", "master": "ktmp0"})]);
    let c = host.container();
    let stale = berth_macvlan::temporary_name(&c.name, "eth0");
    let leave_stale = |nl: &mut Netlink| {
        let ns = NetNs::open(&c.path).unwrap();
        let spec =
            MacvlanSpec { name: &stale, parent: master.index, mode: MacvlanMode::Bridge, mtu: None, mac: None, netns: Some(&ns) };
        nl.create_macvlan(&spec).expect("the macvlan a killed ADD left");
    };
    leave_stale(&mut nl);
    plugin_call(&host, &list, Command::Del, &c.name, &c.path).expect("DEL");
    assert!(link_in(&c.path, &stale).is_none(), "DEL removed {stale}");
    leave_stale(&mut nl);
    plugin_call(&host, &list, Command::Add, &c.name, &c.path).expect("ADD over a stale macvlan");
    assert!(link_in(&c.path, &stale).is_none() && link_in(&c.path, "eth0").is_some(), "ADD replaced {stale}");
    plugin_call(&host, &list, Command::Del, &c.name, &c.path).expect("DEL");
}

/// berth-host-device keeps its mark on the interface until the interface is back in the
/// host: a DEL killed after the rename leaves it in the container under its host name,
/// marked, and the next DEL gives it back; a mark left on an interface in the host (an ADD
/// killed before the move, a DEL killed after it) goes at the next DEL.
#[test]
fn host_device_del_finishes_what_a_killed_del_began() {
    let host = TestHost::new();
    let list = conflist("mark-hd", vec![json!({"type": "berth-host-device", "device": "kmark0"})]);
    let mut nl = host.netlink();
    let device = nl.create_veth("kmark0", &VethPeer { name: "kmark0peer", netns: None, mac: None }, None, None).unwrap();
    let c = host.container();
    nl.set_alias(device.index, "berth-host-device:kmark0").unwrap();
    nl.move_to_netns(device.index, &NetNs::open(&c.path).unwrap()).unwrap();
    plugin_call(&host, &list, Command::Del, &c.name, &c.path).expect("DEL");
    let back = link_in(&host.path(), "kmark0").expect("kmark0 is back in the host");
    assert_eq!(back.alias, None, "without the mark");

    nl.set_alias(back.link.index, "berth-host-device:kmark0").unwrap();
    plugin_call(&host, &list, Command::Del, &c.name, &c.path).expect("DEL");
    assert_eq!(link_in(&host.path(), "kmark0").unwrap().alias, None, "the mark left in the host is gone");
}

/// berth-bridge's GC removes, from its bridge, a veth with berth's name and no owner yet (an
/// ADD killed right after creating it), and keeps those of the attachments it keeps.
#[test]
fn bridge_gc_removes_a_veth_an_add_killed_before_naming_its_owner() {
    let host = TestHost::new();
    let list = conflist("gc-br", vec![bridge(&host, "nftables", 83)]);
    let runtime = host.runtime(vec![berth_dir()]);
    let (kept, unnamed_kept, killed) = (host.container(), host.container(), host.container());
    runtime.add(&list, &attachment(&kept.name, &kept.path)).expect("ADD");
    let mut nl = host.netlink();
    let bridge = nl.link_by_name("kbr83").unwrap().expect("the network's bridge");
    for c in [&unnamed_kept, &killed] {
        let peer = VethPeer { name: "eth0", netns: Some(&NetNs::open(&c.path).unwrap()), mac: None };
        nl.create_veth(&host_veth_name(&c.name, "eth0"), &peer, None, Some(bridge.index)).unwrap();
    }
    plugin_gc(&host, &list, &[&kept.name, &unnamed_kept.name]);
    for (c, stays) in [(&kept, true), (&unnamed_kept, true), (&killed, false)] {
        let veth = host_veth_name(&c.name, "eth0");
        assert_eq!(nl.link_by_name(&veth).unwrap().is_some(), stays, "{veth} of {}", c.name);
    }
}

/// berth-bandwidth's GC removes an ifb with its name and no owner that nothing redirects to
/// (an ADD killed right after creating it); an ADD that finds such an ifb of its own gives it
/// its owner, so GC then keeps it.
#[test]
fn bandwidth_gc_removes_an_ifb_an_add_killed_before_naming_its_owner() {
    let host = TestHost::new();
    let shaping = json!({"type": "berth-bandwidth", "egressRate": 8_000_000, "egressBurst": 262_144});
    let list = conflist("gc-bw", vec![bridge(&host, "nftables", 84), shaping]);
    let runtime = host.runtime(vec![berth_dir()]);
    let (kept, killed) = (host.container(), host.container());
    let mut nl = host.netlink();
    for c in [&kept, &killed] {
        nl.create_ifb(&berth_bandwidth::ifb_name(&list.name, &c.name, "eth0"), None, "").expect("an ifb without owner");
    }
    runtime.add(&list, &attachment(&kept.name, &kept.path)).expect("ADD");
    plugin_gc(&host, &list, &[&kept.name]);
    let kept_ifb = berth_bandwidth::ifb_name(&list.name, &kept.name, "eth0");
    assert!(link_in(&host.path(), &kept_ifb).is_some_and(|l| l.alias.is_some()), "{kept_ifb} stays, with its owner");
    let killed_ifb = berth_bandwidth::ifb_name(&list.name, &killed.name, "eth0");
    assert!(link_in(&host.path(), &killed_ifb).is_none(), "{killed_ifb} is gone");
}

/// berth-dns removes the records a plugin killed while it saved them left staged (they name
/// its container) when it next holds the network's lock.
#[test]
fn dns_removes_records_a_killed_save_left_staged() {
    let host = TestHost::new();
    let data = host.dir.path().join("dns");
    let _servers = Servers { data_dir: data.clone() };
    let dns = json!({"type": "berth-dns", "dataDir": data.display().to_string()});
    let list = conflist("staged-dns", vec![dns]);
    let staged = data.join("staged-dns").join("records.tmp.4242");
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(&staged, br#"{"listen":[],"entries":[{"containerID":"killed","ifname":"eth0","names":[],"ips":[]}]}"#)
        .unwrap();
    plugin_call(&host, &list, Command::Del, "another", &host.path()).expect("DEL");
    assert!(!staged.exists(), "{} is gone", staged.display());
}

/// A server that no longer listens but still holds the network's address (told to stop by
/// a DEL killed before it waited for it to exit) is waited for: the next ADD's new server
/// binds once it is gone, instead of failing with "address in use".
#[test]
fn dns_waits_for_a_server_on_its_way_out() {
    let host = TestHost::new();
    let (data, _servers, dns) = dns_plugin(&host);
    let list = conflist("leaving-dns", vec![bridge(&host, "nftables", 85), dns]);
    let runtime = host.runtime(vec![berth_dir()]);
    let named = |c: &berth_conformance::Container| {
        let mut att = attachment(&c.name, &c.path);
        att.args = vec![("IgnoreUnknown".into(), "1".into()), ("K8S_POD_NAME".into(), c.name.clone())];
        att
    };
    let (first, second) = (host.container(), host.container());
    runtime.add(&list, &named(&first)).expect("ADD");
    let dir = data.join("leaving-dns");
    let pid: i32 = std::fs::read_to_string(dir.join(berth_dns::store::PID)).unwrap().trim().parse().unwrap();
    std::fs::remove_file(dir.join(berth_dns::store::CONTROL)).unwrap();
    let leaving = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill has no memory-safety preconditions; the pid is the server this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    runtime.add(&list, &named(&second)).expect("ADD while the old server is on its way out");
    leaving.join().unwrap();
    let gateway = "10.85.0.1".parse().unwrap();
    let answer = berth_conformance::dns::query(&second.path, gateway, &first.name, berth_dns::wire::TYPE_A);
    assert!(answer.is_some_and(|a| !a.records.is_empty()), "the new server answers for the first container");
}
