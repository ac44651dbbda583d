//! `berth net create -d overlay` and `--peer` across two hosts: two throwaway host namespaces
//! joined by an underlay veth `under0` (192.0.2.1/24 on A, 192.0.2.2/24 on B), berth run in
//! each with its own config directory. Needs root and the vxlan module.

use berth_conformance::echo::{tcp_ask, EchoServer};
use berth_conformance::{eventually, Container, TestHost};
use berth_netlink::{Netlink, VethPeer};
use berth_netns::NetNs;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

mod common;

use common::HostBerth as Berth;

impl Berth<'_> {
    /// Attaches a new container to `network`; returns it with its eth0 address and MTU.
    fn attached(&self, network: &str) -> (Container, IpAddr, u32) {
        let c = self.host.container();
        self.ok(&["attach", network, &c.name]);
        let mut nl = Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
        let eth0 = nl.link_by_name("eth0").unwrap().expect("eth0");
        let (_, address) = nl.addresses(Some(eth0.index)).unwrap().into_iter().find(|(_, a)| a.addr().is_ipv4()).expect("an address");
        (c, address.addr(), eth0.mtu)
    }
}

fn two_hosts() -> (TestHost, TestHost) {
    let (a, b) = (TestHost::new(), TestHost::new());
    let mut nl_a = a.netlink();
    let under_a = nl_a.create_veth("under0", &VethPeer { name: "under0", netns: Some(&b.ns), mac: None }, None, None).unwrap();
    let mut nl_b = b.netlink();
    let under_b = nl_b.link_by_name("under0").unwrap().unwrap();
    for (nl, index, ip) in [(&mut nl_a, under_a.index, "192.0.2.1/24"), (&mut nl_b, under_b.index, "192.0.2.2/24")] {
        nl.add_address(index, ip.parse().unwrap()).unwrap();
        nl.set_up(index).unwrap();
    }
    (a, b)
}

#[test]
fn overlay_networks_join_containers_on_two_hosts() {
    let (a, b) = two_hosts();
    let (berth_a, berth_b) = (Berth { host: &a }, Berth { host: &b });
    let common = ["-d", "overlay", "--vni", "42", "--vxlan-dev", "under0", "--subnet", "10.70.0.0/24"];
    berth_a.network(&[&["ov"][..], &common, &["--remote", "192.0.2.2", "--ip-range", "10.70.0.0/25"]].concat());
    berth_b.network(&[&["ov"][..], &common, &["--remote", "192.0.2.1", "--ip-range", "10.70.0.128/25"]].concat());
    let (c1, ip1, mtu1) = berth_a.attached("ov");
    let (c2, ip2, _) = berth_b.attached("ov");
    assert_eq!(mtu1, 1450, "the container's MTU is lowered by VXLAN's overhead");
    assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip2)), "{ip1} on A reaches {ip2} on B");
    assert!(TestHost::ping(&c2.path, ip1));

    assert!(a.netlink().link_by_name("berthvx42").unwrap().is_some());
    berth_a.ok(&["net", "rm", "ov"]);
    assert!(a.netlink().link_by_name("berthvx42").unwrap().is_none(), "net rm removed the VXLAN port");
    assert!(!TestHost::ping(&c2.path, ip1), "and with it the way across");
}

#[test]
fn peer_routes_carry_unmasqueraded_traffic_between_hosts() {
    let (a, b) = two_hosts();
    let (berth_a, berth_b) = (Berth { host: &a }, Berth { host: &b });
    berth_a.network(&["ra", "--subnet", "10.61.0.0/24", "--peer", "10.62.0.0/24=192.0.2.2"]);
    berth_b.network(&["rb", "--subnet", "10.62.0.0/24", "--peer", "10.61.0.0/24=192.0.2.1"]);
    let (c1, ip1, mtu1) = berth_a.attached("ra");
    let (c2, ip2, _) = berth_b.attached("rb");
    assert_eq!(mtu1, 1500, "routed: no encapsulation, no lowering");

    assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip2)), "{ip1} on A reaches {ip2} on B");
    assert!(TestHost::ping(&c2.path, ip1), "and B's reaches A's");
    let _server = EchoServer::start(&c2.path, "0.0.0.0:7070".parse().unwrap());
    let seen = tcp_ask(&c1.path, SocketAddr::new(ip2, 7070)).expect("B's container answers");
    assert!(seen.starts_with(&ip1.to_string()), "B sees A's container's own address, not A's: {seen}");

    let peer_route = |host: &TestHost| host.netlink().routes().unwrap().into_iter().any(|r| r.dst.to_string().starts_with("10.62.0.0/24"));
    assert!(peer_route(&a));
    berth_a.ok(&["net", "rm", "ra"]);
    assert!(!peer_route(&a), "net rm removed the peer route");
}
