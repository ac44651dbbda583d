//! berth-ovs. Needs root; everything happens in throwaway namespaces.
//!
//! This machine's kernel has no openvswitch datapath, so the tests named `lab_*` run inside
//! the kernel lab: there each starts its own ovsdb-server and ovs-vswitchd (database,
//! sockets, logs in a temporary directory; the daemons in the test host's namespace, so the
//! datapath and the bridge live there) and kills them at the end, whatever happened.
//! The others need no Open vSwitch at all.

use berth_conformance::lab;
use berth_conformance::ovs::OvsDaemons;
use berth_conformance::plugins::PluginSet;
use berth_conformance::{eventually, parse_result, Container, TestHost};
use berth_ovs::vswitch::APPLY_TIMEOUT;
use berth_netlink::{Netlink, RouteEntry};
use berth_netns::NetNs;
use berth_cni::skel::Command;
use berth_cni::spec::RunResult;
use berth_cni::CniError;
use ipnet::IpNet;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PLUGIN: &str = "berth-ovs";
const BRIDGE: &str = "berthovs0";
const SUBNET: &str = "10.70.0.0/24";

fn cni_path() -> Vec<PathBuf> {
    let set = PluginSet::berth();
    assert!(set.dir.join(PLUGIN).is_file(), "build berth-ovs first: cargo build --workspace --bins");
    set.cni_path()
}

/// A test host with Open vSwitch running in it. Fields drop in order: the daemons, then the
/// namespaces (which takes the datapath and whatever veths are left).
struct OvsHost {
    ovs: OvsDaemons,
    host: TestHost,
    cni_path: Vec<PathBuf>,
}

impl OvsHost {
    fn new() -> OvsHost {
        let host = TestHost::new();
        OvsHost { ovs: OvsDaemons::start(&host), host, cni_path: cni_path() }
    }

    fn conf(&self, vlans: Value, with_ipam: bool) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "ovsnet", "type": PLUGIN, "bridge": BRIDGE, "createBridge": true,
            "ovsdbSocket": self.ovs.endpoint(),
        });
        conf.as_object_mut().unwrap().extend(vlans.as_object().unwrap().clone());
        if with_ipam {
            conf["ipam"] = json!({
                "type": "berth-host-local", "subnet": SUBNET, "rangeStart": "10.70.0.10", "rangeEnd": "10.70.0.99",
                "dataDir": self.host.dir.path().join("ipam").display().to_string(),
            });
        }
        conf
    }

    fn call(&self, command: Command, c: &Container, conf: &Value) -> Result<Vec<u8>, CniError> {
        self.host.call(&self.cni_path, PLUGIN, command, &c.name, Some(&c.path), "eth0", conf)
    }

    fn add(&self, c: &Container, conf: &Value) -> RunResult {
        let out = self.call(Command::Add, c, conf).unwrap_or_else(|e| panic!("ADD {}: {e}", c.name));
        parse_result(&out, "1.0.0")
    }

    fn del(&self, c: &Container, conf: &Value) {
        self.call(Command::Del, c, conf).unwrap_or_else(|e| panic!("DEL {}: {e}", c.name));
    }

    fn check(&self, c: &Container, conf: &Value, prev: &RunResult) -> Result<Vec<u8>, CniError> {
        let mut check = conf.clone();
        check["prevResult"] = prev.to_value("1.0.0").unwrap();
        self.call(Command::Check, c, &check)
    }

    fn ipam_allocations(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.host.dir.path().join("ipam").join("ovsnet")) else { return vec![] };
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.parse::<IpAddr>().is_ok()).collect()
    }

    fn host_veths(&self) -> Vec<String> {
        self.host.netlink().links().unwrap().into_iter().filter(|l| l.kind.as_deref() == Some("veth")).map(|l| l.name).collect()
    }
}

fn port_name(c: &Container) -> String {
    berth_cni::iface::host_veth_name(&c.name, "eth0")
}

fn address(result: &RunResult) -> IpAddr {
    let ip = result.ips.first().expect("an address");
    assert_eq!(result.interfaces[ip.interface.expect("ips name their interface")].name, "eth0");
    ip.address.addr()
}

fn netlink_of(c: &Container) -> Netlink {
    Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap()
}

/// A first packet goes up to ovs-vswitchd (a flow miss), which is slow under emulation:
/// a path that must work gets a few tries before it counts as broken.
fn reaches(from: &Path, to: IpAddr) -> bool {
    eventually(Duration::from_secs(10), || TestHost::ping(from, to))
}

/// Which of these pings (from, to) are answered, all sent at once: each unanswered one
/// takes ping's full timeout.
fn pings_answered<'a>(pings: &[(&'a Path, IpAddr)]) -> Vec<(&'a Path, IpAddr)> {
    std::thread::scope(|s| {
        let running: Vec<_> = pings.iter().map(|&(from, to)| (from, to, s.spawn(move || TestHost::ping(from, to)))).collect();
        running.into_iter().filter_map(|(from, to, h)| h.join().expect("ping thread").then_some((from, to))).collect()
    })
}

/// In the trunk container: the 802.1q sub-interface `eth0.VID` with `addr`/32, and a route
/// to each of `peers` through it (both sub-interfaces share one subnet).
fn vlan_subinterface(c: &Container, vid: u16, addr: &str, peers: &[IpAddr]) {
    let mut nl = netlink_of(c);
    let eth0 = nl.link_by_name("eth0").unwrap().expect("eth0");
    let sub = nl.create_vlan(&format!("eth0.{vid}"), eth0.index, vid).expect("VLAN sub-interface");
    nl.add_address(sub.index, format!("{addr}/32").parse().unwrap()).unwrap();
    nl.set_up(sub.index).unwrap();
    for peer in peers {
        let dst = IpNet::new(*peer, 32).unwrap();
        let route = RouteEntry { dst, gateway: None, oif: Some(sub.index), table: None, priority: None, mtu: None, scope: None };
        nl.add_route(&route).unwrap();
    }
}

/// lab_: one boot. Four containers on one OVS bridge, all in one subnet, at tags 100, 100,
/// 200, 200: pings cross within a tag, not across. A fifth container on a trunk port
/// carrying 100 and 200 reaches both through VLAN sub-interfaces. CHECK passes, and fails
/// once an administrator changes the tag. DEL leaves no port, interface, veth or address,
/// also without the namespace and when repeated. A missing bridge is a clear error.
#[test]
fn lab_berth_ovs_vlans_trunks_and_lifecycle() {
    if !lab::in_lab() {
        let out = lab::assert_test_passes_inside("lab_berth_ovs_vlans_trunks_and_lifecycle");
        for line in out.stdout.lines().filter_map(|l| l.split_once("timing: ")) {
            eprintln!("kernel lab: {}", line.1);
        }
        eprintln!(
            "kernel lab: test started {:.1}s after boot, whole run {:.1}s",
            out.booted_after.unwrap_or_default().as_secs_f64(),
            out.elapsed.as_secs_f64()
        );
        return;
    }
    let started = Instant::now();
    let lab = OvsHost::new();
    println!("timing: ovsdb-server and ovs-vswitchd up in {:.2}s", started.elapsed().as_secs_f64());

    // A bridge that is not there, without createBridge: a configuration error, nothing made.
    let c1 = lab.host.container();
    let mut missing = lab.conf(json!({"vlan": 100}), true);
    missing["bridge"] = json!("nosuchbr0");
    missing["createBridge"] = json!(false);
    let err = lab.call(Command::Add, &c1, &missing).expect_err("no bridge nosuchbr0");
    assert_eq!(err.code, 7, "{err}");
    assert!(err.msg.contains("nosuchbr0") && err.msg.contains("createBridge"), "{err}");
    assert!(netlink_of(&c1).link_by_name("eth0").unwrap().is_none());
    assert!(lab.host_veths().is_empty() && lab.ipam_allocations().is_empty() && lab.ovs.names("Port").is_empty());

    // Four containers; the first ADD creates the bridge. c1 also gets a MAC and an MTU.
    let (c2, c3, c4) = (lab.host.container(), lab.host.container(), lab.host.container());
    let (tag100, tag200) = (lab.conf(json!({"vlan": 100}), true), lab.conf(json!({"vlan": 200}), true));
    let mut c1_conf = tag100.clone();
    c1_conf["mtu"] = json!(1400);
    c1_conf["mac"] = json!("0a:58:0a:46:00:01");
    let t = Instant::now();
    let r1 = lab.add(&c1, &c1_conf);
    println!("timing: first ADD (creates the bridge) took {:.0}ms", t.elapsed().as_secs_f64() * 1000.0);
    let r2 = lab.add(&c2, &tag100);
    let r3 = lab.add(&c3, &tag200);
    let r4 = lab.add(&c4, &tag200);
    let (a1, a2, a3, a4) = (address(&r1), address(&r2), address(&r3), address(&r4));
    let subnet: IpNet = SUBNET.parse().unwrap();
    assert!([a1, a2, a3, a4].iter().all(|a| subnet.contains(a)), "one subnet: {a1} {a2} {a3} {a4}");

    // What the result and the kernel say.
    assert_eq!(r1.interfaces.len(), 2, "the host end, then the container's: {r1:?}");
    assert_eq!(r1.interfaces[0].name, port_name(&c1));
    assert_eq!((r1.interfaces[1].name.as_str(), r1.interfaces[1].mac.as_str()), ("eth0", "0a:58:0a:46:00:01"));
    assert_eq!(r1.interfaces[1].sandbox, c1.path.display().to_string());
    let eth0 = netlink_of(&c1).link_by_name("eth0").unwrap().unwrap();
    assert_eq!((eth0.mtu, eth0.mac.unwrap().to_string().as_str(), eth0.up), (1400, "0a:58:0a:46:00:01", true));

    // What Open vSwitch says: the bridge berth made, a port per container with its tag.
    assert_eq!(lab.ovs.vsctl(&["br-get-external-id", BRIDGE, "owner"]).trim(), "berth-ovs");
    let mut ovs = lab.ovs.ovsdb();
    for (c, tag) in [(&c1, 100), (&c2, 100), (&c3, 200), (&c4, 200)] {
        let port = ovs.port(&port_name(c)).unwrap().unwrap_or_else(|| panic!("port {}", port_name(c)));
        assert_eq!((port.tag, port.vlan_mode.as_deref()), (Some(tag), Some("access")), "{port:?}");
        assert_eq!(port.external_ids.get("container-id"), Some(&c.name));
    }
    let listed = lab.ovs.vsctl(&["list-ports", BRIDGE]);
    assert_eq!(listed.lines().count(), 4, "ovs-vsctl list-ports: {listed}");
    let host_port = lab.host.netlink().link_by_name(&port_name(&c1)).unwrap().expect("the host end");
    assert!(host_port.up, "the host end is up");

    // What a user sees: the tags keep the containers apart.
    assert!(reaches(&c1.path, a2), "tag 100: c1 -> c2");
    assert!(reaches(&c4.path, a3), "tag 200: c4 -> c3");
    let crossed = pings_answered(&[(&c1.path, a3), (&c2.path, a4), (&c3.path, a1), (&c4.path, a2)]);
    assert!(crossed.is_empty(), "pings across tags 100 and 200 must not be answered: {crossed:?}");

    // A trunk port carrying 100 and 200 (ovs-cni's syntax, and a plain number).
    let trunk = lab.host.container();
    let trunk_conf = lab.conf(json!({"trunk": [{"minID": 100, "maxID": 100}, 200]}), false);
    let rt = lab.add(&trunk, &trunk_conf);
    assert!(rt.ips.is_empty(), "layer 2 only without IPAM");
    let port = ovs.port(&port_name(&trunk)).unwrap().expect("trunk port");
    assert_eq!((port.tag, port.trunks.as_slice(), port.vlan_mode.as_deref()), (None, &[100, 200][..], Some("trunk")));
    vlan_subinterface(&trunk, 100, "10.70.0.201", &[a1, a2]);
    vlan_subinterface(&trunk, 200, "10.70.0.202", &[a3, a4]);
    assert!(reaches(&trunk.path, a1), "trunk, VLAN 100 -> c1");
    assert!(reaches(&trunk.path, a4), "trunk, VLAN 200 -> c4");
    assert!(reaches(&c2.path, "10.70.0.201".parse().unwrap()), "c2 -> the trunk's VLAN 100 address");
    assert!(reaches(&c3.path, "10.70.0.202".parse().unwrap()), "c3 -> the trunk's VLAN 200 address");

    // CHECK passes as made, then fails once the tag is changed by hand.
    lab.check(&c1, &c1_conf, &r1).unwrap_or_else(|e| panic!("CHECK c1: {e}"));
    lab.check(&trunk, &trunk_conf, &rt).unwrap_or_else(|e| panic!("CHECK trunk: {e}"));
    let wrong = lab.check(&c1, &tag200, &r1).expect_err("c1 is not on tag 200");
    assert!(wrong.msg.contains("tag 100"), "{wrong}");
    lab.ovs.vsctl(&["set", "Port", &port_name(&c1), "tag=300"]);
    let err = lab.check(&c1, &c1_conf, &r1).expect_err("CHECK after the tag changed");
    assert!(err.msg.contains("tag 300") && err.msg.contains(&port_name(&c1)), "{err}");
    assert!(!TestHost::ping(&c1.path, a2), "c1 is on tag 300 now");

    // DEL: the port goes from the bridge and from the database, the veth and the address too.
    lab.del(&c1, &c1_conf);
    assert_eq!(ovs.port(&port_name(&c1)).unwrap(), None, "no Port row for c1");
    assert!(!lab.ovs.names("Interface").contains(&port_name(&c1)), "no Interface row for c1");
    assert!(netlink_of(&c1).link_by_name("eth0").unwrap().is_none());
    assert!(!lab.host_veths().contains(&port_name(&c1)));
    lab.del(&c1, &c1_conf);
    // c2's namespace went first (the runtime lost it).
    lab.host.remove_container(&c2);
    lab.del(&c2, &tag100);
    lab.del(&c2, &tag100);
    assert_eq!(ovs.port(&port_name(&c2)).unwrap(), None, "no Port row for c2");
    assert!(reaches(&trunk.path, a3), "the others are unaffected");
    lab.del(&c3, &tag200);
    lab.del(&c4, &tag200);
    lab.del(&trunk, &trunk_conf);

    // Nothing is left but the bridge and its own port.
    assert_eq!(lab.ovs.names("Port"), vec![BRIDGE.to_string()]);
    assert_eq!(lab.ovs.names("Interface"), vec![BRIDGE.to_string()]);
    assert_eq!(lab.ovs.vsctl(&["list-ports", BRIDGE]).trim(), "");
    assert!(eventually(Duration::from_secs(10), || lab.host_veths().is_empty()), "veths left: {:?}", lab.host_veths());
    assert_eq!(lab.ipam_allocations(), Vec::<String>::new(), "addresses released");
    println!("timing: whole test inside the lab: {:.1}s", started.elapsed().as_secs_f64());
}

/// Without Open vSwitch: ADD fails with a message naming the socket, and leaves nothing;
/// bad configurations are code 7 before anything is touched.
#[test]
fn berth_ovs_fails_clearly_without_ovsdb() {
    let cni_path = cni_path();
    let host = TestHost::new();
    let c = host.container();
    let socket = host.dir.path().join("no-ovsdb.sock").display().to_string();
    let conf = json!({
        "cniVersion": "1.0.0", "name": "ovsnet", "type": PLUGIN, "bridge": BRIDGE, "vlan": 100, "ovsdbSocket": socket,
        "ipam": {"type": "berth-host-local", "subnet": SUBNET, "dataDir": host.dir.path().join("ipam").display().to_string()},
    });
    let call = |command: Command, conf: &Value| host.call(&cni_path, PLUGIN, command, &c.name, Some(&c.path), "eth0", conf);
    let err = call(Command::Add, &conf).expect_err("no ovsdb-server");
    assert_eq!(err.code, 100, "{err}");
    assert!(err.msg.contains("connect to Open vSwitch") && err.msg.contains(&socket), "{err}");
    assert!(netlink_of(&c).link_by_name("eth0").unwrap().is_none(), "nothing in the container");
    let veths = host.netlink().links().unwrap().into_iter().filter(|l| l.kind.as_deref() == Some("veth")).count();
    assert_eq!(veths, 0, "nothing on the host");
    assert!(std::fs::read_dir(host.dir.path().join("ipam").join("ovsnet")).map_or(true, |d| d.flatten().all(|e| e
        .file_name()
        .to_string_lossy()
        .parse::<IpAddr>()
        .is_err())));

    for (key, value) in
        [("vlan", json!(5000)), ("trunk", json!([{"minID": 300, "maxID": 200}])), ("ovsdbSocket", json!("tcp:1.2.3.4:6640"))]
    {
        let mut bad = conf.clone();
        bad[key] = value;
        let err = call(Command::Add, &bad).expect_err("bad configuration");
        assert_eq!(err.code, 7, "{key}: {err}");
        assert!(err.msg.starts_with(key), "{err}");
    }
    let mut both = conf.clone();
    both["trunk"] = json!([200]);
    assert_eq!(call(Command::Add, &both).expect_err("vlan and trunk").code, 7);
    // DEL cannot tell whether a port is left without the database: it says so.
    let err = call(Command::Del, &conf).expect_err("DEL without ovsdb-server");
    assert!(err.msg.contains(&socket), "{err}");
}

fn median_ms(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p90_ms(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * 0.9).round() as usize]
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1000.0
}

const BENCH_N: usize = 50;

/// lab_, on demand (`BERTH_OVS_BENCH=1`): ADD and DEL of berth-ovs (veth, host-local,
/// port, waiting for ovs-vswitchd) for 50 containers at tag 100, its OVSDB part alone, and
/// `ovs-vsctl add-port` / `del-port` of prepared veths, under the lab's emulated CPU.
#[test]
fn lab_berth_ovs_benchmark() {
    if !lab::in_lab() {
        if std::env::var("BERTH_OVS_BENCH").is_err() {
            eprintln!("lab_berth_ovs_benchmark: set BERTH_OVS_BENCH=1 to run it");
            return;
        }
        let out = lab::assert_test_passes_inside("lab_berth_ovs_benchmark");
        for line in out.stdout.lines().filter_map(|l| l.split_once("bench: ")) {
            println!("{}", line.1);
        }
        return;
    }
    let lab = OvsHost::new();
    let conf = lab.conf(json!({"vlan": 100}), true);
    let warm = lab.host.container();
    lab.add(&warm, &conf); // creates the bridge
    lab.del(&warm, &conf);

    let containers: Vec<Container> = (0..BENCH_N).map(|_| lab.host.container()).collect();
    let mut add: Vec<f64> = containers.iter().map(|c| time_ms(|| drop(lab.add(c, &conf)))).collect();
    let mut del: Vec<f64> = containers.iter().map(|c| time_ms(|| lab.del(c, &conf))).collect();

    // The same OVSDB work through the library, on veths made beforehand.
    let mut nl = lab.host.netlink();
    let names: Vec<String> = (0..BENCH_N).map(|i| format!("bench{i}")).collect();
    for name in &names {
        let peer = berth_netlink::VethPeer { name: &format!("{name}p"), netns: None, mac: None };
        let veth = nl.create_veth(name, &peer, None, None).unwrap();
        nl.set_up(veth.index).unwrap();
    }
    let vlans = berth_ovs::vswitch::Vlans { tag: Some(100), trunks: vec![] };
    let mut ovs = lab.ovs.ovsdb();
    let mut lib_add: Vec<f64> = names
        .iter()
        .map(|name| {
            time_ms(|| {
                let port = berth_ovs::vswitch::NewPort {
                    bridge: BRIDGE,
                    name,
                    iface_type: "",
                    options: &[],
                    vlans: &vlans,
                    external_ids: &[("owner", "berth-ovs")],
                };
                let cfg = ovs.add_port(&port).unwrap();
                ovs.wait_applied(cfg, APPLY_TIMEOUT, Some(name)).unwrap();
            })
        })
        .collect();
    let mut lib_del: Vec<f64> = names
        .iter()
        .map(|name| {
            time_ms(|| {
                let port = ovs.port(name).unwrap().unwrap();
                let cfg = ovs.del_port(&port.uuid).unwrap();
                ovs.wait_applied(cfg, APPLY_TIMEOUT, None).unwrap();
            })
        })
        .collect();
    let mut vsctl_add: Vec<f64> =
        names.iter().map(|n| time_ms(|| drop(lab.ovs.vsctl(&["add-port", BRIDGE, n, "tag=100"])))).collect();
    let mut vsctl_del: Vec<f64> = names.iter().map(|n| time_ms(|| drop(lab.ovs.vsctl(&["del-port", BRIDGE, n])))).collect();
    assert_eq!(lab.ovs.names("Port"), vec![BRIDGE.to_string()]);

    println!("bench: {BENCH_N} ports, kernel lab (TCG, 2 vCPUs), milliseconds: ADD median / p90, DEL median / p90");
    for (label, a, d) in [
        ("berth-ovs plugin (exec, veth, host-local, OVSDB, wait)", &mut add, &mut del),
        ("berth-ovs OVSDB part (library: transact + wait)", &mut lib_add, &mut lib_del),
        ("ovs-vsctl add-port / del-port (process, OVSDB, wait)", &mut vsctl_add, &mut vsctl_del),
    ] {
        println!("bench: {label:<58} {:>7.1} {:>7.1}   {:>7.1} {:>7.1}", median_ms(a), p90_ms(a), median_ms(d), p90_ms(d));
    }
}
