//! `berth net create -d overlay` and `--peer` across two hosts: two throwaway host namespaces
//! joined by an underlay veth `under0` (192.0.2.1/24 on A, 192.0.2.2/24 on B), or, routed,
//! by a third namespace routing between them; berth run in each host with its own config
//! directory. Needs root and the vxlan module.

use berth_conformance::echo::{tcp_ask, EchoServer};
use berth_conformance::throughput::tcp_transfer;
use berth_conformance::{eventually, TestHost};
use berth_netlink::{RouteEntry, VethPeer};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

mod common;

use common::{two_hosts_on_an_underlay as two_hosts, HostBerth as Berth};

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

/// A host and a router joined by a veth (`uplink0` on the host, `to_NAME` on the router),
/// the host's default route through the router.
fn link_to_router(host: &TestHost, router: &TestHost, name: &str, host_ip: &str, router_ip: &str) {
    let mut nl = host.netlink();
    let peer = VethPeer { name: &format!("to_{name}"), netns: Some(&router.ns), mac: None };
    let uplink = nl.create_veth("uplink0", &peer, None, None).unwrap();
    let mut rnl = router.netlink();
    let far = rnl.link_by_name(&format!("to_{name}")).unwrap().unwrap();
    for (nl, index, ip) in [(&mut nl, uplink.index, host_ip), (&mut rnl, far.index, router_ip)] {
        nl.add_address(index, format!("{ip}/24").parse().unwrap()).unwrap();
        nl.set_up(index).unwrap();
    }
    nl.add_route(&route("0.0.0.0/0", router_ip)).unwrap();
}

fn route(dst: &str, gateway: &str) -> RouteEntry {
    RouteEntry {
        dst: dst.parse().unwrap(),
        gateway: gateway.parse().ok(),
        oif: None,
        table: None,
        priority: None,
        mtu: None,
        scope: None,
    }
}

/// A (198.51.100.1) — router — B (203.0.113.2): the hosts share no link. The router routes
/// each host's container subnet (10.61.0.0/24, 10.62.0.0/24) through that host, and plays
/// the rest of the world too.
fn routed_hosts() -> (TestHost, TestHost, TestHost) {
    let (a, router, b) = (TestHost::new(), TestHost::new(), TestHost::new());
    link_to_router(&a, &router, "a", "198.51.100.1", "198.51.100.254");
    link_to_router(&b, &router, "b", "203.0.113.2", "203.0.113.254");
    let mut rnl = router.netlink();
    rnl.add_route(&route("10.61.0.0/24", "198.51.100.1")).unwrap();
    rnl.add_route(&route("10.62.0.0/24", "203.0.113.2")).unwrap();
    router.ns.run(|| berth_netns::sysctl::set("net/ipv4/ip_forward", "1")).unwrap().unwrap();
    (a, router, b)
}

/// Both ends of the router's link to B get `mtu` (a veth drops what exceeds its peer's).
fn narrow_link_to_b(router: &TestHost, b: &TestHost, mtu: u32) {
    for (host, name) in [(router, "to_b"), (b, "uplink0")] {
        let mut nl = host.netlink();
        let link = nl.link_by_name(name).unwrap().unwrap();
        nl.set_mtu(link.index, mtu).unwrap();
    }
}

/// Routed through a router, with every firewall backend: `--peer SUBNET=HOST_IP` with
/// HOST_IP off-link installs the route through the router; containers on A and B reach each
/// other (ping, a TCP transfer) with their own addresses, while traffic to anywhere else is
/// still masqueraded behind A's. A ping with DF of the largest size the container's MTU
/// allows crosses, one byte more is refused by the sender; after the router's link to B
/// narrows, the router's "fragmentation needed" reaches the container, and TCP still
/// crosses whole. CHECK passes; `net rm` takes the route away.
#[test]
fn peers_routed_through_a_router_keep_their_addresses_and_find_the_path_mtu() {
    for backend in ["nftables", "iptables-nft", "iptables-legacy"] {
        let (a, router, b) = routed_hosts();
        let (berth_a, berth_b) = (Berth { host: &a }, Berth { host: &b });
        berth_a.network(&["ra", "--subnet", "10.61.0.0/24", "--peer", "10.62.0.0/24=203.0.113.2"]);
        berth_b.network(&["rb", "--subnet", "10.62.0.0/24", "--peer", "10.61.0.0/24=198.51.100.1"]);
        berth_a.set_plugin_key("ra", "firewallBackend", backend);
        berth_b.set_plugin_key("rb", "firewallBackend", backend);
        let peer_route = |host: &TestHost| {
            let dst: IpNet = "10.62.0.0/24".parse().unwrap();
            host.netlink().routes().unwrap().into_iter().find(|r| r.dst == dst).and_then(|r| r.gateway)
        };
        assert_eq!(peer_route(&a), Some(ip("198.51.100.254")), "{backend}: B is off-link: through the router");

        let (c1, ip1, _) = berth_a.attached("ra");
        let (c2, ip2, mtu2) = berth_b.attached("rb");
        assert!(eventually(WAIT, || TestHost::ping(&c1.path, ip2)), "{backend}: {ip1} on A reaches {ip2} on B");
        assert!(TestHost::ping(&c2.path, ip1), "{backend}: and back");
        let _peer = EchoServer::start(&c2.path, "0.0.0.0:7070".parse().unwrap());
        let _world = EchoServer::start(&router.path(), "0.0.0.0:7071".parse().unwrap());
        let seen = tcp_ask(&c1.path, SocketAddr::new(ip2, 7070));
        assert_eq!(seen, Some(ip1.to_string()), "{backend}: the peer sees the container's own address");
        let seen = tcp_ask(&c1.path, "203.0.113.254:7071".parse().unwrap());
        assert_eq!(seen.as_deref(), Some("198.51.100.1"), "{backend}: anywhere else sees A's address");
        let len = 1 << 20;
        assert_eq!(tcp_transfer(&c1.path, &c2.path, ip2, len).unwrap(), len, "{backend}: a TCP transfer crosses whole");

        // The container's MTU is the whole way's: the largest DF ping crosses, one more byte not.
        let largest = mtu2 - 28;
        let (crossed, said) = TestHost::ping_df(&c1.path, ip2, largest);
        assert!(crossed, "{backend}: a {largest}-byte ping with DF crosses: {said}");
        let (crossed, said) = TestHost::ping_df(&c1.path, ip2, largest + 1);
        assert!(!crossed && said.contains("message too long, mtu=1500"), "{backend}: refused by the sender: {said}");
        // A narrower link on the way: the router says so, and the sender learns the path's MTU.
        narrow_link_to_b(&router, &b, 1400);
        let (crossed, said) = TestHost::ping_df(&c1.path, ip2, largest);
        assert!(
            !crossed && said.contains("Frag needed") && said.contains("mtu = 1400"),
            "{backend}: the router refuses it: {said}"
        );
        assert!(TestHost::ping_df(&c1.path, ip2, 1400 - 28).0, "{backend}: the path's largest crosses");
        let (_, said) = TestHost::ping_df(&c1.path, ip2, 1400 - 28 + 1);
        assert!(said.contains("message too long, mtu=1400"), "{backend}: the sender knows the path's MTU now: {said}");
        assert_eq!(tcp_transfer(&c1.path, &c2.path, ip2, len).unwrap(), len, "{backend}: TCP finds the path's MTU");

        berth_a.ok(&["check", "ra", &c1.name]);
        berth_a.ok(&["net", "rm", "ra"]);
        assert_eq!(peer_route(&a), None, "{backend}: net rm removed the peer route");
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
