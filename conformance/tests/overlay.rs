//! Containers on two hosts: two throwaway "host" namespaces joined by an underlay veth
//! (`under0`, 192.0.2.1/24 on A and 192.0.2.2/24 on B), each with containers on a
//! berth-bridge network whose `vxlan` option joins the two bridges. Needs root and the vxlan
//! module (this machine's kernel has it).

use berth_cni::skel::Command;
use berth_conformance::plugins::PluginSet;
use berth_conformance::throughput::tcp_transfer;
use berth_conformance::{eventually, Container, TestHost};
use berth_netlink::{Netlink, VethPeer};
use berth_netns::NetNs;
use ipnet::IpNet;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const A_UNDERLAY: &str = "192.0.2.1";
const B_UNDERLAY: &str = "192.0.2.2";
/// The underlay's MTU (a veth's default) less VXLAN's 50 bytes over IPv4.
const OVERLAY_MTU: u32 = 1450;
const WAIT: Duration = Duration::from_secs(10);

/// Two hosts on one underlay segment.
struct Hosts {
    a: TestHost,
    b: TestHost,
    set: PluginSet,
}

fn two_hosts() -> Hosts {
    let a = TestHost::new();
    let b = TestHost::new();
    let mut nl_a = a.netlink();
    let peer = VethPeer { name: "under0", netns: Some(&b.ns), mac: None };
    let under_a = nl_a.create_veth("under0", &peer, None, None).expect("underlay veth");
    let mut nl_b = b.netlink();
    let under_b = nl_b.link_by_name("under0").expect("list").expect("B's under0");
    for (nl, index, ip) in [(&mut nl_a, under_a.index, A_UNDERLAY), (&mut nl_b, under_b.index, B_UNDERLAY)] {
        nl.add_address(index, format!("{ip}/24").parse().unwrap()).expect("underlay address");
        nl.set_up(index).expect("underlay up");
    }
    Hosts { a, b, set: PluginSet::berth() }
}

/// A berth-bridge network on VNI `vni` (bridge `brvni{vni}`) flooding to `remote`; the
/// container gets `address` (berth-static), layer 2 only as an overlay between hosts is.
fn overlay_conf(vni: u32, remote: &str, address: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": format!("ov{vni}"), "type": "berth-bridge", "bridge": format!("brvni{vni}"),
        "vxlan": { "vni": vni, "remotes": [remote], "dev": "under0" },
        "ipam": { "type": "berth-static", "addresses": [{ "address": format!("{address}/24") }] },
    })
}

impl Hosts {
    fn add(&self, host: &TestHost, c: &Container, conf: &Value) {
        host.call(&self.set.cni_path(), "berth-bridge", Command::Add, &c.name, Some(&c.path), "eth0", conf)
            .unwrap_or_else(|e| panic!("ADD {} on {}: {e}", c.name, conf["name"]));
    }
    fn del(&self, host: &TestHost, c: &Container, conf: &Value) {
        host.call(&self.set.cni_path(), "berth-bridge", Command::Del, &c.name, Some(&c.path), "eth0", conf)
            .unwrap_or_else(|e| panic!("DEL {} on {}: {e}", c.name, conf["name"]));
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn container_mtu(c: &Container) -> u32 {
    let mut nl = Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
    nl.link_by_name("eth0").unwrap().expect("eth0").mtu
}

/// The VXLAN port of VNI `vni` on `host`: (its bridge's name, its flood list).
fn vxlan_port(host: &TestHost, vni: u32) -> Option<(String, Vec<IpAddr>)> {
    let mut nl = host.netlink();
    let port = nl.link_by_name(&format!("berthvx{vni}")).unwrap()?;
    let bridge = port.master.and_then(|m| nl.link_by_index(m).unwrap()).map(|b| b.name).unwrap_or_default();
    Some((bridge, nl.fdb_flood_remotes(port.index).unwrap()))
}

#[test]
fn vxlan_carries_ping_and_tcp_between_hosts_with_the_mtu_lowered() {
    let hosts = two_hosts();
    let (c1, c2) = (hosts.a.container(), hosts.b.container());
    hosts.add(&hosts.a, &c1, &overlay_conf(42, B_UNDERLAY, "10.50.0.11"));
    hosts.add(&hosts.b, &c2, &overlay_conf(42, A_UNDERLAY, "10.50.0.12"));

    assert_eq!(vxlan_port(&hosts.a, 42), Some(("brvni42".into(), vec![ip(B_UNDERLAY)])));
    assert_eq!(vxlan_port(&hosts.b, 42), Some(("brvni42".into(), vec![ip(A_UNDERLAY)])));
    assert_eq!((container_mtu(&c1), container_mtu(&c2)), (OVERLAY_MTU, OVERLAY_MTU), "lowered by VXLAN's overhead");

    assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip("10.50.0.12"))), "A's container reaches B's");
    assert!(TestHost::ping(&c2.path, ip("10.50.0.11")), "and back");
    let len = 4 << 20;
    assert_eq!(tcp_transfer(&c1.path, &c2.path, ip("10.50.0.12"), len).expect("transfer"), len, "a TCP transfer crosses whole");

    // The largest ICMP payload that fits: the MTU less the IPv4 and ICMP headers.
    let largest = OVERLAY_MTU - 28;
    let (crossed, said) = TestHost::ping_df(&c1.path, ip("10.50.0.12"), largest);
    assert!(crossed, "a {largest}-byte ping with DF crosses: {said}");
    let (crossed, said) = TestHost::ping_df(&c1.path, ip("10.50.0.12"), largest + 1);
    assert!(!crossed, "one byte more must not cross: {said}");
    assert!(said.contains("message too long") && said.contains(&format!("mtu={OVERLAY_MTU}")), "refused as too big: {said}");
}

#[test]
fn an_explicit_mtu_is_kept() {
    let hosts = two_hosts();
    let c1 = hosts.a.container();
    let mut conf = overlay_conf(44, B_UNDERLAY, "10.50.0.11");
    conf["mtu"] = json!(1400);
    hosts.add(&hosts.a, &c1, &conf);
    assert_eq!(container_mtu(&c1), 1400);
}

#[test]
fn two_vnis_cannot_reach_each_other() {
    let hosts = two_hosts();
    let (a42, a43) = (hosts.a.container(), hosts.a.container());
    let (b42, b43) = (hosts.b.container(), hosts.b.container());
    // One subnet on both VNIs: only the VNI keeps them apart.
    hosts.add(&hosts.a, &a42, &overlay_conf(42, B_UNDERLAY, "10.50.0.11"));
    hosts.add(&hosts.a, &a43, &overlay_conf(43, B_UNDERLAY, "10.50.0.13"));
    hosts.add(&hosts.b, &b42, &overlay_conf(42, A_UNDERLAY, "10.50.0.12"));
    hosts.add(&hosts.b, &b43, &overlay_conf(43, A_UNDERLAY, "10.50.0.14"));

    assert!(eventually(WAIT, || TestHost::ping(&a42.path, ip("10.50.0.12"))), "VNI 42 across hosts");
    assert!(eventually(WAIT, || TestHost::ping(&a43.path, ip("10.50.0.14"))), "VNI 43 across hosts");
    assert!(!TestHost::ping(&a42.path, ip("10.50.0.14")), "VNI 42 must not reach VNI 43 on the other host");
    assert!(!TestHost::ping(&a43.path, ip("10.50.0.12")), "VNI 43 must not reach VNI 42 on the other host");
}

#[test]
fn the_tunnel_stays_for_the_others_and_goes_with_the_last_container() {
    let hosts = two_hosts();
    let (c1, c3, c2) = (hosts.a.container(), hosts.a.container(), hosts.b.container());
    let conf_c1 = overlay_conf(42, B_UNDERLAY, "10.50.0.11");
    let conf_c3 = overlay_conf(42, B_UNDERLAY, "10.50.0.13");
    hosts.add(&hosts.a, &c1, &conf_c1);
    hosts.add(&hosts.a, &c3, &conf_c3);
    hosts.add(&hosts.b, &c2, &overlay_conf(42, A_UNDERLAY, "10.50.0.12"));
    assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip("10.50.0.12"))));

    hosts.del(&hosts.a, &c3, &conf_c3);
    assert!(vxlan_port(&hosts.a, 42).is_some(), "one container left: the tunnel stays");
    assert!(TestHost::ping(&c1.path, ip("10.50.0.12")), "and carries the other's traffic");

    hosts.del(&hosts.a, &c1, &conf_c1);
    assert_eq!(vxlan_port(&hosts.a, 42), None, "the network's last container took the tunnel with it");
    hosts.del(&hosts.a, &c1, &conf_c1); // DEL again: nothing left, still a success

    hosts.add(&hosts.a, &c1, &conf_c1);
    assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip("10.50.0.12"))), "a new first container brings it back");
}

#[test]
fn a_changed_underlay_address_once_reconfigured_carries_traffic_again() {
    let hosts = two_hosts();
    let (c1, c2) = (hosts.a.container(), hosts.b.container());
    hosts.add(&hosts.a, &c1, &overlay_conf(42, B_UNDERLAY, "10.50.0.11"));
    hosts.add(&hosts.b, &c2, &overlay_conf(42, A_UNDERLAY, "10.50.0.12"));
    assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip("10.50.0.12"))));

    // B renumbers its underlay: A still sends to the old address.
    let new_b: Ipv4Addr = "192.0.2.3".parse().unwrap();
    let mut nl_b = hosts.b.netlink();
    let under_b = nl_b.link_by_name("under0").unwrap().unwrap();
    // Old one first: deleting a primary address takes the secondaries of its subnet along.
    nl_b.del_address(under_b.index, format!("{B_UNDERLAY}/24").parse().unwrap()).unwrap();
    nl_b.add_address(under_b.index, IpNet::new(new_b.into(), 24).unwrap()).unwrap();
    assert!(!TestHost::ping(&c1.path, ip("10.50.0.12")), "A's tunnel still points at B's old address");

    // A's network is reconfigured with B's new address; the next ADD on A applies it.
    let c3 = hosts.a.container();
    hosts.add(&hosts.a, &c3, &overlay_conf(42, &new_b.to_string(), "10.50.0.13"));
    assert_eq!(vxlan_port(&hosts.a, 42).map(|(_, remotes)| remotes), Some(vec![IpAddr::from(new_b)]));
    assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip("10.50.0.12"))), "traffic restored");
    assert!(TestHost::ping(&c3.path, ip("10.50.0.12")));
}

/// The benchmark (BENCHMARKS.md), run by hand: `cargo test --release -p berth-conformance
/// --test overlay -- --ignored --nocapture`. TCP throughput between the same two containers
/// across the VXLAN overlay and across a veth joining them directly, in one run; and the
/// median ADD on an overlay network against a plain berth network.
#[test]
#[ignore]
fn bench_overlay_throughput_and_add_latency() {
    use berth_conformance::throughput::tcp_bits_per_sec;
    let hosts = two_hosts();
    let (c1, c2) = (hosts.a.container(), hosts.b.container());
    hosts.add(&hosts.a, &c1, &overlay_conf(42, B_UNDERLAY, "10.50.0.11"));
    hosts.add(&hosts.b, &c2, &overlay_conf(42, A_UNDERLAY, "10.50.0.12"));
    assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip("10.50.0.12"))));
    let (ns1, ns2) = (NetNs::open(&c1.path).unwrap(), NetNs::open(&c2.path).unwrap());
    // The same two namespaces, joined directly as well.
    let mut nl1 = Netlink::open_in(&ns1).unwrap();
    nl1.create_veth("direct0", &VethPeer { name: "direct0", netns: Some(&ns2), mac: None }, None, None).unwrap();
    let mut nl2 = Netlink::open_in(&ns2).unwrap();
    for (nl, addr) in [(&mut nl1, "10.99.0.1/24"), (&mut nl2, "10.99.0.2/24")] {
        let link = nl.link_by_name("direct0").unwrap().unwrap();
        nl.add_address(link.index, addr.parse().unwrap()).unwrap();
        nl.set_up(link.index).unwrap();
    }
    let window = Duration::from_secs(3);
    for round in 1..=3 {
        let overlay = tcp_bits_per_sec(&ns1, &ns2, ip("10.50.0.12"), window).unwrap();
        let direct = tcp_bits_per_sec(&ns1, &ns2, ip("10.99.0.2"), window).unwrap();
        println!(
            "round {round}: overlay {:.2} Gbit/s, direct veth {:.2} Gbit/s, ratio {:.2}",
            overlay / 1e9,
            direct / 1e9,
            overlay / direct
        );
    }
    for (label, vxlan) in [("plain", false), ("overlay", true)] {
        let mut times = Vec::new();
        for i in 0..30 {
            let c = hosts.a.container();
            let mut conf = overlay_conf(45, B_UNDERLAY, &format!("10.51.0.{}", 10 + i));
            conf["bridge"] = json!(format!("brbench{}", u8::from(vxlan)));
            if !vxlan {
                conf.as_object_mut().unwrap().remove("vxlan");
            }
            let start = std::time::Instant::now();
            hosts.add(&hosts.a, &c, &conf);
            times.push(start.elapsed());
        }
        times.sort();
        println!("ADD on the {label} network: median {:.2} ms, fastest {:.2} ms", times[15].as_secs_f64() * 1e3, times[0].as_secs_f64() * 1e3);
    }
}
