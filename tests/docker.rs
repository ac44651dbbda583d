//! `berth` wiring Docker containers, as a user of Docker does: containers started with
//! `--network none` and attached by name, by ID prefix, and shared through
//! `--network container:NAME`. Needs root and Debian's docker.io: each test runs a dockerd of
//! its own inside a throwaway host namespace (conformance's `DockerLab`), removed afterwards.

mod common;

use berth_conformance::docker::DockerLab;
use berth_conformance::echo::EchoServer;
use common::Berth;
use std::net::{IpAddr, SocketAddr};

/// The IPv4 address of `ifname` inside a container, as the container sees it.
fn address_in(lab: &DockerLab, container: &str, ifname: &str) -> Option<IpAddr> {
    let out = lab.exec(container, &["ip", "-4", "-o", "addr", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout);
    let cidr = text.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
    cidr.split('/').next()?.parse().ok()
}

#[test]
fn docker_containers_attached_by_name_and_id_prefix_reach_each_other_and_the_outside() {
    let lab = DockerLab::new();
    let outside = lab.host.outside();
    let berth = Berth { lab: &lab };
    berth.network("dk", "10.41.0.0/24");
    lab.start_sleeper("web", "none", &[]);
    let db_id = lab.start_sleeper("db", "none", &[]);
    assert_eq!(address_in(&lab, "web", "eth0"), None, "--network none: no eth0 before berth");

    berth.ok(&["attach", "dk", "web"]);
    berth.ok(&["attach", "dk", &db_id[..12]]);
    let web = address_in(&lab, "web", "eth0").expect("web has eth0 from berth");
    let db = address_in(&lab, "db", "eth0").expect("db has eth0 from berth");
    assert!(lab.pings("web", db), "web -> db over the berth network");
    assert!(lab.pings("db", "10.41.0.1".parse().unwrap()), "db -> gateway");

    let server = SocketAddr::new(outside.world_v4.into(), 18090);
    let _echo = EchoServer::start(&outside.world.path, server);
    let seen = lab.exec("web", &["sh", "-c", &format!("echo hi | timeout 5 nc {} {}", server.ip(), server.port())]);
    let seen = String::from_utf8_lossy(&seen.stdout).trim().to_string();
    assert_eq!(seen, outside.host_v4.to_string(), "the outside sees web ({web}) masqueraded behind the host");

    let unknown = berth.run(&["attach", "dk", "nosuch"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("nosuch") && stderr.contains("Docker"), "the error names what was tried: {stderr}");

    berth.ok(&["detach", "dk", "web"]);
    berth.ok(&["detach", "dk", "web"]);
    assert_eq!(address_in(&lab, "web", "eth0"), None, "detached");
    assert!(!lab.pings("db", web));
    berth.ok(&["detach", "dk", &db_id]);
    let veths = lab.host.netlink().links().unwrap().into_iter().filter(|l| l.kind.as_deref() == Some("veth")).count();
    assert_eq!(veths, 1, "only the uplink to the outside is left");
}

#[test]
fn a_container_sharing_the_network_of_an_attached_one_uses_its_interface() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    berth.network("shared", "10.42.0.0/24");
    lab.start_sleeper("web", "none", &[]);
    berth.ok(&["attach", "shared", "web"]);
    lab.start_sleeper("sidecar", "container:web", &[]);
    let web = address_in(&lab, "web", "eth0").expect("web has eth0");
    assert_eq!(address_in(&lab, "sidecar", "eth0"), Some(web), "the sidecar sees web's interface");
    assert!(lab.pings("sidecar", "10.42.0.1".parse().unwrap()), "and reaches the gateway through it");

    berth.ok(&["detach", "shared", "web"]);
    assert_eq!(address_in(&lab, "sidecar", "eth0"), None, "detaching web takes it from the sidecar too");
}

#[test]
fn a_stopped_docker_container_is_refused_and_can_still_be_detached() {
    let lab = DockerLab::new();
    let berth = Berth { lab: &lab };
    berth.network("stop", "10.43.0.0/24");
    lab.start_sleeper("web", "none", &[]);
    berth.ok(&["attach", "stop", "web"]);
    lab.ok(&["stop", "-t", "0", "web"]);
    let refused = berth.run(&["attach", "stop", "web"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not running"), "{}", String::from_utf8_lossy(&refused.stderr));
    berth.ok(&["detach", "stop", "web"]);
    let leases: Vec<_> = std::fs::read_dir(lab.path("ipam/stop"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("10.")).collect())
        .unwrap_or_default();
    assert!(leases.is_empty(), "the address was released: {leases:?}");
}
