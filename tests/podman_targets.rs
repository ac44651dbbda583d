//! `berth attach` and `berth detach` naming a podman container, as a podman user would: a
//! container started with `--network none` gets berth's interface by its name or its ID.
//! Needs root, podman and runc (conformance's `PodmanLab`: its own storage, a private mount
//! namespace and a throwaway host namespace, all removed afterwards).

use berth_conformance::podman::PodmanLab;
use std::net::IpAddr;
use std::path::Path;
use std::process::Output;

fn berth(lab: &PodmanLab, args: &[&str]) -> Output {
    let mut cmd = lab.command_inside(Path::new(env!("CARGO_BIN_EXE_berth")));
    cmd.args(args)
        .env("BERTH_CONFIG_DIR", lab.path("berth-net.d"))
        .env("BERTH_STATE_DIR", lab.path("berth-state"))
        .env("DOCKER_HOST", format!("unix://{}", lab.path("no-docker.sock").display()))
        .env_remove("CNI_PATH");
    cmd.output().expect("run berth")
}

fn berth_ok(lab: &PodmanLab, args: &[&str]) -> String {
    let out = berth(lab, args);
    assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn eth0_address(lab: &PodmanLab, name: &str) -> Option<IpAddr> {
    let mut nl = berth_netlink::Netlink::open_in(&lab.netns_of(name)).expect("netlink in the container");
    let link = nl.link_by_name("eth0").expect("links")?;
    nl.addresses(Some(link.index)).expect("addresses").first().map(|(_, a)| a.addr())
}

#[test]
fn podman_containers_are_attached_by_name_and_by_id() {
    let lab = PodmanLab::new();
    berth_ok(&lab, &["net", "create", "pn", "--subnet", "10.44.0.0/24"]);
    let conf_path = lab.path("berth-net.d/pn.conflist");
    let mut conf: serde_json::Value = serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    conf["plugins"][0]["ipam"]["dataDir"] = lab.path("berth-ipam").display().to_string().into();
    std::fs::write(&conf_path, conf.to_string()).unwrap();

    lab.start_sleeper("alpha", "none");
    let beta_id = lab.start_sleeper("beta", "none");
    berth_ok(&lab, &["attach", "pn", "alpha"]);
    berth_ok(&lab, &["attach", "pn", &beta_id]);
    let alpha = eth0_address(&lab, "alpha").expect("alpha has berth's eth0");
    assert!(eth0_address(&lab, "beta").is_some(), "beta has berth's eth0");
    assert!(lab.pings("beta", alpha), "beta -> alpha over the berth network");

    let unknown = berth(&lab, &["attach", "pn", "nosuch"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success() && stderr.contains("podman"), "the error names podman among what was tried: {stderr}");

    berth_ok(&lab, &["detach", "pn", "alpha"]);
    berth_ok(&lab, &["detach", "pn", &beta_id]);
    assert_eq!(eth0_address(&lab, "alpha"), None);
    assert_eq!(eth0_address(&lab, "beta"), None);
}
