//! `berth pipework` where this machine's kernel cannot go: Open vSwitch and 802.1q VLANs, in
//! the kernel lab (Debian's stock kernel under qemu; see conformance/src/lab). The guests are
//! network namespaces. Needs root; the test boots the lab and runs itself inside.

use berth_conformance::lab;
use berth_conformance::ovs::OvsDaemons;
use berth_conformance::{Container, TestHost};
use berth_netlink::{Netlink, VethPeer};
use berth_netns::NetNs;
use std::process::{Command, Output};

struct Berth<'a> {
    host: &'a TestHost,
    ovs: &'a OvsDaemons,
}

impl Berth<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env("BERTH_CONFIG_DIR", self.host.dir.path().join("net.d"))
            .env("BERTH_STATE_DIR", self.host.dir.path().join("state"))
            .env("OVS_RUNDIR", self.ovs.path(""))
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env_remove("CNI_PATH");
        self.host.ns.prepare_command(&mut cmd).unwrap();
        cmd.output().expect("run berth")
    }

    fn ok(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn link(guest: &Container, ifname: &str) -> Option<berth_netlink::Link> {
    Netlink::open_in(&NetNs::open(&guest.path).unwrap()).unwrap().link_by_name(ifname).unwrap()
}

/// lab_: the seeds' scenario (four guests on one OVS bridge, one subnet, tags 100 and 200:
/// the same tag reaches, the other does not), `ovs0` created on demand, the port's tag and
/// external-ids; then `NIC@VLAN` making NIC.VLAN and a macvlan on it; all removed after.
#[test]
fn lab_pipework_ovs_vlans_and_nic_vlans() {
    if !lab::in_lab() {
        lab::assert_test_passes_inside("lab_pipework_ovs_vlans_and_nic_vlans");
        return;
    }
    let host = TestHost::new();
    let ovs = OvsDaemons::start(&host);
    let berth = Berth { host: &host, ovs: &ovs };
    let guests: Vec<Container> = (0..4).map(|_| host.container()).collect();
    for (i, guest) in guests.iter().enumerate() {
        let tag = if i < 2 { "@100" } else { "@200" };
        berth.ok(&["pipework", "ovs0", &guest.name, &format!("172.20.0.{}/24", i + 2), tag]);
    }
    let ovs0 = host.netlink().link_by_name("ovs0").unwrap().expect("ovs0 was created");
    assert_eq!(ovs0.kind.as_deref(), Some("openvswitch"));
    assert!(TestHost::ping(&guests[0].path, "172.20.0.3".parse().unwrap()), "tag 100 reaches tag 100");
    assert!(TestHost::ping(&guests[2].path, "172.20.0.5".parse().unwrap()), "tag 200 reaches tag 200");
    assert!(!TestHost::ping(&guests[0].path, "172.20.0.4".parse().unwrap()), "tag 100 does not reach tag 200");
    let tags = ovs.vsctl(&["--columns=tag,external_ids", "list", "Port"]);
    assert!(tags.contains("100") && tags.contains("200") && tags.contains(&guests[0].name), "{tags}");
    assert_eq!(link(&guests[0], "eth1").unwrap().kind.as_deref(), Some("veth"));

    // A veth in the host stands in for a NIC; @42 puts the macvlan on nic0.42.
    let wire = host.container();
    let wire_ns = NetNs::open(&wire.path).unwrap();
    let mut hnl = host.netlink();
    let nic = hnl.create_veth("nic0", &VethPeer { name: "wire0", netns: Some(&wire_ns), mac: None }, None, None).unwrap();
    hnl.set_up(nic.index).unwrap();
    let on_vlan = host.container();
    berth.ok(&["pipework", "nic0", &on_vlan.name, "10.80.0.2/24", "@42"]);
    let sub = hnl.link_by_name("nic0.42").unwrap().expect("nic0.42 was created");
    assert_eq!(sub.kind.as_deref(), Some("vlan"));
    assert_eq!(link(&on_vlan, "eth1").unwrap().kind.as_deref(), Some("macvlan"));

    berth.ok(&["pipework", "nic0", &on_vlan.name, "10.80.0.2/24", "@42", "--remove"]);
    assert!(hnl.link_by_name("nic0.42").unwrap().is_none(), "the sub-interface berth made goes with its last macvlan");
    for (i, guest) in guests.iter().enumerate() {
        let tag = if i < 2 { "@100" } else { "@200" };
        berth.ok(&["pipework", "ovs0", &guest.name, &format!("172.20.0.{}/24", i + 2), tag, "--remove"]);
        assert!(link(guest, "eth1").is_none());
    }
    let ports = ovs.names("Port");
    assert_eq!(ports, vec!["ovs0".to_string()], "only the bridge's own port is left");
}
