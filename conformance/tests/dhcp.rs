//! berth-dhcp against a real DHCP server: dnsmasq (Debian `dnsmasq-base`) on a bridge in a
//! throwaway host namespace, containers attached by berth-bridge in layer 2 (no gateway on the
//! bridge) or by berth-macvlan to a LAN namespace. Needs root (namespaces). Every test stops
//! dnsmasq and the keeper it caused to start, and removes their files, even when it fails.
//!
//! dnsmasq's leases last at least two minutes, so the renewal tests ask it for short
//! renewal and rebinding times (options 58 and 59) instead.

use berth_conformance::dnsmasq::{Dnsmasq, KeeperGuard};
use berth_conformance::plugins::berth_dir;
use berth_conformance::{eventually, parse_result, Container, TestHost};
use berth_cni::exec::{exec_plugin, find_plugin, CallEnv};
use berth_cni::skel::Command;
use berth_cni::spec::RunResult;
use berth_cni::CniError;
use berth_netlink::{Netlink, VethPeer};
use berth_netns::NetNs;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BRIDGE: &str = "dhbr0";
const SERVER: &str = "10.61.0.1";
/// Renew after 3 s, rebind after 5 s: renewals within seconds, on a two-minute lease.
const SHORT_TIMES: [&str; 2] = ["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,5"];

/// A host with a bridge holding the server's address, dnsmasq on it, and the keeper's socket
/// in the host's scratch directory. Fields drop in order: the keeper and the server before
/// the host, whose scratch directory holds their pid files.
struct Lan {
    keeper: KeeperGuard,
    server: Dnsmasq,
    host: TestHost,
    cni_path: Vec<PathBuf>,
}

impl Lan {
    fn new(extra: &[&str]) -> Lan {
        Lan::with_socket(extra, "keeper.sock")
    }

    /// With the keeper's socket at `socket`, relative to the host's scratch directory.
    fn with_socket(extra: &[&str], socket: &str) -> Lan {
        let host = TestHost::new();
        let mut nl = host.netlink();
        let bridge = nl.ensure_bridge(BRIDGE, None).expect("bridge");
        nl.add_address(bridge.index, format!("{SERVER}/24").parse().unwrap()).expect("server address");
        nl.set_up(bridge.index).expect("bridge up");
        let dir = host.dir.path().to_path_buf();
        // Before dnsmasq, so a dnsmasq that fails to start still leaves no keeper behind.
        let socket = dir.join(socket);
        std::fs::create_dir_all(socket.parent().expect("a folder")).expect("the socket's folder");
        let keeper = KeeperGuard::new(socket);
        let mut options = vec![
            "--dhcp-option=option:router,10.61.0.1",
            "--dhcp-option=option:dns-server,10.61.0.53",
            "--dhcp-option=option:domain-name,lan.test",
            "--dhcp-option=option:classless-static-route,192.168.99.0/24,10.61.0.254,0.0.0.0/0,10.61.0.1",
        ];
        options.extend_from_slice(extra);
        let server = Dnsmasq::start(&host.path(), BRIDGE, "10.61.0.50,10.61.0.150", &dir, &options);
        Lan { keeper, server, host, cni_path: vec![berth_dir()] }
    }

    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "dhnet",
            "type": "berth-bridge",
            "bridge": BRIDGE,
            "ipam": {"type": "berth-dhcp", "daemonSocketPath": self.keeper.socket, "timeout": 3},
        })
    }

    fn call(&self, command: Command, c: &Container, conf: &Value) -> Result<Vec<u8>, CniError> {
        self.host.call(&self.cni_path, conf["type"].as_str().unwrap(), command, &c.name, Some(&c.path), "eth0", conf)
    }

    fn add(&self, c: &Container) -> RunResult {
        let conf = self.conf("1.0.0");
        parse_result(&self.call(Command::Add, c, &conf).unwrap_or_else(|e| panic!("ADD: {e}")), "1.0.0")
    }

    /// CHECK with the ADD's result as prevResult.
    fn check(&self, c: &Container, result: &RunResult) -> Result<Vec<u8>, CniError> {
        let mut conf = self.conf("1.1.0");
        conf["prevResult"] = result.to_value("1.1.0").unwrap();
        self.call(Command::Check, c, &conf)
    }

    /// STATUS or GC of the IPAM plugin itself, as the bridge forwards them.
    fn ipam_call(&self, command: Command, extra: Value) -> Result<Vec<u8>, CniError> {
        let mut conf = self.conf("1.1.0");
        conf["type"] = json!("berth-dhcp");
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        self.host.call(&self.cni_path, "berth-dhcp", command, "", None, "", &conf)
    }
}

fn address(result: &RunResult) -> String {
    result.ips[0].address.addr().to_string()
}

fn container_addresses(c: &Container) -> Vec<String> {
    let ns = NetNs::open(&c.path).unwrap();
    let mut nl = Netlink::open_in(&ns).unwrap();
    let Some(link) = nl.link_by_name("eth0").unwrap() else { return vec![] };
    nl.addresses(Some(link.index)).unwrap().into_iter().map(|(_, a)| a.addr().to_string()).collect()
}

#[test]
fn a_lease_with_the_options_asked_for_is_renewed_then_released() {
    let lan = Lan::new(&SHORT_TIMES);
    let c = lan.host.container();
    let result = lan.add(&c);
    let ip = address(&result);
    assert_eq!(result.ips[0].address.prefix_len(), 24);
    assert_eq!(result.ips[0].gateway, Some("10.61.0.1".parse().unwrap()), "the router is the gateway");
    let routes: Vec<String> = result.routes.iter().map(|r| format!("{} via {:?}", r.dst, r.gw)).collect();
    assert!(routes.contains(&"192.168.99.0/24 via Some(10.61.0.254)".to_string()), "option 121: {routes:?}");
    assert!(routes.contains(&"0.0.0.0/0 via Some(10.61.0.1)".to_string()), "{routes:?}");
    assert_eq!(result.dns.nameservers, ["10.61.0.53"]);
    assert_eq!(result.dns.domain, "lan.test");
    assert_eq!(container_addresses(&c), std::slice::from_ref(&ip), "berth-bridge gave eth0 the leased address");
    assert!(lan.server.leased().contains(&ip), "dnsmasq's lease file has it");
    let client_id: Vec<String> = format!("{}/dhnet/eth0", c.name).bytes().map(|b| format!("{b:02x}")).collect();
    let hostname: String = c.name.chars().take(12).collect();
    let lease_line = std::fs::read_to_string(&lan.server.lease_file).unwrap();
    assert!(lease_line.contains(&client_id.join(":")), "client identifier sent: {lease_line}");
    assert!(lease_line.contains(&format!(" {hostname} ")), "hostname sent: {lease_line}");
    assert!(bridge_holds_only_the_server_address(&lan), "layer 2: no gateway address on the bridge");

    // Renewed before T1 comes round twice, while CHECK stays happy.
    let first = lan.server.acks(&ip);
    assert!(eventually(Duration::from_secs(15), || lan.server.acks(&ip) >= first + 2), "renewed: {}", lan.server.log());
    lan.check(&c, &result).expect("CHECK while the lease is renewed");
    lan.ipam_call(Command::Status, json!({})).expect("STATUS with the keeper running");

    lan.call(Command::Del, &c, &lan.conf("1.0.0")).expect("DEL");
    assert!(eventually(Duration::from_secs(5), || !lan.server.leased().contains(&ip)), "released in dnsmasq's lease file");
    assert!(lan.server.released(&ip));
    assert_eq!(lan.keeper.state_files(), 0, "the keeper forgot it");
    let e = lan.check(&c, &result).expect_err("CHECK after DEL");
    assert!(e.code == 3 || e.code == 100, "{e}");
    lan.call(Command::Del, &c, &lan.conf("1.0.0")).expect("a second DEL is fine");
}

fn bridge_holds_only_the_server_address(lan: &Lan) -> bool {
    let mut nl = lan.host.netlink();
    let bridge = nl.link_by_name(BRIDGE).unwrap().unwrap();
    let v4 = nl.addresses(Some(bridge.index)).unwrap().into_iter().filter(|(_, a)| a.addr().is_ipv4());
    v4.map(|(_, a)| a.addr().to_string()).collect::<Vec<_>>() == [SERVER]
}

#[test]
fn a_server_away_fails_check_and_status_until_it_returns() {
    let mut lan = Lan::new(&SHORT_TIMES);
    let c = lan.host.container();
    let result = lan.add(&c);
    let ip = address(&result);
    lan.server.stop();
    // The renewal at T1 (3 s) waits 3 s for an answer.
    let failed = eventually(Duration::from_secs(15), || lan.check(&c, &result).is_err());
    assert!(failed, "CHECK fails once a renewal went unanswered");
    let e = lan.check(&c, &result).unwrap_err();
    assert_eq!(e.code, 11, "{e}");
    assert!(e.msg.contains(&ip) && e.msg.contains("no DHCP server answered"), "{e}");
    let e = lan.ipam_call(Command::Status, json!({})).expect_err("STATUS reports the server away");
    assert_eq!(e.code, 51, "{e}");

    let acks = lan.server.acks(&ip);
    lan.server.restart();
    assert!(eventually(Duration::from_secs(20), || lan.server.acks(&ip) > acks), "renewed once the server is back");
    assert!(eventually(Duration::from_secs(5), || lan.check(&c, &result).is_ok()), "CHECK passes again");
    lan.ipam_call(Command::Status, json!({})).expect("STATUS passes again");
    lan.call(Command::Del, &c, &lan.conf("1.0.0")).expect("DEL");
}

#[test]
fn a_killed_keeper_is_restarted_by_the_next_add_and_keeps_renewing() {
    let lan = Lan::new(&SHORT_TIMES);
    let (c1, c2) = (lan.host.container(), lan.host.container());
    let ip1 = address(&lan.add(&c1));
    let first = lan.keeper.pid().expect("the first ADD started the keeper");
    lan.keeper.kill();
    let acks = lan.server.acks(&ip1);
    let ip2 = address(&lan.add(&c2));
    let second = lan.keeper.pid().expect("the next ADD started it again");
    assert_ne!(first, second);
    assert!(eventually(Duration::from_secs(15), || lan.server.acks(&ip1) >= acks + 2), "the lease of before is renewed");
    assert!(eventually(Duration::from_secs(10), || lan.server.acks(&ip2) >= 2), "and the new one too");

    // A container whose namespace is gone is no longer renewed, and forgotten.
    lan.host.remove_container(&c1);
    assert!(eventually(Duration::from_secs(10), || lan.keeper.state_files() == 1), "the keeper forgot the lease of a gone namespace");
    let after = lan.server.acks(&ip1);
    assert!(eventually(Duration::from_secs(8), || lan.server.acks(&ip2) >= 4));
    assert_eq!(lan.server.acks(&ip1), after, "no more renewals for it");
    lan.call(Command::Del, &c2, &lan.conf("1.0.0")).expect("DEL");
}

#[test]
fn twenty_containers_lease_at_once_with_distinct_addresses() {
    let lan = Lan::new(&[]);
    let containers: Vec<Container> = (0..20).map(|_| lan.host.container()).collect();
    let conf = lan.conf("1.0.0").to_string();
    let plugin = find_plugin("berth-bridge", &lan.cni_path).unwrap();
    let host_path = lan.host.path();
    let add = |c: &Container| -> Result<Vec<u8>, CniError> {
        let host = NetNs::open(&host_path).unwrap();
        let env = CallEnv { command: Command::Add, container_id: &c.name, netns: Some(&c.path), ifname: "eth0", args: "", cni_path: &lan.cni_path };
        exec_plugin(&plugin, &env, conf.as_bytes(), Some(&host))
    };
    let results: Vec<Result<Vec<u8>, CniError>> =
        std::thread::scope(|s| containers.iter().map(|c| s.spawn(move || add(c))).collect::<Vec<_>>().into_iter().map(|h| h.join().unwrap()).collect());
    let mut ips: Vec<String> = results.into_iter().map(|r| address(&parse_result(&r.expect("ADD"), "1.0.0"))).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "distinct addresses: {ips:?}");
    assert_eq!(lan.keeper.state_files(), 20);
    for c in &containers {
        lan.call(Command::Del, c, &lan.conf("1.0.0")).expect("DEL");
    }
    assert!(eventually(Duration::from_secs(5), || lan.server.leased().is_empty()), "all released: {:?}", lan.server.leased());
}

/// A `daemonSocketPath` past the 107 bytes a unix socket path may have: the keeper listens
/// and the plugin connects through the socket's folder (`berth_util::unix`). Needs root.
#[test]
fn a_keeper_socket_path_of_any_length_works() {
    let lan = Lan::with_socket(&[], &format!("{}/keeper.sock", "k".repeat(120)));
    assert!(lan.keeper.socket.as_os_str().len() > 107);
    let c = lan.host.container();
    let result = lan.add(&c);
    assert_eq!(container_addresses(&c), vec![address(&result)]);
    lan.check(&c, &result).expect("CHECK");
    lan.call(Command::Del, &c, &lan.conf("1.0.0")).expect("DEL");
    assert!(eventually(Duration::from_secs(5), || lan.server.leased().is_empty()), "released");
}

#[test]
fn gc_releases_the_leases_of_attachments_not_kept() {
    let lan = Lan::new(&[]);
    let (c1, c2) = (lan.host.container(), lan.host.container());
    let (ip1, ip2) = (address(&lan.add(&c1)), address(&lan.add(&c2)));
    let keep = json!({"cni.dev/valid-attachments": [{"containerID": c1.name, "ifname": "eth0"}]});
    lan.ipam_call(Command::Gc, keep).expect("GC");
    assert!(eventually(Duration::from_secs(5), || !lan.server.leased().contains(&ip2)), "c2's lease released");
    assert!(!lan.server.released(&ip1), "c1's kept");
    assert_eq!(lan.keeper.state_files(), 1);
    lan.call(Command::Del, &c1, &lan.conf("1.0.0")).expect("DEL");
}

#[test]
fn bad_configuration_and_no_server_fail_clearly_in_bounded_time() {
    let mut lan = Lan::new(&[]);
    let c = lan.host.container();
    let mut bad = lan.conf("1.0.0");
    bad["ipam"]["request"] = json!([{"option": "no-such-option"}]);
    let e = lan.call(Command::Add, &c, &bad).expect_err("bad request option");
    assert_eq!(e.code, 7, "{e}");
    assert!(e.msg.contains("request[0].option"), "{e}");
    assert!(container_addresses(&c).is_empty(), "no interface left behind");

    lan.server.stop();
    let started = Instant::now();
    let e = lan.call(Command::Add, &c, &lan.conf("1.0.0")).expect_err("no server");
    let took = started.elapsed();
    assert_eq!(e.code, 11, "{e}");
    assert!(e.msg.contains("eth0") && e.msg.contains("3s"), "names the interface and the wait: {e}");
    assert!(took < Duration::from_secs(6), "bounded by the configured 3 s: took {took:?}");
    assert!(container_addresses(&c).is_empty(), "the veth went again");
    assert_eq!(lan.host.netlink().links().unwrap().iter().filter(|l| l.name.starts_with("veth")).count(), 0);
    assert_eq!(lan.keeper.state_files(), 0);
}

/// An ADD killed after its DHCPREQUEST went out and before it handed the lease over leaves
/// the keeper's pending record and no address in the container; with the keeper killed too,
/// and no DEL or GC ever coming, the restarted keeper releases the address on its own once
/// that ADD's time is past: dnsmasq forgets the lease, although the container's interface
/// never held the address the release comes from. Needs root; about 1 s.
#[test]
fn a_pending_address_whose_add_died_is_released_by_the_restarted_keeper() {
    let lan = Lan::new(&[]);
    let c = lan.host.container();
    let ip = address(&lan.add(&c));
    lan.keeper.kill();
    // What the killed ADD would have left, made from the lease of a whole one.
    let dir = PathBuf::from(format!("{}.leases", lan.keeper.socket.display()));
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("the lease file");
    let lease: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let mut pending = json!({"address": ip, "attempt": 1, "abandon_at": 0});
    for key in ["owner", "netns", "netns_id", "mac", "provide", "server"] {
        pending[key] = lease[key].clone();
    }
    std::fs::write(&file, pending.to_string()).unwrap();
    let ns = NetNs::open(&c.path).unwrap();
    let mut nl = Netlink::open_in(&ns).unwrap();
    let eth0 = nl.link_by_name("eth0").unwrap().expect("eth0");
    for (_, addr) in nl.addresses(Some(eth0.index)).unwrap() {
        nl.del_address(eth0.index, addr).unwrap();
    }
    assert!(lan.server.leased().contains(&ip), "the server holds the lease: {:?}", lan.server.leased());

    let mut keeper = std::process::Command::new(berth_dir().join("berth-dhcp"));
    keeper.arg("daemon").arg("--socket").arg(&lan.keeper.socket).arg("--detach");
    keeper.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    lan.host.ns.prepare_command(&mut keeper).unwrap();
    assert!(keeper.status().unwrap().success(), "the keeper starts");
    assert!(eventually(Duration::from_secs(5), || lan.server.released(&ip)), "released: {}", lan.server.log());
    assert!(eventually(Duration::from_secs(5), || !lan.server.leased().contains(&ip)), "{:?}", lan.server.leased());
    assert!(eventually(Duration::from_secs(5), || lan.keeper.state_files() == 0), "and forgotten");
    lan.call(Command::Del, &c, &lan.conf("1.0.0")).expect("DEL finds nothing to release, and succeeds");
}

/// berth-macvlan on a master wired to a LAN namespace where dnsmasq serves.
#[test]
fn a_macvlan_container_leases_from_the_lan() {
    let host = TestHost::new();
    let wire = host.container();
    let wire_ns = NetNs::open(&wire.path).unwrap();
    let mut hnl = host.netlink();
    let master = hnl.create_veth("dhpar0", &VethPeer { name: "lan0", netns: Some(&wire_ns), mac: None }, None, None).unwrap();
    hnl.set_up(master.index).unwrap();
    let mut wnl = Netlink::open_in(&wire_ns).unwrap();
    let lan0 = wnl.link_by_name("lan0").unwrap().unwrap();
    wnl.add_address(lan0.index, "10.62.0.1/24".parse().unwrap()).unwrap();
    wnl.set_up(lan0.index).unwrap();
    let keeper = KeeperGuard::new(host.dir.path().join("keeper.sock"));
    let server = Dnsmasq::start(&wire.path, "lan0", "10.62.0.50,10.62.0.150", host.dir.path(), &["--dhcp-option=option:router,10.62.0.1"]);
    let conf = json!({
        "cniVersion": "1.0.0", "name": "lan", "type": "berth-macvlan", "master": "dhpar0", "mode": "bridge",
        "ipam": {"type": "berth-dhcp", "daemonSocketPath": keeper.socket},
    });
    let cni_path = vec![berth_dir()];
    let c = host.container();
    let out = host.call(&cni_path, "berth-macvlan", Command::Add, &c.name, Some(&c.path), "eth0", &conf).expect("ADD");
    let ip = address(&parse_result(&out, "1.0.0"));
    assert!(server.leased().contains(&ip));
    assert!(TestHost::ping(&c.path, "10.62.0.1".parse().unwrap()), "the container reaches the LAN's server");
    host.call(&cni_path, "berth-macvlan", Command::Del, &c.name, Some(&c.path), "eth0", &conf).expect("DEL");
    assert!(eventually(Duration::from_secs(5), || !server.leased().contains(&ip)), "released through the macvlan before it went");
    assert!(server.released(&ip));
}

/// podman 4.3 runs a container on a berth-macvlan network whose addresses come from
/// berth-dhcp: the container gets its lease end to end, and `podman rm` releases it.
#[test]
fn a_podman_container_on_a_macvlan_network_gets_its_address_from_the_lans_server() {
    use berth_conformance::podman::PodmanLab;
    let lab = PodmanLab::new();
    let wire = lab.host.container();
    let wire_ns = NetNs::open(&wire.path).unwrap();
    let mut hnl = lab.host.netlink();
    let master = hnl.create_veth("dhpod0", &VethPeer { name: "lan0", netns: Some(&wire_ns), mac: None }, None, None).unwrap();
    hnl.set_up(master.index).unwrap();
    let mut wnl = Netlink::open_in(&wire_ns).unwrap();
    let lan0 = wnl.link_by_name("lan0").unwrap().unwrap();
    wnl.add_address(lan0.index, "10.63.0.1/24".parse().unwrap()).unwrap();
    wnl.set_up(lan0.index).unwrap();
    let keeper = KeeperGuard::new(lab.path("keeper.sock"));
    let scratch = lab.path("dnsmasq");
    std::fs::create_dir_all(&scratch).unwrap();
    let server = Dnsmasq::start(&wire.path, "lan0", "10.63.0.50,10.63.0.150", &scratch, &["--dhcp-option=option:router,10.63.0.1"]);
    lab.write_network(&json!({
        "cniVersion": "1.0.0",
        "name": "lanpod",
        "plugins": [{
            "type": "berth-macvlan", "master": "dhpod0", "mode": "bridge",
            "ipam": {"type": "berth-dhcp", "daemonSocketPath": keeper.socket},
        }],
    }));
    lab.start_sleeper("leaser", "lanpod");
    let address = lab.address_on("leaser", "lanpod").to_string();
    assert!(server.leased().contains(&address), "podman shows the lease dnsmasq gave: {address}");
    assert!(lab.pings("leaser", "10.63.0.1".parse().unwrap()), "the container reaches the LAN's server");
    lab.ok(&["rm", "--force", "--time", "0", "leaser"]);
    assert!(eventually(Duration::from_secs(5), || server.released(&address)), "podman rm released the lease");
}

/// In the kernel lab (this machine's kernel has no openvswitch datapath): berth-ovs puts a
/// container on an Open vSwitch bridge whose internal port holds dnsmasq; with berth-dhcp
/// the container leases from it, on an access port (tag 30) as on an untagged one, reaches
/// the server, and DEL releases the lease. Needs root and the lab.
#[test]
fn lab_an_ovs_container_leases_from_a_server_on_its_bridge() {
    use berth_conformance::lab;
    use berth_conformance::ovs::OvsDaemons;
    if !lab::in_lab() {
        lab::assert_test_passes_inside("lab_an_ovs_container_leases_from_a_server_on_its_bridge");
        return;
    }
    let host = TestHost::new();
    let ovs = OvsDaemons::start(&host);
    ovs.vsctl(&["add-br", "dhovs0", "--", "add-port", "dhovs0", "dhsrv30", "tag=30", "--", "set", "interface", "dhsrv30", "type=internal"]);
    let mut nl = host.netlink();
    let serving = [("dhovs0", "10.65.0.1/24"), ("dhsrv30", "10.65.30.1/24")];
    for (ifname, address) in serving {
        let link = eventually_link(&mut nl, ifname);
        nl.add_address(link.index, address.parse().unwrap()).expect("server address");
        nl.set_up(link.index).expect("server port up");
    }
    let keeper = KeeperGuard::new(host.dir.path().join("keeper.sock"));
    let untagged_dir = host.dir.path().join("untagged");
    let tagged_dir = host.dir.path().join("tagged");
    for dir in [&untagged_dir, &tagged_dir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let untagged = Dnsmasq::start(&host.path(), "dhovs0", "10.65.0.50,10.65.0.150", &untagged_dir, &[]);
    let tagged = Dnsmasq::start(&host.path(), "dhsrv30", "10.65.30.50,10.65.30.150", &tagged_dir, &[]);
    let cni_path = vec![berth_dir()];
    for (vlan, server, server_ip) in [(None, &untagged, "10.65.0.1"), (Some(30), &tagged, "10.65.30.1")] {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "ovslan", "type": "berth-ovs", "bridge": "dhovs0",
            "ovsdbSocket": ovs.endpoint(),
            "ipam": {"type": "berth-dhcp", "daemonSocketPath": keeper.socket},
        });
        if let Some(tag) = vlan {
            conf["vlan"] = json!(tag);
        }
        let c = host.container();
        let out = host.call(&cni_path, "berth-ovs", Command::Add, &c.name, Some(&c.path), "eth0", &conf).expect("ADD");
        let ip = address(&parse_result(&out, "1.0.0"));
        assert!(server.leased().contains(&ip), "vlan {vlan:?}: {ip} is not in the lease file of the server on that VLAN");
        assert!(TestHost::ping(&c.path, server_ip.parse().unwrap()), "vlan {vlan:?}: the container reaches its server");
        host.call(&cni_path, "berth-ovs", Command::Del, &c.name, Some(&c.path), "eth0", &conf).expect("DEL");
        assert!(eventually(Duration::from_secs(5), || !server.leased().contains(&ip)), "vlan {vlan:?}: DEL released {ip}");
    }
    assert_eq!(keeper.state_files(), 0);
}

/// An interface ovs-vswitchd creates (an internal port) appears shortly after the change.
fn eventually_link(nl: &mut Netlink, ifname: &str) -> berth_netlink::Link {
    let mut found = None;
    let appeared = eventually(Duration::from_secs(20), || {
        found = nl.link_by_name(ifname).ok().flatten();
        found.is_some()
    });
    assert!(appeared, "{ifname} did not appear");
    found.expect("link")
}
