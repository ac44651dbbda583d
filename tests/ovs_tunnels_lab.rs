//! Open vSwitch tunnels across two hosts, `berth net create -d ovs --tunnel`, in the kernel lab
//! (the openvswitch datapath and its gre and vxlan vports are modules this machine's kernel
//! lacks; see conformance/src/lab). Needs root; the test boots the lab and runs itself inside.
//!
//! Two throwaway "host" namespaces in the VM, joined by an underlay veth `under0`
//! (192.0.2.1/24 on A, 192.0.2.2/24 on B), each with an ovsdb-server and an ovs-vswitchd of its
//! own, started in it. An OVS tunnel port sends through the routes of the namespace its
//! ovs-vswitchd runs in: with one ovs-vswitchd per host namespace, each host is a machine of
//! its own and the encapsulated packets cross `under0` (one ovs-vswitchd for both would hold
//! both underlay addresses and deliver its tunnels' packets to itself, never crossing, with no
//! underlay MTU in the way).

use berth_cni::skel::Command;
use berth_conformance::lab;
use berth_conformance::ovs::OvsDaemons;
use berth_conformance::plugins::PluginSet;
use berth_conformance::throughput::{tcp_bits_per_sec, tcp_transfer};
use berth_conformance::{eventually, Container, TestHost};
use berth_netlink::VethPeer;
use berth_netns::NetNs;
use serde_json::json;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{two_hosts_on_an_underlay, HostBerth as Berth};

const UNDERLAY: [&str; 2] = ["192.0.2.1", "192.0.2.2"];

/// The first packets of a flow go up to ovs-vswitchd, slow under emulation: a path that must
/// work gets a few tries.
fn reaches(from: &Path, to: IpAddr) -> bool {
    eventually(Duration::from_secs(15), || TestHost::ping(from, to))
}

/// The openvswitch vports this test's tunnels need (the datapath loads them on demand too,
/// but an error then would only show as a tunnel's `error` column).
fn load_vports() {
    for module in ["vport_gre", "vport_vxlan"] {
        let status = std::process::Command::new("modprobe").arg(module).status().expect("run modprobe");
        assert!(status.success(), "modprobe {module}: {status}");
    }
}

/// Two hosts, each with its Open vSwitch, and on each the networks `gre` (GRE key 1 to the
/// other host, bridge ovsgre, 10.81.0.0/24) and `vx` (VXLAN VNI 42, bridge ovsvx,
/// 10.82.0.0/24), A handing out the lower half of each subnet, B the upper.
struct Lab {
    // Dropped first: the daemons go before their namespaces.
    ovs: [OvsDaemons; 2],
    hosts: [TestHost; 2],
}

impl Lab {
    fn new() -> Lab {
        load_vports();
        let (a, b) = two_hosts_on_an_underlay();
        let lab = Lab { ovs: [OvsDaemons::start(&a), OvsDaemons::start(&b)], hosts: [a, b] };
        for (i, half) in [(0, "0/25"), (1, "128/25")] {
            let peer = UNDERLAY[1 - i];
            for (net, subnet, bridge, tunnel) in
                [("gre", "10.81.0", "ovsgre", format!("gre:{peer}:1")), ("vx", "10.82.0", "ovsvx", format!("vxlan:{peer}:42"))]
            {
                let (subnet, range) = (format!("{subnet}.0/24"), format!("{subnet}.{half}"));
                let args = ["-d", "ovs", "--subnet", &subnet, "--ip-range", &range, "-o", &format!("bridge={bridge}")];
                lab.berth(i).network(&[&[net][..], &args, &["--tunnel", &tunnel]].concat());
                lab.berth(i).set_plugin_key(net, "ovsdbSocket", &lab.ovs[i].endpoint());
            }
        }
        lab
    }

    fn berth(&self, host: usize) -> Berth<'_> {
        Berth { host: &self.hosts[host] }
    }

    /// The names of `network`'s tunnel ports in host `i`'s Open vSwitch.
    fn tunnels(&self, i: usize, network: &str) -> Vec<String> {
        let ports = self.ovs[i].ovsdb().ports_with(&[("owner", "berth-ovs"), ("network", network)]).unwrap();
        ports.into_iter().filter(|p| p.external_ids.contains_key("tunnel")).map(|p| p.name).collect()
    }
}

/// Pings both ways, a TCP transfer, and DF pings at the largest size and one byte more, from
/// `from` to `to`.
fn crosses_whole(label: &str, from: &Container, to: &Container, to_ip: IpAddr, mtu: u32) {
    assert!(reaches(&from.path, to_ip), "{label}: A's container reaches B's");
    assert!(reaches(&to.path, address_of(from)), "{label}: and back");
    let len = 1 << 20;
    assert_eq!(tcp_transfer(&from.path, &to.path, to_ip, len).expect("transfer"), len, "{label}: a TCP transfer crosses whole");
    let largest = mtu - 28;
    let (crossed, said) = TestHost::ping_df(&from.path, to_ip, largest);
    assert!(crossed, "{label}: a {largest}-byte ping with DF crosses: {said}");
    let (crossed, said) = TestHost::ping_df(&from.path, to_ip, largest + 1);
    assert!(!crossed && said.contains(&format!("message too long, mtu={mtu}")), "{label}: one byte more is refused: {said}");
}

/// lab_: one boot. GRE (key 1) and VXLAN (VNI 42) networks on two hosts: the container MTU is
/// lowered by each encapsulation's overhead, ping and a TCP transfer cross, a DF ping of the
/// largest size crosses and one byte more is refused. A network on GRE key 2 with the same
/// addresses cannot reach key 1's containers. Detaching one container leaves the tunnel for
/// the other; detaching the last removes it, the next attach brings it back. CHECK sees a
/// tunnel changed by hand. `berth net rm` removes a network's tunnel with containers attached.
#[test]
fn lab_ovs_gre_and_vxlan_tunnels_between_two_hosts() {
    if !lab::in_lab() {
        let out = lab::assert_test_passes_inside("lab_ovs_gre_and_vxlan_tunnels_between_two_hosts");
        for line in out.stdout.lines().filter_map(|l| l.split_once("timing: ")) {
            eprintln!("kernel lab: {}", line.1);
        }
        eprintln!("kernel lab: whole run {:.1}s", out.elapsed.as_secs_f64());
        return;
    }
    let started = Instant::now();
    let lab = Lab::new();
    println!("timing: two hosts with Open vSwitch up in {:.1}s", started.elapsed().as_secs_f64());
    let (a, b) = (lab.berth(0), lab.berth(1));

    let (a1, _, gre_mtu) = a.attached("gre");
    let (b1, ip_b1, _) = b.attached("gre");
    assert_eq!(gre_mtu, 1458, "GRE with a key: 1500 less 42");
    crosses_whole("gre", &a1, &b1, ip_b1, gre_mtu);
    let (a2, _, vx_mtu) = a.attached("vx");
    let (b2, ip_b2, _) = b.attached("vx");
    assert_eq!(vx_mtu, 1450, "VXLAN: 1500 less 50");
    crosses_whole("vxlan", &a2, &b2, ip_b2, vx_mtu);
    assert_eq!((lab.tunnels(0, "gre").len(), lab.tunnels(0, "vx").len()), (1, 1), "one tunnel per network");
    println!("timing: GRE and VXLAN checked after {:.1}s", started.elapsed().as_secs_f64());

    two_keys_stay_apart(&lab, &a1, ip_b1);
    the_tunnel_lives_with_the_networks_containers(&lab, &a1, &b1, ip_b1);

    // An administrator changes the tunnel's key: CHECK says so.
    let gre = lab.tunnels(0, "gre").pop().expect("the GRE tunnel");
    a.ok(&["check", "gre", &a1.name]);
    lab.ovs[0].vsctl(&["set", "Interface", &gre, "options:key=7"]);
    let out = a.run(&["check", "gre", &a1.name]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains(&gre), "CHECK of a changed tunnel: {said}");

    // net rm takes the network's tunnel, though a container is still attached.
    a.ok(&["net", "rm", "vx"]);
    assert_eq!(lab.tunnels(0, "vx"), Vec::<String>::new(), "net rm removed the VXLAN tunnel");
    assert!(!lab.ovs[0].names("Interface").iter().any(|i| i.starts_with("vxlan-")), "and its interface");
    assert!(!TestHost::ping(&a2.path, ip_b2), "and with it the way across");
    println!("timing: whole test inside the lab {:.1}s", started.elapsed().as_secs_f64());
}

/// A berth-ovs network on GRE key 2, bridge ovsk2, in the same subnet as `gre` (key 1), its
/// containers with fixed addresses: they reach each other, never key 1's.
fn two_keys_stay_apart(lab: &Lab, a1: &Container, ip_b1: IpAddr) {
    let cni_path = PluginSet::berth().cni_path();
    let mut k2 = Vec::new();
    for (i, address) in [(0, "10.81.0.100"), (1, "10.81.0.228")] {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "k2", "type": "berth-ovs", "bridge": "ovsk2", "createBridge": true,
            "ovsdbSocket": lab.ovs[i].endpoint(),
            "tunnels": [{"type": "gre", "remote_ip": UNDERLAY[1 - i], "key": 2}],
            "ipam": {"type": "berth-static", "addresses": [{"address": format!("{address}/24")}]},
        });
        let c = lab.hosts[i].container();
        lab.hosts[i].call(&cni_path, "berth-ovs", Command::Add, &c.name, Some(&c.path), "eth0", &conf).expect("ADD on key 2");
        k2.push((c, address.parse::<IpAddr>().unwrap()));
    }
    assert!(reaches(&k2[0].0.path, k2[1].1), "key 2 across hosts");
    let crossed: Vec<bool> = std::thread::scope(|s| {
        let pings = [(&a1.path, k2[1].1), (&k2[0].0.path, ip_b1)];
        let running: Vec<_> = pings.into_iter().map(|(from, to)| s.spawn(move || TestHost::ping(from, to))).collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(crossed, [false, false], "key 1 and key 2 must not reach each other");
}

/// Detaching one of A's two containers on `gre` leaves the tunnel for the other; detaching
/// the last removes it; attaching again brings it back.
fn the_tunnel_lives_with_the_networks_containers(lab: &Lab, a1: &Container, b1: &Container, ip_b1: IpAddr) {
    let a = lab.berth(0);
    let gre_tunnels = || lab.tunnels(0, "gre").len();
    let (a3, _, _) = a.attached("gre");
    a.ok(&["detach", "gre", &a3.name]);
    assert_eq!(gre_tunnels(), 1, "one container left: the tunnel stays");
    assert!(reaches(&a1.path, ip_b1), "and carries its traffic");
    a.ok(&["detach", "gre", &a1.name]);
    assert_eq!(gre_tunnels(), 0, "the network's last container took the tunnel with it");
    assert_eq!(lab.tunnels(1, "gre").len(), 1, "B's tunnel is B's business");
    a.ok(&["attach", "gre", &a1.name]);
    assert_eq!(gre_tunnels(), 1, "a new first container brings it back");
    assert!(reaches(&b1.path, address_of(a1)), "B's container reaches A's again");
}

/// A container's eth0 IPv4 address.
fn address_of(c: &Container) -> IpAddr {
    let mut nl = berth_netlink::Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
    let eth0 = nl.link_by_name("eth0").unwrap().expect("eth0");
    nl.addresses(Some(eth0.index)).unwrap().into_iter().map(|(_, a)| a.addr()).find(IpAddr::is_ipv4).expect("an address")
}

/// lab_, on demand (`BERTH_OVS_TUNNEL_BENCH=1`): TCP throughput between the same two
/// containers across the GRE tunnel and across a veth joining their namespaces directly, in
/// one run (BENCHMARKS.md). Under the lab's emulated CPU only the ratio means anything.
#[test]
fn lab_ovs_gre_throughput_bench() {
    if !lab::in_lab() {
        if std::env::var("BERTH_OVS_TUNNEL_BENCH").is_err() {
            eprintln!("lab_ovs_gre_throughput_bench: set BERTH_OVS_TUNNEL_BENCH=1 to run it");
            return;
        }
        let out = lab::assert_test_passes_inside("lab_ovs_gre_throughput_bench");
        out.stdout.lines().filter_map(|l| l.split_once("bench: ")).for_each(|l| println!("{}", l.1));
        return;
    }
    let lab = Lab::new();
    let (c1, _, _) = lab.berth(0).attached("gre");
    let (c2, ip2, _) = lab.berth(1).attached("gre");
    assert!(reaches(&c1.path, ip2));
    let (ns1, ns2) = (NetNs::open(&c1.path).unwrap(), NetNs::open(&c2.path).unwrap());
    let mut nl1 = berth_netlink::Netlink::open_in(&ns1).unwrap();
    nl1.create_veth("direct0", &VethPeer { name: "direct0", netns: Some(&ns2), mac: None }, None, None).unwrap();
    let mut nl2 = berth_netlink::Netlink::open_in(&ns2).unwrap();
    for (nl, addr) in [(&mut nl1, "10.99.0.1/24"), (&mut nl2, "10.99.0.2/24")] {
        let link = nl.link_by_name("direct0").unwrap().unwrap();
        nl.add_address(link.index, addr.parse().unwrap()).unwrap();
        nl.set_up(link.index).unwrap();
    }
    let direct: IpAddr = "10.99.0.2".parse().unwrap();
    assert!(reaches(&c1.path, direct));
    for round in 1..=3 {
        let gre = tcp_bits_per_sec(&ns1, &ns2, ip2, Duration::from_secs(3)).unwrap();
        let veth = tcp_bits_per_sec(&ns1, &ns2, direct, Duration::from_secs(3)).unwrap();
        println!(
            "bench: round {round}: OVS GRE {:.0} Mbit/s, direct veth {:.0} Mbit/s, ratio {:.2}",
            gre / 1e6,
            veth / 1e6,
            gre / veth
        );
    }
}
