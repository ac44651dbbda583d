//! berth-macvlan, and the reference macvlan plugin (v1.1.1) through the same assertions
//! where it has the feature. Needs root: everything happens in throwaway namespaces.
//!
//! The master is one end of a veth pair in the test host (this machine's kernel has no
//! dummy); the other end is in a "wire" namespace standing for the LAN, with an address of
//! its own. Tests named `lab_*` run inside the kernel lab (802.1q is not in this kernel).

use berth_conformance::lab;
use berth_conformance::plugins::PluginSet;
use berth_conformance::{eventually, parse_result, versions_of, Container, TestHost};
use berth_netlink::{LinkDetail, MacvlanMode, MacvlanSpec, Netlink, RouteEntry, VethPeer};
use berth_netns::NetNs;
use berth_cni::skel::Command;
use berth_cni::spec::{RunResult, Version};
use berth_cni::CniError;
use ipnet::IpNet;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

const MASTER: &str = "mvpar0";
const WIRE_IF: &str = "mvwire0";
const SUBNET: &str = "10.40.0.0/24";
/// The LAN's own machine, at the far end of the master's wire.
const WIRE_ADDR: &str = "10.40.0.250";
const HOST_ADDR: &str = "10.40.0.1/24";

/// A macvlan plugin and the host-local IPAM that goes with it.
#[derive(Debug, Clone)]
struct Plugins {
    label: &'static str,
    dir: PathBuf,
    macvlan: &'static str,
    host_local: &'static str,
}

impl Plugins {
    fn berth() -> Plugins {
        let set = PluginSet::berth();
        assert!(set.dir.join("berth-macvlan").is_file(), "build berth-macvlan first: cargo build --workspace --bins");
        Plugins { label: "berth", dir: set.dir, macvlan: "berth-macvlan", host_local: set.host_local }
    }
    fn reference() -> Plugins {
        let set = PluginSet::reference();
        Plugins { label: "reference", dir: set.dir, macvlan: "macvlan", host_local: set.host_local }
    }
    fn both() -> [Plugins; 2] {
        [Plugins::berth(), Plugins::reference()]
    }
    fn cni_path(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}

/// A test host whose interface `MASTER` is wired to a LAN namespace holding `WIRE_ADDR`.
struct Lan {
    host: TestHost,
    wire: Container,
}

impl Lan {
    fn new() -> Lan {
        let host = TestHost::new();
        let wire = host.container();
        let wire_ns = NetNs::open(&wire.path).unwrap();
        let mut hnl = host.netlink();
        let master = hnl
            .create_veth(MASTER, &VethPeer { name: WIRE_IF, netns: Some(&wire_ns), mac: None }, None, None)
            .expect("veth for the master");
        hnl.set_up(master.index).unwrap();
        let mut wnl = Netlink::open_in(&wire_ns).unwrap();
        let wire_if = wnl.link_by_name(WIRE_IF).unwrap().expect("wire end");
        wnl.add_address(wire_if.index, format!("{WIRE_ADDR}/24").parse().unwrap()).unwrap();
        wnl.set_up(wire_if.index).unwrap();
        Lan { host, wire }
    }

    fn conf(&self, set: &Plugins, version: &str, mode: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "mvnet",
            "type": set.macvlan,
            "master": MASTER,
            "mode": mode,
            "ipam": {
                "type": set.host_local,
                "subnet": SUBNET,
                "rangeStart": "10.40.0.10",
                "rangeEnd": "10.40.0.99",
                "gateway": "10.40.0.1",
                "dataDir": self.host.dir.path().join("ipam").display().to_string(),
            },
        })
    }

    fn call(&self, set: &Plugins, command: Command, c: &Container, conf: &Value) -> Result<Vec<u8>, CniError> {
        self.host.call(&set.cni_path(), set.macvlan, command, &c.name, Some(&c.path), "eth0", conf)
    }

    fn add(&self, set: &Plugins, c: &Container, conf: &Value) -> RunResult {
        let version = conf["cniVersion"].as_str().unwrap();
        let out = self.call(set, Command::Add, c, conf).unwrap_or_else(|e| panic!("{} ADD {version}: {e}", set.label));
        parse_result(&out, version)
    }

    fn del(&self, set: &Plugins, c: &Container, conf: &Value) {
        self.call(set, Command::Del, c, conf).unwrap_or_else(|e| panic!("{} DEL: {e}", set.label));
    }

    fn ipam_allocations(&self) -> Vec<String> {
        let dir = self.host.dir.path().join("ipam").join("mvnet");
        let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.parse::<IpAddr>().is_ok()).collect()
    }

    fn wire_addr() -> IpAddr {
        WIRE_ADDR.parse().unwrap()
    }
}

fn netlink_of(c: &Container) -> Netlink {
    Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap()
}

/// eth0 in the container, with what the kernel says about its parent and mode.
fn eth0(c: &Container) -> Option<LinkDetail> {
    let mut nl = netlink_of(c);
    let link = nl.link_by_name("eth0").unwrap()?;
    nl.link_detail(link.index).unwrap()
}

/// Whether the container's eth0 is a macvlan of `parent` in `parent_ns`, in `mode`.
fn is_macvlan_of(c: &Container, parent_ns: &NetNs, parent: &str, mode: MacvlanMode) -> bool {
    let Some(detail) = eth0(c) else { return false };
    let parent_index = Netlink::open_in(parent_ns).unwrap().link_by_name(parent).unwrap().map(|l| l.index);
    let nsid = netlink_of(c).nsid_of(parent_ns).unwrap();
    detail.link.kind.as_deref() == Some("macvlan")
        && detail.link.up
        && detail.macvlan_mode == Some(mode)
        && detail.parent == parent_index
        && detail.parent_netnsid == nsid
}

fn address_of(result: &RunResult, c: &Container) -> IpNet {
    let ip = result.ips.first().expect("an address");
    let iface = &result.interfaces[ip.interface.expect("ips name their interface")];
    assert_eq!(iface.name, "eth0");
    assert_eq!(iface.sandbox, c.path.display().to_string());
    ip.address
}

fn run_suite(set: Plugins) {
    let versions = versions_of(&set.dir.join(set.macvlan));
    assert!(versions.len() >= 4, "{} speaks too few versions: {versions:?}", set.label);
    for version in versions {
        let lan = Lan::new();
        let (c1, c2) = (lan.host.container(), lan.host.container());
        let conf = lan.conf(&set, version, "bridge");
        let r1 = lan.add(&set, &c1, &conf);
        let r2 = lan.add(&set, &c2, &conf);
        let (a1, a2) = (address_of(&r1, &c1), address_of(&r2, &c2));
        let subnet: IpNet = SUBNET.parse().unwrap();
        assert!(subnet.contains(&a1.addr()) && subnet.contains(&a2.addr()) && a1 != a2, "{a1} {a2}");

        // What the kernel holds: a macvlan of the host's master, up, with the address.
        assert!(is_macvlan_of(&c1, &lan.host.ns, MASTER, MacvlanMode::Bridge), "{} {version}: {:?}", set.label, eth0(&c1));
        let mut c1nl = netlink_of(&c1);
        let link = c1nl.link_by_name("eth0").unwrap().unwrap();
        assert!(c1nl.addresses(Some(link.index)).unwrap().iter().any(|(_, a)| *a == a1));
        assert_eq!(r1.interfaces[0].mac, link.mac.unwrap().to_string(), "the result reports the MAC");

        // What a user sees: the containers reach each other and the LAN.
        assert!(TestHost::ping(&c1.path, a2.addr()), "{} {version}: c1 -> c2", set.label);
        assert!(TestHost::ping(&c2.path, Lan::wire_addr()), "{} {version}: c2 -> the LAN", set.label);
        assert!(TestHost::ping(&lan.wire.path, a1.addr()), "{} {version}: the LAN -> c1", set.label);

        if Version::parse(version).unwrap() >= Version::V0_4_0 {
            let mut check = conf.clone();
            check["prevResult"] = r1.to_value(version).unwrap();
            lan.call(&set, Command::Check, &c1, &check).unwrap_or_else(|e| panic!("{} CHECK {version}: {e}", set.label));
            c1nl.del_address(link.index, a1).unwrap();
            let err = lan.call(&set, Command::Check, &c1, &check).expect_err("CHECK must fail once the address is gone");
            assert!(err.code > 0, "{err}");
        }

        // DEL twice, then DEL after the namespace is gone: all succeed and nothing stays.
        lan.del(&set, &c1, &conf);
        assert!(eth0(&c1).is_none(), "{} {version}: eth0 removed", set.label);
        lan.del(&set, &c1, &conf);
        lan.host.remove_container(&c2);
        lan.del(&set, &c2, &conf);
        assert_eq!(lan.ipam_allocations(), Vec::<String>::new(), "{} {version}: addresses released", set.label);
        let mut hnl = lan.host.netlink();
        let master = hnl.link_by_name(MASTER).unwrap().expect("the master stays");
        assert!(master.up, "{} {version}: the master is left as it was", set.label);
    }
}

#[test]
fn berth_macvlan_conforms_in_every_version() {
    run_suite(Plugins::berth());
}

#[test]
fn reference_macvlan_passes_the_same_suite() {
    run_suite(Plugins::reference());
}

/// private mode: the containers on one master cannot reach each other, only the LAN.
#[test]
fn private_mode_keeps_containers_apart_but_on_the_lan() {
    for set in Plugins::both() {
        let lan = Lan::new();
        let (c1, c2) = (lan.host.container(), lan.host.container());
        let conf = lan.conf(&set, "1.0.0", "private");
        let a1 = address_of(&lan.add(&set, &c1, &conf), &c1);
        let a2 = address_of(&lan.add(&set, &c2, &conf), &c2);
        assert!(is_macvlan_of(&c1, &lan.host.ns, MASTER, MacvlanMode::Private), "{}", set.label);
        assert!(!TestHost::ping(&c1.path, a2.addr()), "{}: c1 -> c2 must not cross in private mode", set.label);
        assert!(!TestHost::ping(&c2.path, a1.addr()), "{}: c2 -> c1 must not cross in private mode", set.label);
        assert!(TestHost::ping(&c1.path, Lan::wire_addr()), "{}: c1 -> the LAN", set.label);
        assert!(TestHost::ping(&c2.path, Lan::wire_addr()), "{}: c2 -> the LAN", set.label);
        lan.del(&set, &c1, &conf);
        lan.del(&set, &c2, &conf);
    }
}

/// The host cannot reach its containers through the master itself (macvlan never passes
/// traffic between a parent and its children); a macvlan of its own on the same master,
/// carrying the host's address, can (the seeds' workaround, pipework's README).
#[test]
fn host_reaches_containers_only_through_a_macvlan_of_its_own() {
    for set in Plugins::both() {
        let lan = Lan::new();
        let c = lan.host.container();
        let conf = lan.conf(&set, "1.0.0", "bridge");
        let a = address_of(&lan.add(&set, &c, &conf), &c).addr();
        let host_path = lan.host.path();
        let host_addr: IpNet = HOST_ADDR.parse().unwrap();

        let mut hnl = lan.host.netlink();
        let master = hnl.link_by_name(MASTER).unwrap().unwrap();
        hnl.add_address(master.index, host_addr).unwrap();
        assert!(TestHost::ping(&lan.wire.path, host_addr.addr()), "{}: the host's address works on the LAN", set.label);
        assert!(!TestHost::ping(&host_path, a), "{}: host -> container through the master must fail", set.label);

        hnl.del_address(master.index, host_addr).unwrap();
        let spec = MacvlanSpec { name: "mvhost0", parent: master.index, mode: MacvlanMode::Bridge, mtu: None, mac: None, netns: None };
        hnl.create_macvlan(&spec).unwrap();
        let shim = hnl.link_by_name("mvhost0").unwrap().unwrap();
        hnl.add_address(shim.index, host_addr).unwrap();
        hnl.set_up(shim.index).unwrap();
        assert!(TestHost::ping(&host_path, a), "{}: host -> container through a host-side macvlan", set.label);
        assert!(TestHost::ping(&c.path, host_addr.addr()), "{}: container -> host through it", set.label);
        lan.del(&set, &c, &conf);
    }
}

/// Without `master`, the interface of the host's default route is the parent.
#[test]
fn master_defaults_to_the_default_route_interface() {
    for set in Plugins::both() {
        let lan = Lan::new();
        let mut hnl = lan.host.netlink();
        let master = hnl.link_by_name(MASTER).unwrap().unwrap();
        hnl.add_address(master.index, "10.40.1.1/24".parse().unwrap()).unwrap();
        hnl.add_address(master.index, HOST_ADDR.parse().unwrap()).unwrap();
        let default = RouteEntry {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some(Lan::wire_addr()),
            oif: Some(master.index),
            table: None,
            priority: None,
            mtu: None,
            scope: None,
        };
        hnl.add_route(&default).unwrap();
        let c = lan.host.container();
        let mut conf = lan.conf(&set, "1.0.0", "bridge");
        conf.as_object_mut().unwrap().remove("master");
        lan.add(&set, &c, &conf);
        assert!(is_macvlan_of(&c, &lan.host.ns, MASTER, MacvlanMode::Bridge), "{}: {:?}", set.label, eth0(&c));
        assert!(TestHost::ping(&c.path, Lan::wire_addr()), "{}", set.label);
        lan.del(&set, &c, &conf);
    }
}

#[test]
fn berth_macvlan_applies_mtu_mac_and_mode() {
    let set = Plugins::berth();
    let lan = Lan::new();
    let c = lan.host.container();
    let mut conf = lan.conf(&set, "1.1.0", "vepa");
    conf["mtu"] = json!(1400);
    conf["runtimeConfig"] = json!({"mac": "0a:58:0a:28:00:99"});
    let result = lan.add(&set, &c, &conf);
    assert_eq!(result.interfaces.len(), 1, "only the container's interface is reported: {result:?}");
    assert_eq!(result.interfaces[0].mac, "0a:58:0a:28:00:99");
    let detail = eth0(&c).unwrap();
    assert_eq!(detail.link.mtu, 1400);
    assert_eq!(detail.link.mac.unwrap().to_string(), "0a:58:0a:28:00:99");
    assert!(is_macvlan_of(&c, &lan.host.ns, MASTER, MacvlanMode::Vepa));

    // CHECK notices a mode other than the configured one.
    let mut check = conf.clone();
    check["prevResult"] = result.to_value("1.1.0").unwrap();
    lan.call(&set, Command::Check, &c, &check).expect("CHECK as configured");
    check["mode"] = json!("bridge");
    let err = lan.call(&set, Command::Check, &c, &check).expect_err("mode differs");
    assert!(err.msg.contains("mode"), "{err}");
    lan.del(&set, &c, &conf);

    // Layer 2 only without IPAM: up, no address, nothing in ips.
    let mut l2 = lan.conf(&set, "1.0.0", "bridge");
    l2.as_object_mut().unwrap().remove("ipam");
    let result = lan.add(&set, &c, &l2);
    assert!(result.ips.is_empty());
    let detail = eth0(&c).unwrap();
    assert!(detail.link.up);
    let v4: Vec<_> = netlink_of(&c).addresses(Some(detail.link.index)).unwrap().into_iter().filter(|(_, a)| a.addr().is_ipv4()).collect();
    assert!(v4.is_empty(), "{v4:?}");
    lan.del(&set, &c, &l2);
}

#[test]
fn berth_macvlan_errors_carry_cni_codes_and_leave_nothing() {
    let set = Plugins::berth();
    let lan = Lan::new();
    let c = lan.host.container();
    let conf = lan.conf(&set, "1.0.0", "bridge");
    let code = |conf: &Value| lan.call(&set, Command::Add, &c, conf).expect_err("must fail").code;
    let with = |key: &str, value: Value| {
        let mut conf = conf.clone();
        conf[key] = value;
        conf
    };
    assert_eq!(code(&with("master", json!("nosuchif0"))), 7, "missing master");
    assert_eq!(code(&with("mode", json!("passthrough"))), 7, "unknown mode");
    assert_eq!(code(&with("mtu", json!(9000))), 7, "MTU above the master's");
    assert_eq!(code(&with("vlan", json!(4095))), 7, "VLAN id out of range");
    let mut bad_ipam = conf.clone();
    bad_ipam["ipam"]["type"] = json!("berth-no-such-ipam");
    assert_eq!(code(&bad_ipam), 7, "missing IPAM plugin");
    let missing = c.path.with_file_name("berth-no-such-ns");
    let err = lan.host.call(&set.cni_path(), set.macvlan, Command::Add, &c.name, Some(&missing), "eth0", &conf).unwrap_err();
    assert_eq!(err.code, 3, "unknown netns: {err}");
    assert!(netlink_of(&c).links().unwrap().iter().all(|l| l.name == "lo"), "nothing half-made in the container");
    assert_eq!(lan.ipam_allocations(), Vec::<String>::new(), "no address kept by a failed ADD");

    // A second ADD of the same interface fails, releases nothing of the first.
    let first = address_of(&lan.add(&set, &c, &conf), &c);
    let err = lan.call(&set, Command::Add, &c, &conf).expect_err("eth0 exists already");
    assert!(err.msg.contains("eth0"), "{err}");
    assert!(TestHost::ping(&lan.wire.path, first.addr()), "the first attachment still works");
    lan.del(&set, &c, &conf);
}

/// linkInContainer: the master is an interface of the container's own namespace.
#[test]
fn berth_macvlan_link_in_container() {
    let set = Plugins::berth();
    let lan = Lan::new();
    let c = lan.host.container();
    // The container's own uplink, wired to the LAN namespace.
    let c_ns = NetNs::open(&c.path).unwrap();
    let wire_ns = NetNs::open(&lan.wire.path).unwrap();
    let mut cnl = Netlink::open_in(&c_ns).unwrap();
    let uplink = cnl.create_veth("uplink0", &VethPeer { name: "lanport1", netns: Some(&wire_ns), mac: None }, None, None).unwrap();
    cnl.set_up(uplink.index).unwrap();
    let mut wnl = Netlink::open_in(&wire_ns).unwrap();
    let port = wnl.link_by_name("lanport1").unwrap().unwrap();
    wnl.add_address(port.index, "10.41.0.250/24".parse().unwrap()).unwrap();
    wnl.set_up(port.index).unwrap();

    let conf = json!({
        "cniVersion": "1.0.0", "name": "mvnet", "type": set.macvlan, "master": "uplink0", "linkInContainer": true,
        "ipam": {"type": set.host_local, "subnet": "10.41.0.0/24", "dataDir": lan.host.dir.path().join("ipam").display().to_string()},
    });
    let result = lan.add(&set, &c, &conf);
    let detail = eth0(&c).unwrap();
    assert_eq!(detail.parent, Some(uplink.index), "a macvlan of the container's uplink0");
    assert_eq!(detail.parent_netnsid, None, "its parent is in its own namespace");
    assert!(TestHost::ping(&c.path, "10.41.0.250".parse().unwrap()), "container -> LAN through its own uplink");
    let mut check = conf.clone();
    check["prevResult"] = result.to_value("1.0.0").unwrap();
    lan.call(&set, Command::Check, &c, &check).expect("CHECK");
    assert!(lan.host.netlink().links().unwrap().iter().all(|l| l.kind.as_deref() != Some("macvlan")), "nothing on the host");
    lan.del(&set, &c, &conf);
    assert!(eth0(&c).is_none());
}

// ---- 802.1q trunk mode, in the kernel lab ----

/// One side of a trunk: a test host whose `trunk0` is one end of the wire between the two.
struct TrunkSide {
    host: TestHost,
}

fn trunk_conf(set: &Plugins, side: &TrunkSide, vid: u16, range: (&str, &str)) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": format!("vlan{vid}"), "type": set.macvlan, "master": "trunk0", "vlan": vid,
        "ipam": {
            "type": set.host_local, "subnet": "10.60.0.0/24", "rangeStart": range.0, "rangeEnd": range.1,
            "dataDir": side.host.dir.path().join("ipam").display().to_string(),
        },
    })
}

fn sub_interface(host: &TestHost, name: &str) -> Option<LinkDetail> {
    let mut nl = host.netlink();
    let link = nl.link_by_name(name).unwrap()?;
    nl.link_detail(link.index).unwrap()
}

/// lab_: 802.1q trunk mode. Two test hosts are wired by a veth pair (`trunk0` on both
/// sides); on each, berth-macvlan puts containers on VLANs 100 and 200, all in one subnet.
/// Containers on VLAN 100 reach each other, on one host and across the wire; none reaches
/// one on VLAN 200. The sub-interfaces berth made go with the last DEL on them (also when
/// that container's namespace is already gone); one made by hand stays.
#[test]
fn lab_berth_macvlan_vlan_trunks_keep_vlans_apart() {
    if !lab::in_lab() {
        lab::assert_test_passes_inside("lab_berth_macvlan_vlan_trunks_keep_vlans_apart");
        return;
    }
    let set = Plugins::berth();
    let (a, b) = (TrunkSide { host: TestHost::new() }, TrunkSide { host: TestHost::new() });
    let mut anl = a.host.netlink();
    let trunk = anl.create_veth("trunk0", &VethPeer { name: "trunk0", netns: Some(&b.host.ns), mac: None }, None, None).unwrap();
    anl.set_up(trunk.index).unwrap();
    b.host.netlink().set_up_by_name("trunk0").unwrap();

    let call = |side: &TrunkSide, cmd: Command, c: &Container, conf: &Value| {
        side.host.call(&set.cni_path(), set.macvlan, cmd, &c.name, Some(&c.path), "eth0", conf)
    };
    let add = |side: &TrunkSide, c: &Container, conf: &Value| -> IpAddr {
        let out = call(side, Command::Add, c, conf).unwrap_or_else(|e| panic!("ADD {}: {e}", conf["name"]));
        address_of(&parse_result(&out, "1.0.0"), c).addr()
    };
    let del = |side: &TrunkSide, c: &Container, conf: &Value| {
        call(side, Command::Del, c, conf).unwrap_or_else(|e| panic!("DEL {}: {e}", conf["name"]));
    };

    let (a100, a200) = (trunk_conf(&set, &a, 100, ("10.60.0.10", "10.60.0.19")), trunk_conf(&set, &a, 200, ("10.60.0.20", "10.60.0.29")));
    let (b100, b200) = (trunk_conf(&set, &b, 100, ("10.60.0.30", "10.60.0.39")), trunk_conf(&set, &b, 200, ("10.60.0.40", "10.60.0.49")));
    let (ca1, ca2, ca3) = (a.host.container(), a.host.container(), a.host.container());
    let (cb1, cb2) = (b.host.container(), b.host.container());
    let ip_a1 = add(&a, &ca1, &a100);
    let ip_a2 = add(&a, &ca2, &a100);
    let ip_a3 = add(&a, &ca3, &a200);
    let ip_b1 = add(&b, &cb1, &b100);
    let ip_b2 = add(&b, &cb2, &b200);

    for (side, label) in [(&a, "a"), (&b, "b")] {
        for vid in [100, 200] {
            let sub = sub_interface(&side.host, &format!("trunk0.{vid}")).unwrap_or_else(|| panic!("{label}: trunk0.{vid} made"));
            assert_eq!((sub.link.kind.as_deref(), sub.vlan_id), (Some("vlan"), Some(vid)));
            assert!(sub.link.up);
            assert_eq!(sub.alias.as_deref(), Some(berth_macvlan_alias()));
        }
    }
    assert!(is_macvlan_of(&ca1, &a.host.ns, "trunk0.100", MacvlanMode::Bridge), "{:?}", eth0(&ca1));

    assert!(TestHost::ping(&ca1.path, ip_a2), "VLAN 100, same host");
    assert!(TestHost::ping(&ca1.path, ip_b1), "VLAN 100, across the trunk");
    assert!(TestHost::ping(&ca3.path, ip_b2), "VLAN 200, across the trunk");
    assert!(!TestHost::ping(&ca1.path, ip_a3), "VLAN 100 -> 200 on one host must not cross");
    assert!(!TestHost::ping(&ca1.path, ip_b2), "VLAN 100 -> 200 across the trunk must not cross");
    assert!(!TestHost::ping(&cb1.path, ip_a3), "VLAN 100 -> 200 from the other side must not cross");

    let mut check = a100.clone();
    let out = call(&a, Command::Add, &ca1, &a100).expect_err("eth0 exists");
    assert!(out.msg.contains("eth0"), "{out}");
    check["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": ca1.path.display().to_string()}],
        "ips": [{"address": format!("{ip_a1}/24"), "interface": 0}]});
    call(&a, Command::Check, &ca1, &check).unwrap_or_else(|e| panic!("CHECK on the trunk: {e}"));

    // The sub-interface stays while a container is on it, goes with the last.
    del(&a, &ca1, &a100);
    assert!(sub_interface(&a.host, "trunk0.100").is_some(), "ca2 still uses a's trunk0.100");
    del(&a, &ca2, &a100);
    assert!(sub_interface(&a.host, "trunk0.100").is_none(), "a's trunk0.100 removed after its last DEL");
    del(&a, &ca2, &a100);
    assert!(sub_interface(&b.host, "trunk0.100").is_some(), "b's trunk0.100 is b's own");
    assert!(TestHost::ping(&cb2.path, ip_a3), "VLAN 200 unaffected");

    // The container's namespace went first: its macvlan went with it.
    a.host.remove_container(&ca3);
    del(&a, &ca3, &a200);
    assert!(
        eventually(Duration::from_secs(10), || sub_interface(&a.host, "trunk0.200").is_none()),
        "a's trunk0.200 removed after a DEL without the namespace"
    );
    del(&b, &cb1, &b100);
    del(&b, &cb2, &b200);
    assert!(sub_interface(&b.host, "trunk0.100").is_none() && sub_interface(&b.host, "trunk0.200").is_none());

    // A sub-interface made by someone else is used, and left in place.
    let mut bnl = b.host.netlink();
    let b_trunk = bnl.link_by_name("trunk0").unwrap().unwrap();
    bnl.create_vlan("trunk0.300", b_trunk.index, 300).unwrap();
    let b300 = trunk_conf(&set, &b, 300, ("10.60.0.50", "10.60.0.59"));
    add(&b, &cb1, &b300);
    assert!(is_macvlan_of(&cb1, &b.host.ns, "trunk0.300", MacvlanMode::Bridge));
    del(&b, &cb1, &b300);
    assert!(sub_interface(&b.host, "trunk0.300").is_some(), "a sub-interface berth did not make stays");
}

fn berth_macvlan_alias() -> &'static str {
    "berth-macvlan trunk"
}
