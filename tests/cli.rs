//! The `berth` front-end as a user drives it. The attach tests need root: berth runs inside a
//! throwaway host namespace and wires container namespaces beside it.

use berth_conformance::{Container, TestHost};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use std::path::Path;
use std::process::{Command, Output};

struct Berth<'a> {
    host: &'a TestHost,
}

impl Berth<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env("BERTH_CONFIG_DIR", self.host.dir.path().join("net.d"))
            .env("BERTH_STATE_DIR", self.host.dir.path().join("state"))
            .env_remove("CNI_PATH");
        self.host.ns.prepare_command(&mut cmd).unwrap();
        cmd.output().expect("run berth")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }
}

fn eth(path: &Path, ifname: &str) -> Option<(berth_netlink::Link, Vec<ipnet::IpNet>)> {
    let mut nl = Netlink::open_in(&NetNs::open(path).unwrap()).unwrap();
    let link = nl.link_by_name(ifname).unwrap()?;
    let addrs = nl.addresses(Some(link.index)).unwrap().into_iter().map(|(_, a)| a).collect();
    Some((link, addrs))
}

fn host_veths(host: &TestHost) -> usize {
    host.netlink().links().unwrap().iter().filter(|l| l.kind.as_deref() == Some("veth")).count()
}

#[test]
fn networks_are_created_listed_inspected_and_removed() {
    let host = TestHost::new();
    let berth = Berth { host: &host };
    berth.ok(&["net", "create", "web", "--subnet", "10.31.0.0/24"]);
    let ls = berth.ok(&["net", "ls"]);
    assert!(ls.contains("web") && ls.contains("bridge") && ls.contains("10.31.0.0/24"), "{ls}");
    let inspect: serde_json::Value = serde_json::from_str(&berth.ok(&["net", "inspect", "web"])).unwrap();
    assert_eq!(inspect["plugins"][0]["ipam"]["ranges"][0][0]["gateway"], "10.31.0.1");
    let dup = berth.run(&["net", "create", "web", "--subnet", "10.32.0.0/24"]);
    assert!(!dup.status.success() && String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    berth.ok(&["net", "rm", "web"]);
    assert!(!berth.ok(&["net", "ls"]).contains("web"));
    assert!(!berth.run(&["net", "inspect", "web"]).status.success());
}

#[test]
fn attach_by_name_pid_and_path_then_detach_leaves_nothing() {
    let host = TestHost::new();
    let berth = Berth { host: &host };
    berth.ok(&["net", "create", "app", "--subnet", "10.33.0.0/24"]);
    let ipam_dir = host.dir.path().join("ipam");
    // Keep IPAM state inside the test's scratch directory.
    let conf_path = host.dir.path().join("net.d/app.conflist");
    let mut conf: serde_json::Value = serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    conf["plugins"][0]["ipam"]["dataDir"] = ipam_dir.display().to_string().into();
    std::fs::write(&conf_path, conf.to_string()).unwrap();

    let by_name = host.container();
    let by_path = host.container();
    let by_pid = host.container();
    let mut sleeper = {
        let mut cmd = Command::new("sleep");
        cmd.arg("300");
        NetNs::open(&by_pid.path).unwrap().prepare_command(&mut cmd).unwrap();
        KillOnDrop(cmd.spawn().unwrap())
    };
    let pid = sleeper.0.id().to_string();
    let path = by_path.path.display().to_string();

    berth.ok(&["attach", "app", &by_name.name]);
    berth.ok(&["attach", "app", &path]);
    berth.ok(&["attach", "app", &pid]);
    let addr = |c: &Container| eth(&c.path, "eth0").expect("eth0").1[0].addr();
    assert!(TestHost::ping(&by_name.path, addr(&by_path)));
    assert!(TestHost::ping(&by_pid.path, addr(&by_name)));
    assert!(TestHost::ping(&by_path.path, "10.33.0.1".parse().unwrap()));
    assert_eq!(host_veths(&host), 3);
    berth.ok(&["check", "app", &by_name.name]);
    {
        // Take the address away by hand: CHECK must notice.
        let mut nl = Netlink::open_in(&NetNs::open(&by_name.path).unwrap()).unwrap();
        let (link, addrs) = eth(&by_name.path, "eth0").unwrap();
        nl.del_address(link.index, addrs[0]).unwrap();
    }
    let broken = berth.run(&["check", "app", &by_name.name]);
    assert!(!broken.status.success(), "CHECK after the address was removed");
    assert!(String::from_utf8_lossy(&broken.stderr).contains("has no address"), "{}", String::from_utf8_lossy(&broken.stderr));

    for target in [by_name.name.as_str(), path.as_str(), pid.as_str()] {
        berth.ok(&["detach", "app", target]);
        berth.ok(&["detach", "app", target]);
    }
    assert!(eth(&by_name.path, "eth0").is_none());
    assert_eq!(host_veths(&host), 0);
    let leases = std::fs::read_dir(ipam_dir.join("app")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("10.")).count();
    assert_eq!(leases, 0, "addresses released");
    sleeper.0.kill().ok();
}

#[test]
fn pipework_wires_a_static_address_with_gateway() {
    let host = TestHost::new();
    let berth = Berth { host: &host };
    let a = host.container();
    let b = host.container();
    berth.ok(&["pipework", "br0", &a.name, "172.17.2.24/24@172.17.2.1"]);
    berth.ok(&["pipework", "br0", &b.name, "172.17.2.25/24"]);
    let (link, addrs) = eth(&a.path, "eth1").expect("pipework names the interface eth1");
    assert!(link.up);
    assert_eq!(addrs[0].to_string(), "172.17.2.24/24");
    let mut nl = Netlink::open_in(&NetNs::open(&a.path).unwrap()).unwrap();
    assert!(nl.routes().unwrap().iter().any(|r| r.dst.prefix_len() == 0 && r.gateway == Some("172.17.2.1".parse().unwrap())));
    assert!(TestHost::ping(&b.path, "172.17.2.24".parse().unwrap()));
    let bad = berth.run(&["pipework", "br0", &a.name, "172.17.2.26"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("IP/PREFIX"));
    berth.ok(&["pipework", "br0", &a.name, "172.17.2.24/24@172.17.2.1", "--remove"]);
    assert!(eth(&a.path, "eth1").is_none());
}

#[test]
fn demo_wires_pings_and_cleans_up() {
    berth_conformance::require_root();
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ping sandbox a -> sandbox b (10.77.0.3): answered"), "{stdout}");
    assert!(stdout.contains("No space left on device") && stdout.contains("demo passed"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir("/var/run/netns").into_iter().flatten().flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("berth-demo"))
        .collect();
    assert!(left.is_empty(), "the demo left namespaces: {left:?}");
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ps_lists_attachments_and_gc_undoes_those_of_gone_containers() {
    let host = TestHost::new();
    let berth = Berth { host: &host };
    berth.ok(&["net", "create", "psnet", "--subnet", "10.34.0.0/24"]);
    let conf_path = host.dir.path().join("net.d/psnet.conflist");
    let mut conf: serde_json::Value = serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    conf["plugins"][0]["ipam"]["dataDir"] = host.dir.path().join("ipam").display().to_string().into();
    std::fs::write(&conf_path, conf.to_string()).unwrap();
    let (kept, gone) = (host.container(), host.container());
    berth.ok(&["attach", "psnet", &kept.name]);
    berth.ok(&["attach", "psnet", &gone.name]);
    let listed: serde_json::Value = serde_json::from_str(&berth.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(listed[0]["addresses"][0].as_str().unwrap().starts_with("10.34.0."), "{listed}");
    let table = berth.ok(&["ps"]);
    assert!(table.contains(&kept.name) && table.contains("psnet"), "{table}");

    host.remove_container(&gone);
    assert!(berth.ok(&["ps"]).contains("(gone)"));
    let out = berth.ok(&["gc"]);
    assert!(out.contains("1 attachments"), "{out}");
    let listed: serde_json::Value = serde_json::from_str(&berth.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "only the live one is left: {listed}");
    let leases = std::fs::read_dir(host.dir.path().join("ipam/psnet")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("10.")).count();
    assert_eq!(leases, 1, "the gone container's address was released");
    assert_eq!(host_veths(&host), 1);
    berth.ok(&["detach", "psnet", &kept.name]);
}

#[test]
fn completions_and_the_man_page_come_from_the_cli() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completion", shell]);
        assert!(script.contains("pipework") && script.contains("attach"), "{shell}");
    }
    let man = run(&["man"]);
    assert!(man.contains(".TH berth 1") && man.contains("pipework"), "{man}");
}
