//! Real kernel tests (root): each one works only inside network namespaces it creates
//! (`berth-nltest-<pid>-<n>`) and deletes them again, even when an assertion fails.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// A throwaway named namespace, deleted on drop.
struct TestNs {
    name: String,
    ns: Option<NetNs>,
}

impl TestNs {
    fn new() -> TestNs {
        let name = format!("berth-nltest-{}-{}", std::process::id(), NEXT_NS.fetch_add(1, Ordering::SeqCst));
        // The guard exists before the namespace does, so a half-made one is removed too.
        let mut guard = TestNs { name, ns: None };
        let ns = create_named_netns(&guard.name).unwrap_or_else(|e| panic!("create netns {}: {e}", guard.name));
        guard.ns = Some(ns);
        guard
    }

    fn ns(&self) -> &NetNs {
        self.ns.as_ref().expect("namespace")
    }

    fn netlink(&self) -> Netlink {
        Netlink::open_in(self.ns()).unwrap_or_else(|e| panic!("netlink socket in {}: {e}", self.name))
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.ns.take();
        if let Err(e) = NetNs::delete_named(&self.name) {
            eprintln!("cannot delete test namespace {}: {e}", self.name);
        }
    }
}

/// These tests create namespaces and links, which needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN);
/// without it they fail rather than pass silently.
fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert!(unsafe { libc::geteuid() } == 0, "netlink tests need root: they create network namespaces");
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn link(nl: &mut Netlink, name: &str) -> Link {
    nl.link_by_name(name).unwrap().unwrap_or_else(|| panic!("no link {name}"))
}

#[test]
fn mac_addr_parses_and_prints() {
    let mac: MacAddr = "0a:58:0A:f4:00:02".parse().unwrap();
    assert_eq!(mac, MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0, 2]));
    assert_eq!(mac.to_string(), "0a:58:0a:f4:00:02");
    for bad in ["", "0a:58:0a:f4:00", "0a:58:0a:f4:00:02:03", "0a:58:0a:f4:00:2", "0a:58:0a:f4:00:zz"] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn bridge_create_and_idempotent_ensure() {
    require_root();
    let t = TestNs::new();
    let mut nl = t.netlink();

    let lo = link(&mut nl, "lo");
    assert!(lo.up, "create_named_netns brings lo up");
    assert_eq!(lo.kind, None);

    let br = nl.ensure_bridge("br-test0", Some(1400)).unwrap();
    assert_eq!(br.name, "br-test0");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up);
    assert_eq!(br.mtu, 1400);
    assert!(br.mac.is_some());
    assert_eq!(br.master, None);
    assert_eq!(br.peer_index, None);

    let again = nl.ensure_bridge("br-test0", Some(1400)).unwrap();
    assert_eq!(again, br);
    let again = nl.ensure_bridge("br-test0", None).unwrap();
    assert_eq!(again.index, br.index);
    assert_eq!(again.mtu, 1400);

    // An existing bridge is brought to the requested MTU and up.
    nl.set_down(br.index).unwrap();
    let changed = nl.ensure_bridge("br-test0", Some(1300)).unwrap();
    assert_eq!(changed.index, br.index);
    assert_eq!(changed.mtu, 1300);
    assert!(changed.up);

    let err = nl.ensure_bridge("lo", None).unwrap_err();
    assert!(err.to_string().contains("lo") && err.to_string().contains("not a bridge"), "{err}");

    let links = nl.links().unwrap();
    assert!(links.iter().any(|l| l.name == "lo" && l.index == lo.index));
    assert!(links.iter().any(|l| l.name == "br-test0" && l.kind.as_deref() == Some("bridge")));
    assert_eq!(nl.link_by_index(br.index).unwrap().unwrap().name, "br-test0");
}

#[test]
fn veth_with_peer_in_another_namespace() {
    require_root();
    let host = TestNs::new();
    let cont = TestNs::new();
    let mut nl = host.netlink();
    let mut cnl = cont.netlink();

    let br = nl.ensure_bridge("br0", Some(1450)).unwrap();
    let mac: MacAddr = "0a:58:0a:f4:00:02".parse().unwrap();
    let peer = VethPeer { name: "eth0", netns: Some(cont.ns()), mac: Some(mac) };
    let veth = nl.create_veth("vethab12", &peer, Some(1450), Some(br.index)).unwrap();
    assert_eq!(veth.name, "vethab12");
    assert_eq!(veth.kind.as_deref(), Some("veth"));
    assert_eq!(veth.master, Some(br.index));
    assert_eq!(veth.mtu, 1450);
    assert!(!veth.up);

    let eth0 = link(&mut cnl, "eth0");
    assert_eq!(eth0.mac, Some(mac));
    assert_eq!(eth0.mtu, 1450);
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert_eq!(eth0.master, None);
    assert_eq!(veth.peer_index, Some(eth0.index));
    assert_eq!(eth0.peer_index, Some(veth.index));
    assert_eq!(nl.link_by_name("eth0").unwrap(), None);
    assert_eq!(cnl.link_by_name("vethab12").unwrap(), None);

    let err = nl.create_veth("vethab12", &peer, Some(1450), Some(br.index)).unwrap_err();
    assert_eq!(err.to_string(), "create veth vethab12 (peer eth0)");
    assert!(detail(&err).contains("exists"), "{err}");

    nl.set_up(veth.index).unwrap();
    assert!(link(&mut nl, "vethab12").up);

    assert_eq!(nl.port_flag(veth.index, PortFlag::Hairpin).unwrap(), Some(false));
    nl.set_hairpin(veth.index, true).unwrap();
    assert_eq!(nl.port_flag(veth.index, PortFlag::Hairpin).unwrap(), Some(true));
    nl.set_hairpin(veth.index, false).unwrap();
    assert_eq!(nl.port_flag(veth.index, PortFlag::Hairpin).unwrap(), Some(false));
    assert_eq!(nl.port_flag(veth.index, PortFlag::Isolated).unwrap(), Some(false));
    nl.set_port_flag(veth.index, PortFlag::Isolated, true).unwrap();
    assert_eq!(nl.port_flag(veth.index, PortFlag::Isolated).unwrap(), Some(true));
    // Not a bridge port: the kernel refuses, and the error names the link.
    let err = nl.set_hairpin(br.index, true).unwrap_err();
    assert!(err.to_string().contains(&format!("br0(index {})", br.index)), "{err}");

    // Deleting one end removes the pair.
    assert!(nl.delete_link(veth.index).unwrap());
    assert_eq!(cnl.link_by_name("eth0").unwrap(), None);
}

#[test]
fn addresses_add_list_delete() {
    require_root();
    let t = TestNs::new();
    let mut nl = t.netlink();
    let br = nl.ensure_bridge("br-addr", None).unwrap();
    let lo = link(&mut nl, "lo");
    let (v4, v6) = (net("10.1.2.3/24"), net("fd00:1::3/64"));

    nl.add_address(br.index, v4).unwrap();
    nl.add_address(br.index, v4).unwrap(); // already there: fine
    nl.add_address(br.index, v6).unwrap();
    nl.add_address(br.index, v6).unwrap();

    let mine = nl.addresses(Some(br.index)).unwrap();
    assert!(mine.contains(&(br.index, v4)), "{mine:?}");
    assert!(mine.contains(&(br.index, v6)), "{mine:?}");
    assert!(mine.iter().all(|(i, _)| *i == br.index), "{mine:?}");
    assert_eq!(mine.iter().filter(|(_, a)| *a == v4).count(), 1);

    let all = nl.addresses(None).unwrap();
    assert!(all.contains(&(lo.index, net("127.0.0.1/8"))), "{all:?}");
    assert!(all.contains(&(lo.index, net("::1/128"))), "{all:?}");
    assert!(all.contains(&(br.index, v4)), "{all:?}");

    nl.del_address(br.index, v4).unwrap();
    nl.del_address(br.index, v6).unwrap();
    let mine = nl.addresses(Some(br.index)).unwrap();
    assert!(!mine.iter().any(|(_, a)| *a == v4 || *a == v6), "{mine:?}");

    let err = nl.del_address(br.index, v4).unwrap_err();
    assert_eq!(err.to_string(), format!("delete address 10.1.2.3/24 from br-addr(index {})", br.index));
    let err = nl.add_address(424242, net("10.9.9.9/24")).unwrap_err();
    assert_eq!(err.to_string(), "add address 10.9.9.9/24 to index 424242");
    assert!(!detail(&err).is_empty());
}

#[test]
fn routes_add_list_delete() {
    require_root();
    let t = TestNs::new();
    let mut nl = t.netlink();
    // A veth pair with both ends here and up has carrier, as a real uplink would.
    let peer = VethPeer { name: "rt0p", netns: None, mac: None };
    let dev = nl.create_veth("rt0", &peer, None, None).unwrap();
    nl.set_up(dev.index).unwrap();
    nl.set_up(dev.peer_index.unwrap()).unwrap();
    nl.add_address(dev.index, net("10.2.0.2/24")).unwrap();
    nl.add_address(dev.index, net("fd00:2::2/64")).unwrap();

    let entry = |dst: &str, gw: Option<&str>| RouteEntry {
        dst: net(dst),
        gateway: gw.map(ip),
        oif: Some(dev.index),
        table: None,
        priority: None,
        mtu: None,
        scope: None,
    };
    let default4 = entry("0.0.0.0/0", Some("10.2.0.1"));
    let net4 = RouteEntry { priority: Some(50), mtu: Some(1300), ..entry("10.3.0.0/16", Some("10.2.0.1")) };
    let link4 = entry("10.4.0.0/16", None);
    let default6 = entry("::/0", Some("fd00:2::1"));
    let net6 = RouteEntry { mtu: Some(1280), ..entry("fd00:9::/64", Some("fd00:2::1")) };
    for r in [&default4, &net4, &link4, &default6, &net6] {
        nl.add_route(r).unwrap_or_else(|e| panic!("{e}"));
    }
    nl.add_route(&default4).unwrap(); // already there: fine
    nl.add_route(&net6).unwrap();

    let routes = nl.routes().unwrap();
    let find = |dst: &str| -> RouteEntry {
        routes.iter().find(|r| r.dst == net(dst)).cloned().unwrap_or_else(|| panic!("no route to {dst} in {routes:?}"))
    };
    let r = find("0.0.0.0/0");
    assert_eq!(r.gateway, Some(ip("10.2.0.1")));
    assert_eq!(r.oif, Some(dev.index));
    assert_eq!(r.scope, Some(0));
    assert_eq!(r.table, Some(254));
    assert_eq!(r.priority, None);
    assert_eq!(r.mtu, None);
    let r = find("10.3.0.0/16");
    assert_eq!((r.gateway, r.priority, r.mtu), (Some(ip("10.2.0.1")), Some(50), Some(1300)));
    let r = find("10.4.0.0/16");
    assert_eq!((r.gateway, r.oif, r.scope), (None, Some(dev.index), Some(253)));
    let r = find("10.2.0.0/24"); // the kernel's connected route
    assert_eq!((r.gateway, r.oif, r.scope), (None, Some(dev.index), Some(253)));
    let r = find("::/0");
    assert_eq!((r.gateway, r.oif, r.table), (Some(ip("fd00:2::1")), Some(dev.index), Some(254)));
    let r = find("fd00:9::/64");
    assert_eq!((r.gateway, r.mtu), (Some(ip("fd00:2::1")), Some(1280)));
    assert!(routes.iter().all(|r| r.table == Some(254)));
    // Local routes (table local) are not listed.
    assert!(!routes.iter().any(|r| r.dst == net("10.2.0.2/32")), "{routes:?}");

    for r in [&default4, &net4, &link4, &default6, &net6] {
        nl.del_route(r).unwrap_or_else(|e| panic!("{e}"));
    }
    let routes = nl.routes().unwrap();
    for dst in ["0.0.0.0/0", "10.3.0.0/16", "10.4.0.0/16", "::/0", "fd00:9::/64"] {
        assert!(!routes.iter().any(|r| r.dst == net(dst)), "{dst} still in {routes:?}");
    }
    let err = nl.del_route(&net4).unwrap_err();
    assert_eq!(err.to_string(), format!("delete route 10.3.0.0/16 via 10.2.0.1 dev rt0(index {}) metric 50", dev.index));

    // A gateway that is not reachable: the kernel says why, and the error says what.
    let err = nl.add_route(&entry("10.5.0.0/16", Some("192.0.2.1"))).unwrap_err();
    assert!(err.to_string().starts_with("add route 10.5.0.0/16 via 192.0.2.1 dev rt0"), "{err}");
    assert!(!detail(&err).is_empty());
}

#[test]
fn link_operations() {
    require_root();
    let a = TestNs::new();
    let b = TestNs::new();
    let mut nl = a.netlink();
    let mut nlb = b.netlink();

    assert_eq!(nl.link_by_name("missing0").unwrap(), None);
    assert_eq!(nl.link_by_name("").unwrap(), None);
    assert_eq!(nl.link_by_name("a-name-far-too-long-for-a-link").unwrap(), None);
    assert_eq!(nl.link_by_index(999_999).unwrap(), None);

    let peer = VethPeer { name: "vb0", netns: None, mac: None };
    let v = nl.create_veth("va0", &peer, Some(1400), None).unwrap();
    let peer_index = v.peer_index.expect("veth peer index");
    assert_eq!(link(&mut nl, "vb0").index, peer_index);
    assert_eq!(link(&mut nl, "vb0").mtu, 1400);

    nl.rename(v.index, "va-renamed").unwrap();
    assert_eq!(nl.link_by_name("va0").unwrap(), None);
    assert_eq!(nl.link_by_index(v.index).unwrap().unwrap().name, "va-renamed");

    let mac: MacAddr = "0a:58:0a:00:00:09".parse().unwrap();
    nl.set_mac(v.index, mac).unwrap();
    assert_eq!(link(&mut nl, "va-renamed").mac, Some(mac));

    nl.set_mtu(v.index, 1300).unwrap();
    assert_eq!(link(&mut nl, "va-renamed").mtu, 1300);

    let err = nl.rename(v.index, "lo").unwrap_err(); // taken
    assert_eq!(err.to_string(), format!("rename va-renamed(index {}) to lo", v.index));
    assert!(detail(&err).contains("exists"), "{err}");

    nl.set_up(v.index).unwrap();
    assert!(link(&mut nl, "va-renamed").up);
    nl.set_down(v.index).unwrap();
    assert!(!link(&mut nl, "va-renamed").up);

    nl.set_promisc(v.index, true).unwrap();
    assert!(link(&mut nl, "va-renamed").promisc);
    nl.set_promisc(v.index, false).unwrap();
    assert!(!link(&mut nl, "va-renamed").promisc);

    let br = nl.ensure_bridge("br-ops", None).unwrap();
    nl.set_promisc(br.index, true).unwrap();
    assert!(link(&mut nl, "br-ops").promisc);
    nl.set_master(v.index, br.index).unwrap();
    assert_eq!(link(&mut nl, "va-renamed").master, Some(br.index));

    nl.move_to_netns(peer_index, b.ns()).unwrap();
    assert_eq!(nl.link_by_name("vb0").unwrap(), None);
    let moved = link(&mut nlb, "vb0");
    assert_eq!(moved.kind.as_deref(), Some("veth"));
    assert_eq!(moved.peer_index, Some(v.index));

    assert!(nl.delete_link(v.index).unwrap());
    assert!(!nl.delete_link(v.index).unwrap());
    assert_eq!(nlb.link_by_name("vb0").unwrap(), None);

    let err = nl.set_mtu(999_999, 1500).unwrap_err();
    assert_eq!(err.to_string(), "set MTU 1500 on index 999999");
    assert_eq!(err.errno(), Some(libc::ENODEV));
}

#[test]
fn detached_delete_returns_with_both_ends_gone_and_the_name_free() {
    let a = TestNs::new();
    let b = TestNs::new();
    let mut nlb = b.netlink();
    let peer = VethPeer { name: "vd1", netns: Some(b.ns()), mac: None };
    let v = a.netlink().create_veth("vd0", &peer, None, None).unwrap();

    assert!(a.netlink().delete_link_detached(v.index).unwrap());
    // Both ends are unregistered by the time it returns (the grandchild may still be waiting
    // for the kernel to free them): gone by name and index, in both namespaces.
    let mut nla = a.netlink();
    assert_eq!(nla.link_by_name("vd0").unwrap(), None);
    assert_eq!(nla.link_by_index(v.index).unwrap(), None);
    assert_eq!(nlb.link_by_name("vd1").unwrap(), None);
    // The names are free again at once: a repeated ADD can make the same pair.
    let again = nla.create_veth("vd0", &peer, None, None).unwrap();
    assert_eq!(link(&mut nlb, "vd1").peer_index, Some(again.index));

    // An index that does not exist: nothing was deleted, which is no error.
    assert!(!a.netlink().delete_link_detached(999_999).unwrap());
    // Any other refusal is an error: `lo` cannot be deleted.
    let lo = nla.link_by_name("lo").unwrap().expect("lo");
    let err = a.netlink().delete_link_detached(lo.index).unwrap_err();
    assert_eq!(err.to_string(), format!("delete link {}", lo.index));
}

/// The kernel's answer under an operation's error.
fn detail(err: &NetlinkError) -> String {
    std::error::Error::source(err).map(|s| s.to_string()).unwrap_or_default()
}

/// Black-box fuzzing (berth-fuzz, tests/blackbox.rs): berth-bandwidth's ADD for a container ID
/// of 300 characters failed setting the ifb's alias (over the kernel's 255 bytes) and left the
/// ifb behind. Needs root (a throwaway namespace).
#[test]
fn an_ifb_whose_alias_is_refused_is_not_left_behind() {
    require_root();
    let t = TestNs::new();
    let mut nl = t.netlink();
    let err = nl.create_ifb("tcifb9", None, &"a".repeat(300)).unwrap_err();
    assert!(err.to_string().contains("set alias"), "{err}");
    assert!(nl.link_by_name("tcifb9").unwrap().is_none(), "the ifb went with the failed call");
}

#[test]
fn traffic_control_shapes_redirects_and_reads_back() {
    require_root();
    let t = TestNs::new();
    let mut nl = t.netlink();
    let veth = nl.create_veth("tcv0", &VethPeer { name: "tcv1", netns: None, mac: None }, None, None).unwrap();
    nl.set_up(veth.index).unwrap();
    let ifb = nl.create_ifb("tcifb0", Some(1400), "owner x").unwrap();
    let ifb = nl.link_detail(ifb.index).unwrap().unwrap();
    assert_eq!((ifb.link.kind.as_deref(), ifb.link.mtu, ifb.link.up), (Some("ifb"), 1400, true));
    assert_eq!(ifb.alias.as_deref(), Some("owner x"));

    let bucket = TokenBucket { rate: 1_000_000, burst: 32_768, limit: 57_768 };
    nl.set_root_tbf(veth.index, &bucket).unwrap();
    nl.add_ingress_qdisc(veth.index).unwrap();
    nl.add_ingress_qdisc(veth.index).unwrap(); // already there: kept
    nl.redirect_ingress(veth.index, ifb.link.index).unwrap();
    let qdiscs = nl.qdiscs(veth.index).unwrap();
    let root = qdiscs.iter().find(|q| q.is_root()).expect("a root qdisc");
    assert_eq!((root.kind.as_str(), root.handle, root.token_bucket), ("tbf", TBF_HANDLE, Some(bucket)));
    assert!(qdiscs.iter().any(Qdisc::is_ingress), "{qdiscs:?}");
    assert_eq!(nl.ingress_redirects(veth.index).unwrap(), [ifb.link.index]);

    // A new rate replaces the old one in place.
    let faster = TokenBucket { rate: 2_500_000, burst: 65_536, limit: 128_036 };
    nl.set_root_tbf(veth.index, &faster).unwrap();
    let root = nl.qdiscs(veth.index).unwrap().into_iter().find(|q| q.is_root()).unwrap();
    assert_eq!(root.token_bucket, Some(faster));

    // Deleting twice: the second finds nothing, which is no error.
    assert!(nl.delete_root_qdisc(veth.index, "tbf", TBF_HANDLE).unwrap());
    assert!(!nl.delete_root_qdisc(veth.index, "tbf", TBF_HANDLE).unwrap());
    assert!(nl.delete_ingress_qdisc(veth.index).unwrap());
    assert!(!nl.delete_ingress_qdisc(veth.index).unwrap());
    assert!(nl.ingress_redirects(veth.index).unwrap().is_empty());
    assert!(!nl.qdiscs(veth.index).unwrap().iter().any(|q| q.kind == "tbf" || q.is_ingress()));
    assert!(nl.qdiscs(9999).unwrap().is_empty(), "a link that is gone has no qdiscs");
}
