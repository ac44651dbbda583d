//! CNI inputs: the skel's CNI_* environment and stdin, NetConf and conflists, results of every
//! version and the conversions between them, and each plugin's own configuration.

use crate::engine::Target;
use crate::examples::{cni_env, configs, invocation, prev_result, split_invocation, PLUGINS};
use berth_cni::skel::{self, Command, Invocation, Plugin, Request};
use berth_cni::spec::{ConfList, NetConf, PortMapping, RunResult, SUPPORTED};
use berth_cni::{CniError, CniResult};
use serde_json::{json, Value};

const JSON_TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\"",
    b"\"cniVersion\":",
    b"\"1.1.0\"",
    b"\"0.1.0\"",
    b"\"prevResult\":",
    b"\"runtimeConfig\":",
    b"\"cni.dev/valid-attachments\":",
    b"\"ipam\":",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"CNI_COMMAND=",
    b"CNI_ARGS=",
    b"CNI_IFNAME=",
    b"CNI_CONTAINERID=",
    b"CNI_NETNS=",
    b";",
    b"=",
    b"GC",
    b"DEL",
    b"STATUS",
    b"CHECK",
    b"VERSION",
];

/// Seeds for every plugin's configuration and every verb.
fn invocations() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for plugin in PLUGINS {
        for conf in configs(plugin, "/tmp/berth-fuzz") {
            seeds.push(invocation(&cni_env("ADD"), &conf));
        }
    }
    let gc = json!({"cniVersion": "1.1.0", "name": "mynet", "type": "berth-bridge",
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "é".repeat(70), "ifname": "eth0"}]});
    for command in ["DEL", "CHECK", "STATUS", "GC", "VERSION"] {
        seeds.push(invocation(&cni_env(command), &gc));
    }
    seeds
}

/// The invocation an input stands for; the command defaults to ADD so that inputs without
/// one still reach the configuration.
fn request_of(plugin: &dyn Plugin, input: &[u8]) -> CniResult<Request> {
    let (env, stdin) = split_invocation(input);
    let inv = Invocation { env, stdin };
    let command = inv.env.iter().rev().find(|(k, _)| k == "CNI_COMMAND").and_then(|(_, v)| Command::parse(v));
    skel::request(plugin, command.unwrap_or(Command::Add), &inv)
}

/// The spec's error JSON, whatever the error: a code and a message.
fn assert_error_json(err: &CniError, version: &str) {
    let printed: Value = serde_json::from_str(&err.to_json(version)).expect("errors print as JSON");
    assert!(printed["code"].as_u64().is_some_and(|c| c > 0), "error without a code: {printed}");
    assert!(printed["msg"].is_string(), "error without a msg: {printed}");
}

/// A plugin that does nothing, to drive the skel's own parsing and printing.
struct Inert;

impl Plugin for Inert {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        req.conf.prev_result().map(Option::unwrap_or_default)
    }
    fn del(&self, _: &Request) -> CniResult<()> {
        Ok(())
    }
    fn check(&self, req: &Request) -> CniResult<()> {
        req.conf.prev_result().map(drop)
    }
    fn gc(&self, req: &Request) -> CniResult<()> {
        req.conf.valid_attachments().map(drop)
    }
}

fn run_skel(input: &[u8]) -> bool {
    let (env, stdin) = split_invocation(input);
    let outcome = skel::dispatch(&Inert, &Invocation { env, stdin });
    if !outcome.success {
        let printed: Value = serde_json::from_str(&outcome.stdout).expect("a failure prints JSON");
        let code = printed["code"].as_u64().expect("a failure has a code");
        assert!((1..=7).contains(&code) || code == 11 || code >= 100, "unexpected code {code}: {printed}");
        assert!(printed["msg"].as_str().is_some_and(|m| !m.is_empty()), "a failure has a msg: {printed}");
    } else if !outcome.stdout.is_empty() {
        serde_json::from_str::<Value>(&outcome.stdout).expect("a success prints JSON or nothing");
    }
    outcome.success
}

fn run_netconf(input: &[u8]) -> bool {
    let list_ok = ConfList::from_slice(input).map(|list| list.effective_version(SUPPORTED)).is_ok();
    let Ok(conf) = NetConf::from_slice(input) else { return list_ok };
    let _ = conf.valid_attachments();
    let _ = conf.prev_result();
    let _ = conf.runtime::<Vec<PortMapping>>("portMappings");
    let _ = conf.runtime::<String>("mac");
    // What is written back (a chained plugin's stdin) reads the same.
    let written = serde_json::to_value(&conf).expect("a parsed config serializes");
    let again: NetConf = serde_json::from_value(written.clone()).expect("a written config reads back");
    assert_eq!(serde_json::to_value(&again).unwrap(), written);
    true
}

fn run_result(input: &[u8]) -> bool {
    let Ok(result) = RunResult::from_slice(input) else { return false };
    for version in SUPPORTED {
        let written = result.to_value(version).expect("a result converts to every supported version");
        let read = RunResult::from_value(&written).expect("a converted result reads back");
        assert_eq!(read.ips, result.ips, "ips survive {version}");
        assert_eq!(read.dns, result.dns, "dns survives {version}");
        assert_eq!(
            read.routes.iter().map(|r| (r.dst, r.gw)).collect::<Vec<_>>(),
            result.routes.iter().map(|r| (r.dst, r.gw)).collect::<Vec<_>>()
        );
        if *version == "1.1.0" {
            assert_eq!(RunResult { cni_version: result.cni_version.clone(), ..read }, result, "1.1.0 keeps everything");
        }
    }
    true
}

fn result_seeds() -> Vec<Vec<u8>> {
    let full = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:00:00:02", "mtu": 1500, "sandbox": "/var/run/netns/c1",
                        "socketPath": "/run/x.sock", "pciID": "0000:00:01.0"}],
        "ips": [{"interface": 0, "address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "fd00::2/64"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 0}],
        "dns": {"nameservers": ["10.0.0.1"], "domain": "d", "search": ["d"], "options": ["ndots:2"]}});
    let old = json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}], "dns": {}});
    let ancient = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}});
    [full, old, ancient, prev_result()].iter().map(|v| v.to_string().into_bytes()).collect()
}

fn netconf_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> =
        PLUGINS.iter().flat_map(|p| configs(p, "/tmp/berth-fuzz")).map(|c| c.to_string().into_bytes()).collect();
    let list = json!({"cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.0.0", "1.1.0"], "name": "podman",
        "disableCheck": true, "disableGC": false,
        "plugins": [configs("berth-bridge", "/tmp/f")[0].clone(), {"type": "berth-bandwidth", "capabilities": {"bandwidth": true}},
                    {"type": "berth-dns", "capabilities": {"aliases": true}}]});
    seeds.push(list.to_string().into_bytes());
    seeds
}

/// A target per plugin: the skel's request for that plugin, then the plugin's own parsing.
macro_rules! plugin_config_target {
    ($name:literal, $plugin:expr, |$req:ident| $parse:expr) => {
        Target {
            name: $name,
            seeds: invocations,
            dictionary: JSON_TOKENS,
            run: |input| {
                let $req = match request_of(&$plugin, input) {
                    Ok(req) => req,
                    Err(e) => {
                        assert_error_json(&e, "1.1.0");
                        return false;
                    }
                };
                let parsed: CniResult<()> = $parse;
                match parsed {
                    Ok(()) => true,
                    Err(e) => {
                        assert_error_json(&e, &$req.conf.cni_version);
                        false
                    }
                }
            },
        }
    };
}

pub fn targets() -> Vec<Target> {
    use berth_ipam::config::HostLocalConf;
    use berth_ipam::static_ipam::StaticConf;
    vec![
        Target { name: "cni_skel", seeds: invocations, dictionary: JSON_TOKENS, run: run_skel },
        Target { name: "cni_netconf", seeds: netconf_seeds, dictionary: JSON_TOKENS, run: run_netconf },
        Target { name: "cni_result", seeds: result_seeds, dictionary: JSON_TOKENS, run: run_result },
        plugin_config_target!("config_bridge", berth_bridge::BridgePlugin, |req| berth_bridge::BridgeConf::parse(&req).map(drop)),
        plugin_config_target!("config_macvlan", berth_macvlan::MacvlanPlugin, |req| {
            berth_macvlan::MacvlanConf::parse(&req).and_then(|c| c.container_mac(&req)).map(drop)
        }),
        plugin_config_target!("config_ovs", berth_ovs::OvsPlugin, |req| {
            berth_ovs::OvsConf::parse(&req).and_then(|c| c.container_mac(&req)).map(drop)
        }),
        plugin_config_target!("config_host_device", berth_host_device::HostDevicePlugin, |req| {
            berth_host_device::check_config(&req)
        }),
        plugin_config_target!("config_bandwidth", berth_bandwidth::BandwidthPlugin, |req| {
            berth_bandwidth::Shaping::parse(&req).and_then(|s| s.check_burst_fits(1500))
        }),
        plugin_config_target!("config_dns", berth_dns::DnsPlugin, |req| {
            berth_dns::config::DnsConf::parse(&req)
                .and_then(|c| berth_dns::config::container_names(&req, &c.network))
                .map(drop)
                .map_err(CniError::from)
        }),
        plugin_config_target!("config_host_local", berth_ipam::host_local::HostLocal, |req| {
            HostLocalConf::parse(&req.conf, &req.args).map(|conf| {
                for set in &conf.range_sets {
                    let _ = (set.capacity(), set.to_string());
                }
            })
        }),
        plugin_config_target!("config_static", berth_ipam::static_ipam::Static, |req| {
            StaticConf::parse(&req.conf, &req.args).map(drop)
        }),
        plugin_config_target!("config_dhcp", berth_dhcp::Dhcp, |req| {
            berth_dhcp::config::DhcpConf::parse(&req).map(drop)
        }),
    ]
}
