//! berth-none (beside the reference loopback plugin) and berth-host. Needs root.

use berth_conformance::plugins::PluginSet;
use berth_conformance::{parse_result, parse_result_as, versions_of, TestHost};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use berth_cni::skel::Command;
use berth_cni::spec::{Version, SUPPORTED};
use serde_json::json;

fn lo_up(path: &std::path::Path) -> bool {
    let mut nl = Netlink::open_in(&NetNs::open(path).unwrap()).unwrap();
    nl.link_by_name("lo").unwrap().unwrap().up
}

fn loopback_suite(set: PluginSet) {
    let plugin = set.dir.join(set.loopback);
    for version in versions_of(&plugin) {
        let host = TestHost::new();
        let c = host.container();
        let conf = json!({"cniVersion": version, "name": "lo-net", "type": set.loopback});
        let mut nl = Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
        let lo = nl.link_by_name("lo").unwrap().unwrap();
        nl.set_down(lo.index).unwrap();
        assert!(!lo_up(&c.path));
        let call = |cmd, conf: &serde_json::Value| host.call(&set.cni_path(), set.loopback, cmd, &c.name, Some(&c.path), "lo", conf);
        let out = call(Command::Add, &conf).unwrap_or_else(|e| panic!("{} ADD {version}: {e}", set.label));
        let result = parse_result_as(&out, version, set.label == "berth");
        assert_eq!(result.interfaces[0].name, "lo");
        assert!(result.ips.iter().any(|ip| ip.address.to_string() == "127.0.0.1/8"), "{}: {result:?}", set.label);
        assert!(lo_up(&c.path), "{} {version}: lo is up", set.label);
        assert!(TestHost::ping(&c.path, "127.0.0.1".parse().unwrap()));
        let links = nl.links().unwrap();
        assert_eq!(links.len(), 1, "{}: only lo in a none-mode container: {links:?}", set.label);
        if Version::parse(version).unwrap() >= Version::V0_4_0 {
            let mut check = conf.clone();
            check["prevResult"] = result.to_value(version).unwrap();
            call(Command::Check, &check).unwrap_or_else(|e| panic!("{} CHECK {version}: {e}", set.label));
        }
        call(Command::Del, &conf).unwrap();
        call(Command::Del, &conf).unwrap();
        host.remove_container(&c);
        call(Command::Del, &conf).unwrap_or_else(|e| panic!("{} DEL after netns removal: {e}", set.label));
    }
}

#[test]
fn berth_none_brings_up_only_lo_in_every_version() {
    loopback_suite(PluginSet::berth());
}

#[test]
fn reference_loopback_passes_the_same_suite() {
    loopback_suite(PluginSet::reference());
}

#[test]
fn berth_host_reports_host_interfaces_and_refuses_other_namespaces() {
    let set = PluginSet::berth();
    let host = TestHost::new();
    // Give the "host" an uplink with an address and a default route, as a real host has.
    let peer = host.container();
    let mut nl = host.netlink();
    let uplink_peer = berth_netlink::VethPeer { name: "up0", netns: Some(&NetNs::open(&peer.path).unwrap()), mac: None };
    let uplink = nl.create_veth("uplink0", &uplink_peer, None, None).unwrap();
    nl.add_address(uplink.index, "192.0.2.10/24".parse().unwrap()).unwrap();
    nl.set_up(uplink.index).unwrap();
    nl.add_route(&berth_netlink::RouteEntry {
        dst: "0.0.0.0/0".parse().unwrap(),
        gateway: Some("192.0.2.1".parse().unwrap()),
        oif: Some(uplink.index),
        table: None,
        priority: None,
        mtu: None,
        scope: None,
    })
    .unwrap();

    for version in SUPPORTED {
        let conf = json!({"cniVersion": version, "name": "hostnet", "type": "berth-host"});
        let out = host
            .call(&set.cni_path(), "berth-host", Command::Add, "h1", Some(&host.path()), "eth0", &conf)
            .unwrap_or_else(|e| panic!("berth-host ADD {version}: {e}"));
        let result = parse_result(&out, version);
        assert_eq!(result.interfaces.len(), 1, "the default-route interface: {result:?}");
        assert_eq!(result.interfaces[0].name, "uplink0");
        assert_eq!(result.ips[0].address.to_string(), "192.0.2.10/24");
        assert_eq!(result.ips[0].gateway, Some("192.0.2.1".parse().unwrap()));
        host.call(&set.cni_path(), "berth-host", Command::Del, "h1", Some(&host.path()), "eth0", &conf).unwrap();
    }
    let named = json!({"cniVersion": "1.0.0", "name": "hostnet", "type": "berth-host", "interfaces": ["lo"]});
    let out = host.call(&set.cni_path(), "berth-host", Command::Add, "h1", Some(&host.path()), "eth0", &named).unwrap();
    assert_eq!(parse_result(&out, "1.0.0").interfaces[0].name, "lo");

    let c = host.container();
    let conf = json!({"cniVersion": "1.0.0", "name": "hostnet", "type": "berth-host"});
    let err = host.call(&set.cni_path(), "berth-host", Command::Add, "h2", Some(&c.path), "eth0", &conf).unwrap_err();
    assert_eq!(err.code, 4, "a container with its own namespace cannot use host mode: {err}");
    let missing = json!({"cniVersion": "1.0.0", "name": "hostnet", "type": "berth-host", "interfaces": ["nosuch0"]});
    let err = host.call(&set.cni_path(), "berth-host", Command::Add, "h1", Some(&host.path()), "eth0", &missing).unwrap_err();
    assert_eq!(err.code, 7, "{err}");
}
