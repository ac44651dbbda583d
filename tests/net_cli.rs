//! `berth net` and `berth attach` as a Docker user expects them: drivers and options,
//! refusals that name the problem and write nothing, published ports reached from outside,
//! masquerade by default, `--ip` and `--mac`. Needs root: berth runs inside a throwaway host
//! namespace wired to an outside one.

use berth_conformance::echo::EchoServer;
use berth_conformance::TestHost;
use berth_netlink::Netlink;
use berth_netns::NetNs;
use serde_json::Value;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

mod common;

use common::HostBerth as Berth;

impl Berth<'_> {
    /// Fails with exit code 4 and a one-line message containing `says`.
    fn refused(&self, args: &[&str], says: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "berth {args:?}: {stderr}");
        assert!(stderr.contains(says) && stderr.trim().lines().count() == 1, "berth {args:?}: {stderr}");
    }
}

#[test]
fn networks_of_each_driver_options_and_refusals() {
    let host = TestHost::new();
    let berth = Berth { host: &host };
    berth.network(&["web", "--subnet", "10.50.0.0/24", "--subnet", "fd50::/64", "--ipv6", "--label", "team=a", "-o", "mtu=1400"]);
    berth.network(&["lan", "-d", "macvlan", "--subnet", "192.168.60.0/24", "-o", "parent=uplink0.7"]);
    berth.network(&["sw", "-d", "ovs", "--subnet", "10.51.0.0/24", "-o", "bridge=ovs0", "-o", "vlan=100"]);
    let listed: Value = serde_json::from_str(&berth.ok(&["net", "ls", "--format", "json"])).unwrap();
    let drivers: Vec<&str> = listed.as_array().unwrap().iter().map(|n| n["driver"].as_str().unwrap()).collect();
    assert_eq!(drivers, ["macvlan", "ovs", "bridge"], "by file name: {listed}");
    assert_eq!(listed[2]["subnets"][0], "10.50.0.0/24");
    assert_eq!(listed[2]["labels"]["team"], "a");
    let table = berth.ok(&["net", "ls"]);
    assert!(table.contains("macvlan") && table.contains("fd50::/64"), "{table}");
    let web: Value = serde_json::from_str(&berth.ok(&["net", "inspect", "web", "--format", "json"])).unwrap();
    assert_eq!((web["plugins"][0]["ipMasq"].as_bool(), web["plugins"][0]["mtu"].as_u64()), (Some(true), Some(1400)));

    berth.refused(&["net", "create", "clash", "--subnet", "10.50.0.128/25"], "overlaps network web's subnet 10.50.0.0/24");
    berth.refused(&["net", "create", "odd", "--subnet", "10.52.0.0/24", "-o", "colour=blue"], "colour");
    berth.refused(&["net", "create", "bad", "--subnet", "10.53.0.0/24", "--gateway", "10.99.0.1"], "10.99.0.1");
    berth.refused(&["net", "create", "mv", "-d", "macvlan", "--subnet", "10.54.0.0/24"], "parent");
    berth.refused(&["net", "create", "../x", "--subnet", "10.55.0.0/24"], "invalid network name");
    let _outside = host.outside();
    berth.refused(&["net", "create", "uplinked", "--subnet", "192.0.2.0/25"], "the host's route 192.0.2.0/24");
    assert_eq!(berth.ok(&["net", "ls", "--format", "json"]).matches("\"name\"").count(), 3, "refusals wrote nothing");

    berth.ok(&["net", "rm", "lan", "sw"]);
    let c = host.container();
    berth.ok(&["attach", "web", &c.name]);
    assert_eq!(berth.ok(&["net", "prune"]).trim(), "", "web has an attachment");
    berth.ok(&["detach", "web", &c.name]);
    assert_eq!(berth.ok(&["net", "prune"]).trim(), "web");
    assert!(!berth.ok(&["net", "ls"]).contains("web"));
}

/// What the echo server at `to` answers to a connection from `from`: the address it saw.
fn ask(from: &NetNs, to: SocketAddr) -> std::io::Result<String> {
    let mut stream = from.run(|| TcpStream::connect_timeout(&to, Duration::from_secs(2))).map_err(std::io::Error::other)??;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut seen = String::new();
    stream.read_to_string(&mut seen)?;
    Ok(seen)
}

#[test]
fn published_ports_masquerade_ip_and_mac_as_docker_run_gives_them() {
    let host = TestHost::new();
    let outside = host.outside();
    let berth = Berth { host: &host };
    berth.network(&["pub", "--subnet", "10.56.0.0/24"]);
    let c = host.container();
    berth.ok(&["attach", "pub", &c.name, "-p", "18080:8080", "--ip", "10.56.0.42", "--mac", "02:42:0a:38:00:2a"]);
    let mut nl = Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
    let eth0 = nl.link_by_name("eth0").unwrap().unwrap();
    assert_eq!(eth0.mac.unwrap().to_string(), "02:42:0a:38:00:2a");
    assert_eq!(nl.addresses(Some(eth0.index)).unwrap()[0].1.to_string(), "10.56.0.42/24");

    // The published port, from outside, reaches the container's server.
    let _server = EchoServer::start(&c.path, "0.0.0.0:8080".parse().unwrap());
    let world = NetNs::open(&outside.world.path).unwrap();
    let seen = ask(&world, SocketAddr::new(outside.host_v4.into(), 18080)).expect("the published port answers");
    assert_eq!(seen, outside.world_v4.to_string());
    // The container reaches the outside, masqueraded behind the host.
    let _outside_server = EchoServer::start(&outside.world.path, "0.0.0.0:7070".parse().unwrap());
    let cns = NetNs::open(&c.path).unwrap();
    assert_eq!(ask(&cns, SocketAddr::new(outside.world_v4.into(), 7070)).unwrap(), outside.host_v4.to_string());
    let ps: Value = serde_json::from_str(&berth.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(ps[0]["ports"][0], "18080->8080/tcp", "{ps}");

    let d = host.container();
    berth.refused(&["attach", "pub", &d.name, "-p", "80"], "HOSTPORT:PORT");
    let taken = berth.run(&["attach", "pub", &d.name, "-p", "18080:8080"]);
    assert!(!taken.status.success() && String::from_utf8_lossy(&taken.stderr).contains("18080"), "{}", String::from_utf8_lossy(&taken.stderr));
    assert!(Netlink::open_in(&NetNs::open(&d.path).unwrap()).unwrap().link_by_name("eth0").unwrap().is_none(), "a refused attach leaves nothing");

    berth.ok(&["detach", "pub", &c.name]);
    assert!(ask(&world, SocketAddr::new(outside.host_v4.into(), 18080)).is_err(), "the port is unpublished by detach");
}

/// The host namespace's nftables ruleset, as `nft list ruleset` prints it.
fn ruleset(host: &TestHost) -> String {
    let mut cmd = Command::new("nft");
    cmd.args(["list", "ruleset"]);
    host.ns.prepare_command(&mut cmd).unwrap();
    String::from_utf8_lossy(&cmd.output().expect("nft").stdout).into_owned()
}

#[test]
fn firewall_restore_puts_back_what_a_flush_removed_and_changes_nothing_twice() {
    let host = TestHost::new();
    let outside = host.outside();
    let berth = Berth { host: &host };
    berth.network(&["fw", "--subnet", "10.57.0.0/24"]);
    let c = host.container();
    berth.ok(&["attach", "fw", &c.name, "-p", "18081:8080"]);
    let _server = EchoServer::start(&c.path, "0.0.0.0:8080".parse().unwrap());
    let world = NetNs::open(&outside.world.path).unwrap();
    let published = SocketAddr::new(outside.host_v4.into(), 18081);
    assert!(ask(&world, published).is_ok(), "published before the flush");
    let before = ruleset(&host);

    let mut flush = Command::new("nft");
    flush.args(["flush", "ruleset"]);
    host.ns.prepare_command(&mut flush).unwrap();
    assert!(flush.status().unwrap().success());
    assert!(ask(&world, published).is_err(), "the flush unpublished the port");

    berth.ok(&["firewall", "restore"]);
    assert!(ask(&world, published).is_ok(), "published again after restore");
    let restored = ruleset(&host);
    assert_eq!(restored, before, "the same ruleset as ADD made");
    berth.ok(&["firewall", "restore"]);
    assert_eq!(ruleset(&host), restored, "restoring twice changes nothing");
    berth.ok(&["detach", "fw", &c.name]);
}

#[test]
fn an_aux_address_is_never_handed_out() {
    let host = TestHost::new();
    let berth = Berth { host: &host };
    berth.network(&["aux", "--subnet", "10.58.0.0/29", "--aux-address", "router=10.58.0.2"]);
    let c = host.container();
    berth.ok(&["attach", "aux", &c.name]);
    let mut nl = Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
    let eth0 = nl.link_by_name("eth0").unwrap().unwrap();
    assert_eq!(nl.addresses(Some(eth0.index)).unwrap()[0].1.to_string(), "10.58.0.3/29", "10.58.0.2 is the router's");
    berth.refused(&["net", "create", "aux2", "--subnet", "10.59.0.0/24", "--aux-address", "x=10.60.0.1"], "10.60.0.1");
    berth.ok(&["detach", "aux", &c.name]);
}
