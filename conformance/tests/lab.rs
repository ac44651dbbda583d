//! The kernel lab itself. Tests named `lab_*` boot a qemu VM with Debian's stock kernel
//! (see `berth_conformance::lab`; about 6 s a boot once the kernel is cached). Needs root and
//! conformance/TEST-PACKAGES.

use berth_conformance::lab::{self, Lab};
use berth_conformance::TestHost;
use berth_netlink::VethPeer;

/// lab_: one boot; inside, as root under the VM's kernel, `modprobe 8021q` loads the module
/// this machine's kernel lacks and a VLAN sub-interface is made in a network namespace.
/// The inner run's exit status and output come back to this test.
#[test]
fn lab_loads_8021q_and_makes_a_vlan_in_a_netns() {
    if lab::in_lab() {
        return vlan_in_a_netns_inside();
    }
    let out = lab::assert_test_passes_inside("lab_loads_8021q_and_makes_a_vlan_in_a_netns");
    assert!(out.stdout.contains("8021q loaded"), "{out}");
    assert!(out.stdout.contains("trunk0.100 is VLAN 100 on trunk0"), "{out}");
    eprintln!(
        "kernel lab: command started {:.1}s after boot, whole run {:.1}s",
        out.booted_after.unwrap_or_default().as_secs_f64(),
        out.elapsed.as_secs_f64()
    );
}

fn vlan_in_a_netns_inside() {
    let status = std::process::Command::new("modprobe").arg("8021q").status().expect("run modprobe");
    assert!(status.success(), "modprobe 8021q: {status}");
    let modules = std::fs::read_to_string("/proc/modules").unwrap();
    assert!(modules.lines().any(|l| l.starts_with("8021q ")), "8021q is not in /proc/modules");
    println!("8021q loaded");

    let host = TestHost::new();
    let mut nl = host.netlink();
    let trunk = nl
        .create_veth("trunk0", &VethPeer { name: "trunk1", netns: None, mac: None }, None, None)
        .expect("veth trunk0");
    let vlan = nl.create_vlan("trunk0.100", trunk.index, 100).expect("create trunk0.100");
    let detail = nl.link_detail(vlan.index).unwrap().expect("trunk0.100 is listed");
    assert_eq!(detail.link.kind.as_deref(), Some("vlan"));
    assert_eq!(detail.vlan_id, Some(100));
    assert_eq!(detail.parent, Some(trunk.index));
    println!("trunk0.100 is VLAN 100 on trunk0 in namespace {}", host.name);
}

/// lab_: one boot of a failing shell command: its exit status, stdout and stderr come back
/// apart, and nothing it wrote reached the host's files.
#[test]
fn lab_reports_exit_status_and_output() {
    let lab = Lab::ensure().unwrap_or_else(|e| panic!("{e}"));
    let marker = std::env::temp_dir().join(format!("berth-lab-marker-{}", std::process::id()));
    let script = format!("echo out; echo err >&2; touch {}; touch /etc/berth-lab-marker; exit 7", marker.display());
    let out = lab.run(&["sh", "-c", &script]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status, 7, "{out}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert!(!marker.exists(), "the VM's /tmp is its own");
    assert!(!std::path::Path::new("/etc/berth-lab-marker").exists(), "the host's root is read-only to the VM");
}
