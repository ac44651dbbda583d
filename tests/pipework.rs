//! `berth pipework` on Docker containers started with `--network none`, as the seeds wire
//! them by hand. Needs root and docker.io: each test runs a dockerd of its own inside a
//! throwaway host namespace (conformance's `DockerLab`), removed afterwards. What a user sees
//! is asserted: the interface in the container (name, address and broadcast, MAC, MTU,
//! routes), pings across, the firewall left as it was, nothing left after `--remove`.

mod common;

use berth_conformance::docker::DockerLab;
use berth_netlink::{Link, Netlink, RouteEntry, VethPeer};
use common::Berth;
use ipnet::IpNet;
use std::net::IpAddr;
use std::process::Command;

/// What the container's interface looks like from inside.
struct Seen {
    link: Link,
    addresses: Vec<IpNet>,
    routes: Vec<RouteEntry>,
}

fn seen(lab: &DockerLab, container: &str, ifname: &str) -> Option<Seen> {
    let mut nl = Netlink::open_in(&lab.netns_of(container)).expect("netlink in the container");
    let link = nl.link_by_name(ifname).expect("links")?;
    let addresses = nl.addresses(Some(link.index)).expect("addresses").into_iter().map(|(_, a)| a).collect();
    let routes = nl.routes().expect("routes").into_iter().filter(|r| r.oif == Some(link.index)).collect();
    Some(Seen { link, addresses, routes })
}

fn v4(lab: &DockerLab, container: &str, ifname: &str) -> IpAddr {
    let seen = seen(lab, container, ifname).unwrap_or_else(|| panic!("{container} has no {ifname}"));
    seen.addresses.iter().find(|a| a.addr().is_ipv4()).expect("an IPv4 address").addr()
}

/// The host namespace's whole firewall, as nft and iptables print it.
fn firewall(lab: &DockerLab) -> String {
    let mut out = String::new();
    for (tool, args) in [("nft", &["list", "ruleset"][..]), ("iptables-save", &[][..]), ("ip6tables-save", &[][..])] {
        let mut cmd = Command::new(tool);
        cmd.args(args);
        lab.host.ns.prepare_command(&mut cmd).unwrap();
        let printed = cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        // iptables-save stamps the time: the rules are what matter.
        out += &printed.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    }
    out
}

fn sleepers(lab: &DockerLab, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| lab.start_sleeper(n, "none", &[])).collect()
}

#[test]
fn a_linux_bridge_by_name_and_id_prefix_with_options_and_nothing_left_after_remove() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    let ids = sleepers(&lab, &["web", "db"]);
    lab.host.netlink().ensure_bridge("br1", Some(1400)).expect("a bridge with MTU 1400");
    let before = firewall(&lab);

    berth.ok(&["pipework", "br1", "web", "192.168.1.5/24@192.168.1.254"]);
    berth.ok(&["pipework", "br1", "-i", "eth2", "-l", "vethdb", &ids[1][..12], "192.168.1.6/24", "U:db"]);
    let web = seen(&lab, "web", "eth1").expect("pipework's default interface eth1");
    assert_eq!(web.addresses, vec!["192.168.1.5/24".parse::<IpNet>().unwrap()]);
    assert_eq!(web.link.mtu, 1400, "the MTU of the bridge");
    assert!(web.routes.iter().any(|r| r.dst.prefix_len() == 0 && r.gateway == Some("192.168.1.254".parse().unwrap())));
    let db = seen(&lab, "db", "eth2").expect("-i eth2");
    // echo db | md5sum: 274ddd5bb3957d07968fbcd9b1768220
    assert_eq!(db.link.mac.unwrap().to_string(), "02:27:4d:dd:5b:b3", "U:db as pipework derives it");
    assert!(lab.host.netlink().link_by_name("vethdb").unwrap().is_some(), "-l names the host end");
    assert!(lab.pings("web", "192.168.1.6".parse().unwrap()), "web -> db across br1");
    let broadcast = lab.exec("web", &["ip", "-4", "addr", "show", "dev", "eth1"]);
    assert!(String::from_utf8_lossy(&broadcast.stdout).contains("brd 192.168.1.255"), "the address has its broadcast");
    let announce = lab.exec("web", &["cat", "/proc/sys/net/ipv4/conf/eth1/arp_notify"]);
    assert_eq!(String::from_utf8_lossy(&announce.stdout).trim(), "1", "gratuitous ARP when eth1 came up, as pipework's arping -A");

    berth.ok(&["pipework", "br1", "web", "192.168.1.5/24@192.168.1.254"]);
    assert_eq!(seen(&lab, "web", "eth1").unwrap().addresses.len(), 1, "the same line twice changes nothing");
    let listed = berth.ok(&["pipework", "ls"]);
    assert!(listed.contains("br1") && listed.contains("192.168.1.5") && listed.contains("eth2"), "{listed}");
    assert_eq!(firewall(&lab), before, "pipework never touches the firewall");

    berth.ok(&["pipework", "br1", "web", "192.168.1.5/24@192.168.1.254", "--remove"]);
    berth.ok(&["pipework", "br1", "-i", "eth2", "-l", "vethdb", "db", "192.168.1.6/24", "U:db", "--remove"]);
    assert!(seen(&lab, "web", "eth1").is_none() && seen(&lab, "db", "eth2").is_none());
    assert!(lab.host.netlink().links().unwrap().iter().all(|l| l.kind.as_deref() != Some("veth")), "no veth left");
    assert!(!berth.ok(&["pipework", "ls"]).contains("br1"));
}

#[test]
fn a_missing_br_name_is_created_and_0_0_leaves_the_interface_without_an_address() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    sleepers(&lab, &["bare"]);
    berth.ok(&["pipework", "brnew", "bare", "0/0", "26:2e:71:98:60:8f"]);
    let bridge = lab.host.netlink().link_by_name("brnew").unwrap().expect("brnew was created");
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    let bare = seen(&lab, "bare", "eth1").expect("eth1");
    assert!(bare.link.up && bare.addresses.iter().all(|a| !a.addr().is_ipv4()), "up, no IPv4 address");
    assert_eq!(bare.link.mac.unwrap().to_string(), "26:2e:71:98:60:8f");
    berth.ok(&["pipework", "brnew", "bare", "0/0", "26:2e:71:98:60:8f", "--remove"]);
    assert!(seen(&lab, "bare", "eth1").is_none());
}

#[test]
fn a_macvlan_on_a_nic_joins_two_containers_and_route_rule_and_tc_reach_inside() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    sleepers(&lab, &["m1", "m2"]);
    // A veth in the host namespace stands in for a NIC (its peer is the "wire").
    let mut host = lab.host.netlink();
    let wire_ns = lab.host.container();
    let wire = berth_netns::NetNs::open(&wire_ns.path).unwrap();
    let nic = host.create_veth("nic0", &VethPeer { name: "wire0", netns: Some(&wire), mac: None }, Some(1450), None).unwrap();
    host.set_up(nic.index).unwrap();
    Netlink::open_in(&wire).unwrap().set_up_by_name("wire0").unwrap();

    berth.ok(&["pipework", "nic0", "m1", "10.60.0.11/24@10.60.0.1"]);
    berth.ok(&["pipework", "nic0", "m2", "10.60.0.12/24"]);
    let m1 = seen(&lab, "m1", "eth1").expect("eth1 in m1");
    assert_eq!((m1.link.kind.as_deref(), m1.link.mtu), (Some("macvlan"), 1450), "a macvlan with the NIC's MTU");
    assert!(lab.pings("m2", v4(&lab, "m1", "eth1")), "two macvlans in bridge mode reach each other");

    berth.ok(&["pipework", "route", "m1", "add", "10.99.0.0/16", "via", "10.60.0.12"]);
    let routed = seen(&lab, "m1", "eth1").unwrap().routes;
    assert!(routed.iter().any(|r| r.dst == "10.99.0.0/16".parse().unwrap() && r.gateway == Some("10.60.0.12".parse().unwrap())));
    let shown = String::from_utf8_lossy(&lab.exec("m1", &["ip", "route"]).stdout).into_owned();
    assert!(shown.contains("10.99.0.0/16 via 10.60.0.12"), "the container sees the route: {shown}");
    berth.ok(&["pipework", "rule", "m1", "add", "from", "10.60.0.11", "table", "100", "priority", "1000"]);
    let rules = String::from_utf8_lossy(&lab.exec("m1", &["ip", "rule"]).stdout).into_owned();
    assert!(rules.contains("1000:") && rules.contains("lookup 100"), "{rules}");
    berth.ok(&["pipework", "tc", "m1", "qdisc", "add", "dev", "eth1", "root", "tbf", "rate", "10mbit", "burst", "32kb", "latency", "50ms"]);
    let mut nl = Netlink::open_in(&lab.netns_of("m1")).unwrap();
    let qdiscs = nl.qdiscs(m1.link.index).unwrap();
    assert!(qdiscs.iter().any(|q| q.kind == "tbf" && q.token_bucket.is_some_and(|b| b.rate == 1_250_000)), "{qdiscs:?}");
    let bad = berth.run(&["pipework", "route", "m1", "add", "10.98.0.0/16", "nexthop", "x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("supported"), "{}", String::from_utf8_lossy(&bad.stderr));

    for (name, line) in [("m1", "10.60.0.11/24@10.60.0.1"), ("m2", "10.60.0.12/24")] {
        berth.ok(&["pipework", "nic0", name, line, "--remove"]);
        assert!(seen(&lab, name, "eth1").is_none());
    }
}

#[test]
fn wait_inside_a_container_returns_once_the_interface_is_wired() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    sleepers(&lab, &["waiter"]);
    lab.ok(&["cp", env!("CARGO_BIN_EXE_berth"), "waiter:/berth"]);
    let socket = lab.docker_host();
    let waiting = std::thread::spawn(move || {
        let out = Command::new(berth_conformance::docker::DOCKER)
            .args(["-H", &socket, "exec", "waiter", "/berth", "pipework", "--wait", "-i", "eth1"])
            .output()
            .expect("docker exec");
        out.status.success()
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!waiting.is_finished(), "--wait returned before eth1 existed");
    berth.ok(&["pipework", "brwait", "waiter", "10.61.0.2/24"]);
    assert!(berth_conformance::eventually(std::time::Duration::from_secs(10), || waiting.is_finished()), "--wait still waiting");
    assert!(waiting.join().unwrap(), "--wait exits 0");
}

#[test]
fn bad_lines_fail_saying_why_and_leave_nothing() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    sleepers(&lab, &["web"]);
    lab.host.netlink().ensure_bridge("br1", None).unwrap();
    for (line, says) in [
        (&["br1", "nosuch", "10.62.0.2/24"][..], "no container"),
        (&["br1", "web", "10.62.0.2"][..], "IP/PREFIX"),
        (&["br1", "web", "10.62.0.2/24", "@100"][..], "Linux bridge"),
        (&["eth9", "web", "10.62.0.2/24"][..], "does not exist"),
        (&["br1", "-i", "lo", "web", "10.62.0.2/24"][..], "already has an interface named lo"),
    ] {
        let mut args = vec!["pipework"];
        args.extend_from_slice(line);
        let out = berth.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{line:?}: {stderr}");
    }
    let veths = lab.host.netlink().links().unwrap().into_iter().filter(|l| l.kind.as_deref() == Some("veth")).count();
    assert_eq!(veths, 0, "nothing left behind");
    assert!(!berth.ok(&["pipework", "ls"]).contains("br1"));
    let help = berth.ok(&["pipework", "--help"]);
    assert!(help.contains("ovs0 ovs-test-01 172.20.0.2/24 @100") && help.contains("--direct-phys"), "{help}");
}

#[test]
fn direct_phys_moves_the_interface_itself_and_remove_gives_it_back() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    sleepers(&lab, &["owner"]);
    let mut host = lab.host.netlink();
    let wire = lab.host.container();
    let wire_ns = berth_netns::NetNs::open(&wire.path).unwrap();
    let nic = host.create_veth("nic1", &VethPeer { name: "wire1", netns: Some(&wire_ns), mac: None }, Some(1480), None).unwrap();
    let mac = nic.mac.unwrap().to_string();

    berth.ok(&["pipework", "--direct-phys", "nic1", "owner", "10.63.0.2/24"]);
    assert!(host.link_by_name("nic1").unwrap().is_none(), "nic1 left the host");
    let moved = seen(&lab, "owner", "eth1").expect("nic1 is eth1 in the container");
    assert_eq!((moved.link.mac.unwrap().to_string(), moved.link.mtu), (mac.clone(), 1480), "the interface itself");
    assert_eq!(moved.addresses, vec!["10.63.0.2/24".parse::<IpNet>().unwrap()]);

    berth.ok(&["pipework", "--direct-phys", "nic1", "owner", "10.63.0.2/24", "--remove"]);
    assert!(seen(&lab, "owner", "eth1").is_none());
    let back = host.link_by_name("nic1").unwrap().expect("nic1 is back in the host");
    assert_eq!(back.mac.unwrap().to_string(), mac);
}

#[test]
fn dhcp_leases_from_the_lans_server_and_remove_releases_it() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    sleepers(&lab, &["leaser"]);
    let mut host = lab.host.netlink();
    let lan = host.ensure_bridge("brlan", None).unwrap();
    host.add_address(lan.index, "10.70.0.1/24".parse().unwrap()).unwrap();
    host.set_up(lan.index).unwrap();
    let scratch = lab.path("dnsmasq");
    std::fs::create_dir_all(&scratch).unwrap();
    let dnsmasq = berth_conformance::dnsmasq::Dnsmasq::start(&lab.host.path(), "brlan", "10.70.0.50,10.70.0.150", &scratch, &[]);
    let _keeper = berth_conformance::dnsmasq::KeeperGuard::new(lab.path("state/dhcp.sock"));

    berth.ok(&["pipework", "brlan", "leaser", "dhcp"]);
    let address = v4(&lab, "leaser", "eth1");
    assert!(address.to_string().starts_with("10.70.0."), "a lease from dnsmasq: {address}");
    assert!(dnsmasq.leased().iter().any(|l| l.contains(&address.to_string())), "dnsmasq's lease file has it");
    berth.ok(&["pipework", "brlan", "leaser", "dhcp", "--remove"]);
    assert!(seen(&lab, "leaser", "eth1").is_none());
    assert!(berth_conformance::eventually(std::time::Duration::from_secs(5), || dnsmasq.released(&address.to_string())), "released");
}

#[test]
fn udhcpc_mac_hostmac_and_a_gateway_outside_the_prefix() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    sleepers(&lab, &["udhcp", "bymac"]);
    let mut host = lab.host.netlink();
    let lan = host.ensure_bridge("brudhcp", None).unwrap();
    host.add_address(lan.index, "10.71.0.1/24".parse().unwrap()).unwrap();
    host.set_up(lan.index).unwrap();
    let scratch = lab.path("dnsmasq");
    std::fs::create_dir_all(&scratch).unwrap();
    let dnsmasq = berth_conformance::dnsmasq::Dnsmasq::start(&lab.host.path(), "brudhcp", "10.71.0.50,10.71.0.150", &scratch, &[]);
    let resolv_before = std::fs::read("/etc/resolv.conf").unwrap_or_default();

    // pipework's udhcpc form: Debian's udhcpc, run in the guest's network namespace.
    berth.ok(&["pipework", "brudhcp", "udhcp", "udhcpc"]);
    let address = v4(&lab, "udhcp", "eth1");
    assert!(dnsmasq.leased().iter().any(|l| l.contains(&address.to_string())), "udhcpc's lease {address} is dnsmasq's");
    assert_eq!(std::fs::read("/etc/resolv.conf").unwrap_or_default(), resolv_before, "the host's resolv.conf is untouched");
    berth.ok(&["pipework", "brudhcp", "udhcp", "udhcpc", "--remove"]);

    // mac:HOSTMAC picks the bridge by its MAC; a gateway outside the prefix is reached on-link.
    let mac = host.link_by_name("brudhcp").unwrap().unwrap().mac.unwrap().to_string();
    berth.ok(&["pipework", &format!("mac:{mac}"), "bymac", "10.71.1.5/24@10.71.0.1"]);
    let bymac = seen(&lab, "bymac", "eth1").expect("eth1 on the bridge with that MAC");
    assert!(bymac.routes.iter().any(|r| r.dst == "10.71.0.1/32".parse().unwrap() && r.gateway.is_none()), "on-link route to the gateway");
    assert!(bymac.routes.iter().any(|r| r.dst.prefix_len() == 0 && r.gateway == Some("10.71.0.1".parse().unwrap())));
    // The gateway's side knows the container's subnet is on that link, as a LAN's router would.
    let back = RouteEntry { dst: "10.71.1.0/24".parse().unwrap(), gateway: None, oif: Some(lan.index), table: None, priority: None, mtu: None, scope: None };
    host.add_route(&back).unwrap();
    assert!(lab.pings("bymac", "10.71.0.1".parse().unwrap()), "the gateway outside the prefix answers");
    berth.ok(&["pipework", &format!("mac:{mac}"), "bymac", "10.71.1.5/24@10.71.0.1", "--remove"]);
    assert!(seen(&lab, "bymac", "eth1").is_none());
}
