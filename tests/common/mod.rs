//! What the tests that run the `berth` binary against a Docker lab share.
#![allow(dead_code)]

use berth_conformance::docker::DockerLab;
use berth_conformance::{Container, TestHost};
use berth_netlink::{Netlink, VethPeer};
use berth_netns::NetNs;
use serde_json::Value;
use std::net::IpAddr;
use std::process::{Command, Output};

/// The `berth` binary run inside the lab's host namespace, finding containers through the
/// lab's dockerd, with its config, state and IPAM data in the lab's folder.
pub struct Berth<'a> {
    pub lab: &'a DockerLab,
}

impl Berth<'_> {
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env("BERTH_CONFIG_DIR", self.lab.path("net.d"))
            .env("BERTH_STATE_DIR", self.lab.path("state"))
            .env("DOCKER_HOST", self.lab.docker_host())
            .env_remove("CNI_PATH");
        self.lab.host.ns.prepare_command(&mut cmd).unwrap();
        cmd.output().expect("run berth")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `berth net create NAME --subnet SUBNET`, with masquerade and IPAM data in the lab.
    pub fn network(&self, name: &str, subnet: &str) {
        self.ok(&["net", "create", name, "--subnet", subnet]);
        let path = self.lab.path(&format!("net.d/{name}.conflist"));
        let mut conf: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        conf["plugins"][0]["ipMasq"] = true.into();
        conf["plugins"][0]["ipam"]["dataDir"] = self.lab.path("ipam").display().to_string().into();
        std::fs::write(&path, conf.to_string()).unwrap();
    }
}


/// The `berth` binary run inside a test host's namespace, with its config and state in the
/// host's folder and no Docker to ask.
pub struct HostBerth<'a> {
    pub host: &'a TestHost,
}

impl HostBerth<'_> {
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env("BERTH_CONFIG_DIR", self.host.dir.path().join("net.d"))
            .env("BERTH_STATE_DIR", self.host.dir.path().join("state"))
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env_remove("CNI_PATH");
        self.host.ns.prepare_command(&mut cmd).unwrap();
        cmd.output().expect("run berth")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth net create ARGS`, with the IPAM data kept in the test's folder.
    pub fn network(&self, args: &[&str]) {
        let mut full = vec!["net", "create"];
        full.extend_from_slice(args);
        self.ok(&full);
        let path = self.host.dir.path().join(format!("net.d/{}.conflist", args[0]));
        let mut conf: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        conf["plugins"][0]["ipam"]["dataDir"] = self.host.dir.path().join("ipam").display().to_string().into();
        std::fs::write(&path, conf.to_string()).unwrap();
    }

    /// Attaches a new container to `network`; returns it with its eth0's IPv4 address and MTU.
    pub fn attached(&self, network: &str) -> (Container, IpAddr, u32) {
        let c = self.host.container();
        self.ok(&["attach", network, &c.name]);
        let mut nl = Netlink::open_in(&NetNs::open(&c.path).unwrap()).unwrap();
        let eth0 = nl.link_by_name("eth0").unwrap().expect("eth0");
        let (_, address) =
            nl.addresses(Some(eth0.index)).unwrap().into_iter().find(|(_, a)| a.addr().is_ipv4()).expect("an address");
        (c, address.addr(), eth0.mtu)
    }

    /// Sets a key of the network's plugin (`firewallBackend`, `ovsdbSocket`).
    pub fn set_plugin_key(&self, network: &str, key: &str, value: &str) {
        let path = self.host.dir.path().join(format!("net.d/{network}.conflist"));
        let mut conf: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        conf["plugins"][0][key] = value.into();
        std::fs::write(&path, conf.to_string()).unwrap();
    }
}

/// Two hosts on one underlay segment: a veth `under0`, 192.0.2.1/24 on A, 192.0.2.2/24 on B.
pub fn two_hosts_on_an_underlay() -> (TestHost, TestHost) {
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
