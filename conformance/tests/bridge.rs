//! The bridge suite, run over berth-bridge + berth-host-local and over the reference
//! bridge + host-local with the same assertions. Needs root: it creates network namespaces.

use berth_conformance::plugins::PluginSet;
use berth_conformance::{eventually, parse_result, versions_of, Container, TestHost};
use std::time::Duration;
use berth_cni::skel::Command;
use berth_cni::spec::{RunResult, Version};
use ipnet::IpNet;
use serde_json::{json, Value};
use std::net::IpAddr;

const SUBNET: &str = "10.22.0.0/24";
const GATEWAY: &str = "10.22.0.1";
const BRIDGE: &str = "berthbr0";

fn bridge_conf(set: &PluginSet, host: &TestHost, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "suite-net",
        "type": set.bridge,
        "bridge": BRIDGE,
        "isGateway": true,
        "isDefaultGateway": true,
        "ipam": {
            "type": set.host_local,
            "subnet": SUBNET,
            "dataDir": host.dir.path().join("ipam").display().to_string(),
        },
    })
}

fn with_prev(conf: &Value, prev: &RunResult, version: &str) -> Value {
    let mut conf = conf.clone();
    conf["prevResult"] = prev.to_value(version).expect("convert prevResult");
    conf
}

struct Call<'a> {
    host: &'a TestHost,
    set: &'a PluginSet,
    conf: Value,
}

impl Call<'_> {
    fn run(&self, command: Command, c: &Container, conf: &Value) -> Result<Vec<u8>, berth_cni::CniError> {
        self.host.call(&self.set.cni_path(), self.set.bridge, command, &c.name, Some(&c.path), "eth0", conf)
    }
    fn add(&self, c: &Container, version: &str) -> RunResult {
        let out = self.run(Command::Add, c, &self.conf).unwrap_or_else(|e| panic!("{} ADD {version}: {e}", self.set.label));
        parse_result(&out, version)
    }
}

fn container_address(result: &RunResult, c: &Container) -> IpNet {
    let ip = result.ips.first().expect("an address");
    let iface = &result.interfaces[ip.interface.expect("ips name their interface")];
    assert_eq!(iface.name, "eth0");
    assert_eq!(iface.sandbox, c.path.display().to_string());
    ip.address
}

fn ipam_allocations(host: &TestHost) -> Vec<String> {
    let dir = host.dir.path().join("ipam").join("suite-net");
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect()
}

fn run_suite(set: PluginSet) {
    let plugin = set.dir.join(set.bridge);
    let versions = versions_of(&plugin);
    assert!(versions.len() >= 4, "{} speaks too few versions: {versions:?}", set.label);
    for version in versions {
        let host = TestHost::new();
        let c1 = host.container();
        let c2 = host.container();
        let call = Call { host: &host, set: &set, conf: bridge_conf(&set, &host, version) };
        let r1 = call.add(&c1, version);
        let r2 = call.add(&c2, version);
        let a1 = container_address(&r1, &c1);
        let a2 = container_address(&r2, &c2);
        let subnet: IpNet = SUBNET.parse().unwrap();
        assert!(subnet.contains(&a1.addr()) && subnet.contains(&a2.addr()) && a1 != a2, "{a1} {a2}");

        // What the kernel holds now.
        let mut c1nl = berth_netlink::Netlink::open_in(&berth_netns::NetNs::open(&c1.path).unwrap()).unwrap();
        let eth0 = c1nl.link_by_name("eth0").unwrap().expect("eth0 in the container");
        assert!(eth0.up);
        assert!(c1nl.addresses(Some(eth0.index)).unwrap().iter().any(|(_, a)| *a == a1));
        let gw: IpAddr = GATEWAY.parse().unwrap();
        assert!(
            c1nl.routes().unwrap().iter().any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(gw)),
            "{}: default route via the gateway",
            set.label
        );
        let mut hostnl = host.netlink();
        let bridge = hostnl.link_by_name(BRIDGE).unwrap().expect("bridge in the host");
        assert!(hostnl.addresses(Some(bridge.index)).unwrap().iter().any(|(_, a)| a.addr() == gw));
        let peer = hostnl.link_by_index(eth0.peer_index.expect("veth peer")).unwrap().expect("host end");
        assert_eq!(peer.master, Some(bridge.index), "host end is a port of the bridge");

        // What a user sees: traffic crosses.
        assert!(TestHost::ping(&c1.path, a2.addr()), "{} {version}: c1 -> c2", set.label);
        assert!(TestHost::ping(&c2.path, gw), "{} {version}: c2 -> gateway", set.label);

        if Version::parse(version).unwrap() >= Version::V0_4_0 {
            let check = with_prev(&call.conf, &r1, version);
            call.run(Command::Check, &c1, &check).unwrap_or_else(|e| panic!("{} CHECK {version}: {e}", set.label));
            c1nl.del_address(eth0.index, a1).unwrap();
            let err = call.run(Command::Check, &c1, &check).expect_err("CHECK must fail once the address is gone");
            assert!(err.code > 0, "{err}");
        }

        // DEL twice, then DEL after the namespace is gone: all succeed and nothing stays.
        call.run(Command::Del, &c1, &call.conf).unwrap_or_else(|e| panic!("{} DEL {version}: {e}", set.label));
        assert!(c1nl.link_by_name("eth0").unwrap().is_none(), "eth0 removed");
        assert!(hostnl.link_by_index(peer.index).unwrap().is_none(), "host end removed");
        call.run(Command::Del, &c1, &call.conf).unwrap_or_else(|e| panic!("{} second DEL {version}: {e}", set.label));
        host.remove_container(&c2);
        call.run(Command::Del, &c2, &call.conf).unwrap_or_else(|e| panic!("{} DEL without netns {version}: {e}", set.label));
        assert_eq!(ipam_allocations(&host), Vec::<String>::new(), "{} {version}: addresses released", set.label);
        // The removed namespace takes its veth pair with it, asynchronously.
        let no_veths = || hostnl.links().unwrap().iter().all(|l| l.kind.as_deref() != Some("veth"));
        assert!(eventually(Duration::from_secs(5), no_veths), "{} {version}: veths left on the host", set.label);
    }
}

#[test]
fn berth_bridge_conforms_in_every_version() {
    run_suite(PluginSet::berth());
}

#[test]
fn reference_bridge_passes_the_same_suite() {
    run_suite(PluginSet::reference());
}

#[test]
fn berth_bridge_errors_carry_cni_codes() {
    let set = PluginSet::berth();
    let host = TestHost::new();
    let c = host.container();
    let conf = bridge_conf(&set, &host, "1.0.0");
    let code = |env_netns: Option<&std::path::Path>, conf: &Value, ifname: &str| {
        host.call(&set.cni_path(), set.bridge, Command::Add, "cid", env_netns, ifname, conf).expect_err("must fail").code
    };
    assert_eq!(code(None, &conf, "eth0"), 4, "missing CNI_NETNS");
    assert_eq!(code(Some(&c.path), &conf, "name-that-is-too-long"), 4, "bad CNI_IFNAME");
    let missing = c.path.with_file_name("berth-no-such-ns");
    assert_eq!(code(Some(&missing), &conf, "eth0"), 3, "unknown netns");
    let mut bad = conf.clone();
    bad["mtu"] = json!("big");
    assert_eq!(code(Some(&c.path), &bad, "eth0"), 7, "mtu of the wrong type");
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.2.0");
    assert_eq!(code(Some(&c.path), &old, "eth0"), 1, "unsupported version");
    let mut no_ipam_plugin = conf.clone();
    no_ipam_plugin["ipam"]["type"] = json!("berth-no-such-ipam");
    assert_eq!(code(Some(&c.path), &no_ipam_plugin, "eth0"), 7, "missing IPAM plugin");
    // Nothing half-made after the failures.
    let mut nl = host.netlink();
    assert!(nl.links().unwrap().iter().all(|l| l.kind.as_deref() != Some("veth")));
}

#[test]
fn berth_bridge_second_add_of_same_interface_fails_and_keeps_the_first() {
    let set = PluginSet::berth();
    let host = TestHost::new();
    let c = host.container();
    let call = Call { host: &host, set: &set, conf: bridge_conf(&set, &host, "1.0.0") };
    call.add(&c, "1.0.0");
    let err = call.run(Command::Add, &c, &call.conf).expect_err("eth0 exists already");
    assert!(err.msg.contains("eth0"), "{err}");
    assert!(TestHost::ping(&c.path, GATEWAY.parse().unwrap()), "first attachment still works");
}

#[test]
fn berth_bridge_applies_mtu_mac_and_promisc() {
    let set = PluginSet::berth();
    let host = TestHost::new();
    let c = host.container();
    let mut conf = bridge_conf(&set, &host, "1.1.0");
    conf["mtu"] = json!(1400);
    conf["promiscMode"] = json!(true);
    conf["runtimeConfig"] = json!({"mac": "0a:58:0a:16:00:99"});
    let call = Call { host: &host, set: &set, conf };
    let result = call.add(&c, "1.1.0");
    let container_if = result.interfaces.iter().find(|i| !i.sandbox.is_empty()).unwrap();
    assert_eq!(container_if.mac, "0a:58:0a:16:00:99");
    let mut cnl = berth_netlink::Netlink::open_in(&berth_netns::NetNs::open(&c.path).unwrap()).unwrap();
    let eth0 = cnl.link_by_name("eth0").unwrap().unwrap();
    assert_eq!(eth0.mtu, 1400);
    assert_eq!(eth0.mac.unwrap().to_string(), "0a:58:0a:16:00:99");
    let mut hnl = host.netlink();
    assert!(hnl.link_by_name(BRIDGE).unwrap().unwrap().promisc);
    let veth = hnl.link_by_name(&result.interfaces[1].name).unwrap().unwrap();
    assert_eq!(veth.mtu, 1400);
}

#[test]
fn berth_bridge_without_icc_isolates_containers_but_not_the_gateway() {
    let set = PluginSet::berth();
    let host = TestHost::new();
    let (c1, c2) = (host.container(), host.container());
    let mut conf = bridge_conf(&set, &host, "1.0.0");
    conf["icc"] = json!(false);
    let call = Call { host: &host, set: &set, conf };
    let a1 = container_address(&call.add(&c1, "1.0.0"), &c1);
    let a2 = container_address(&call.add(&c2, "1.0.0"), &c2);
    let gw: IpAddr = GATEWAY.parse().unwrap();
    assert!(TestHost::ping(&c1.path, gw) && TestHost::ping(&c2.path, gw), "the gateway stays reachable");
    assert!(!TestHost::ping(&c1.path, a2.addr()), "c1 must not reach c2 with icc off");
    assert!(!TestHost::ping(&c2.path, a1.addr()), "c2 must not reach c1 with icc off");
}

#[test]
fn berth_bridge_dual_stack_pings_over_v4_and_v6() {
    let set = PluginSet::berth();
    let host = TestHost::new();
    let (c1, c2) = (host.container(), host.container());
    let mut conf = bridge_conf(&set, &host, "1.1.0");
    conf["ipam"] = json!({
        "type": set.host_local,
        "ranges": [[{"subnet": SUBNET}], [{"subnet": "fd00:22::/64"}]],
        "dataDir": host.dir.path().join("ipam").display().to_string(),
    });
    let call = Call { host: &host, set: &set, conf };
    let r1 = call.add(&c1, "1.1.0");
    let r2 = call.add(&c2, "1.1.0");
    assert_eq!(r1.ips.len(), 2, "one address per family: {r1:?}");
    let v6 = |r: &RunResult| r.ips.iter().find(|ip| ip.address.addr().is_ipv6()).expect("a v6 address").address.addr();
    assert!(r1.routes.iter().any(|r| r.dst.to_string() == "::/0"), "v6 default route in the result");
    assert!(TestHost::ping(&c1.path, v6(&r2)), "c1 -> c2 over IPv6");
    assert!(TestHost::ping(&c2.path, "fd00:22::1".parse().unwrap()), "c2 -> v6 gateway");
    let v4 = |r: &RunResult| r.ips.iter().find(|ip| ip.address.addr().is_ipv4()).unwrap().address.addr();
    assert!(TestHost::ping(&c2.path, v4(&r1)), "c2 -> c1 over IPv4");
}

/// The container interface's IPv6 addresses and its `disable_ipv6`.
fn container_ipv6(c: &Container) -> (Vec<IpNet>, String) {
    use {berth_netlink::Netlink, berth_netns::NetNs, berth_netns::sysctl};
    let ns = NetNs::open(&c.path).expect("container namespace");
    let mut nl = Netlink::open_in(&ns).expect("netlink");
    let eth0 = nl.link_by_name("eth0").expect("links").expect("eth0");
    let v6 = nl.addresses(Some(eth0.index)).expect("addresses").into_iter().map(|(_, a)| a).filter(|a| a.addr().is_ipv6());
    (v6.collect(), ns.run(|| sysctl::get("net/ipv6/conf/eth0/disable_ipv6")).expect("enter").expect("sysctl"))
}

#[test]
fn berth_bridge_turns_ipv6_on_only_for_interfaces_with_an_ipv6_address() {
    let set = PluginSet::berth();
    let host = TestHost::new();
    let (v4_only, dual) = (host.container(), host.container());
    let call = Call { host: &host, set: &set, conf: bridge_conf(&set, &host, "1.1.0") };
    call.add(&v4_only, "1.1.0");
    let (addresses, disabled) = container_ipv6(&v4_only);
    assert_eq!((addresses.as_slice(), disabled.as_str()), (&[][..], "1"), "no link-local, no IPv6 at all on an IPv4-only eth0");

    let mut conf = bridge_conf(&set, &host, "1.1.0");
    conf["name"] = json!("dual");
    conf["bridge"] = json!("berthbr6");
    conf["ipam"] = json!({
        "type": set.host_local,
        "ranges": [[{"subnet": "10.23.0.0/24"}], [{"subnet": "fd00:23::/64"}]],
        "dataDir": host.dir.path().join("ipam").display().to_string(),
    });
    let r = Call { host: &host, set: &set, conf }.add(&dual, "1.1.0");
    let (addresses, disabled) = container_ipv6(&dual);
    let given = r.ips.iter().find(|ip| ip.address.addr().is_ipv6()).expect("a v6 address").address;
    assert_eq!(disabled, "0");
    assert!(addresses.contains(&given), "{given} on eth0: {addresses:?}");
}

#[test]
fn berth_bridge_status_reports_an_exhausted_range() {
    let set = PluginSet::berth();
    let host = TestHost::new();
    let c = host.container();
    let mut conf = bridge_conf(&set, &host, "1.1.0");
    conf["ipam"]["subnet"] = json!("10.29.0.0/30");
    let status = || host.call(&set.cni_path(), set.bridge, Command::Status, "", None, "", &conf);
    status().expect("STATUS while an address is free");
    let call = Call { host: &host, set: &set, conf: conf.clone() };
    call.add(&c, "1.1.0");
    let err = status().expect_err("the /30 has no address left");
    assert_eq!(err.code, 50, "{err}");
}
