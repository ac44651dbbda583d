//! The plugin kinds berth-conform knows, by executable name: how to configure each, what
//! the test host needs first, what it keeps by design. A new kind is one entry in [`KINDS`].

use crate::TestHost;
use berth_netns::NetNs;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What a plugin does in a chain, which decides how it is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Creates (or configures) `ifname` in the container's namespace.
    Interface,
    /// An IPAM plugin, run on its own as a main plugin delegates to it (Section 4).
    Ipam,
    /// A chained plugin that needs a prevResult: run after a main plugin.
    Meta,
    /// Works on the host's own namespace (`CNI_NETNS` is the host's).
    HostNamespace,
}

/// What a kind's configuration may use.
pub struct Env<'a> {
    pub host: &'a TestHost,
    /// The IPAM section (`"ipam": {...}`) a main plugin should delegate to.
    pub ipam: Value,
    pub scratch: &'a Path,
}

/// Prepares the test host for a kind, or says why it cannot.
pub type Setup = fn(&TestHost) -> Result<(), String>;

pub struct Kind {
    pub names: &'static [&'static str],
    pub role: Role,
    pub ifname: &'static str,
    /// The plugin's own keys; cniVersion, name and type are added by the runner.
    pub conf: fn(&Env) -> Value,
    /// Prepares the test host (a master interface, a device to move in).
    pub setup: Option<Setup>,
    /// Link kinds the kernel must have (probed in the test host).
    pub needs: &'static [&'static str],
    /// Host links that belong to the network, not to an attachment, and outlive DEL.
    pub keeps: &'static [&'static str],
    /// Why 16 parallel ADDs with distinct addresses do not apply, if they do not.
    pub no_parallel: Option<&'static str>,
    /// Why the kind cannot run here at all, if it cannot.
    pub unavailable: Option<fn() -> Option<String>>,
}

pub const BRIDGE: &str = "cfbr0";
pub const MASTER: &str = "cfmaster0";
pub const DEVICE: &str = "cfdev0";
pub const SUBNET: &str = "10.99.0.0/24";
/// A route IPAM hands out, so the result carries one the namespace must really hold.
pub const ROUTE: &str = "198.51.100.0/24";

const fn main_kind(names: &'static [&'static str], conf: fn(&Env) -> Value) -> Kind {
    Kind { names, role: Role::Interface, ifname: "eth0", conf, setup: None, needs: &[], keeps: &[], no_parallel: None, unavailable: None }
}

const fn meta_kind(names: &'static [&'static str], conf: fn(&Env) -> Value) -> Kind {
    Kind { role: Role::Meta, no_parallel: Some("a chained plugin: addresses come from the main plugin"), ..main_kind(names, conf) }
}

const fn ipam_kind(names: &'static [&'static str], conf: fn(&Env) -> Value) -> Kind {
    Kind { role: Role::Ipam, ..main_kind(names, conf) }
}

pub static KINDS: &[Kind] = &[
    Kind { keeps: &[BRIDGE], ..main_kind(&["bridge", "berth-bridge"], bridge) },
    Kind { setup: Some(master_veth), ..main_kind(&["macvlan", "berth-macvlan"], macvlan) },
    Kind { setup: Some(master_veth), needs: &["ipvlan"], ..main_kind(&["ipvlan"], ipvlan) },
    Kind { setup: Some(master_veth), needs: &["vlan"], ..main_kind(&["vlan"], vlan) },
    main_kind(&["ptp"], with_ipam),
    main_kind(&["tap"], with_ipam),
    Kind { needs: &["dummy"], ..main_kind(&["dummy"], with_ipam) },
    Kind {
        setup: Some(device_veth),
        no_parallel: Some("each ADD moves the one host device in"),
        ..main_kind(&["host-device", "berth-host-device"], host_device)
    },
    Kind { unavailable: Some(ovs_unreachable), ..main_kind(&["ovs", "berth-ovs"], ovs) },
    Kind { ifname: "lo", no_parallel: Some("loopback allocates no addresses"), ..main_kind(&["loopback", "berth-none"], empty) },
    Kind {
        role: Role::HostNamespace,
        no_parallel: Some("host networking allocates no addresses"),
        ..main_kind(&["berth-host"], host_mode)
    },
    ipam_kind(&["host-local", "berth-host-local"], host_local),
    Kind { no_parallel: Some("static gives every container the configured address"), ..ipam_kind(&["static", "berth-static"], static_ipam) },
    Kind { unavailable: Some(dhcp_unavailable), ..ipam_kind(&["dhcp", "berth-dhcp"], empty) },
    meta_kind(&["portmap"], portmap),
    meta_kind(&["firewall"], firewall),
    meta_kind(&["tuning"], tuning),
    meta_kind(&["bandwidth", "berth-bandwidth"], bandwidth),
    meta_kind(&["sbr"], empty),
    Kind { needs: &["vrf"], ..meta_kind(&["vrf"], vrf) },
];

/// The kind of the plugin executable at `plugin`, by its file name.
pub fn kind_of(plugin: &Path) -> Option<&'static Kind> {
    let name = plugin.file_name()?.to_str()?;
    KINDS.iter().find(|k| k.names.contains(&name))
}

/// The first of `names` found in `dir` (a plugin's sibling: its IPAM, its main plugin).
pub fn sibling(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// The host-local IPAM section for a main plugin in `dir`, storing under `scratch`.
pub fn ipam_for(dir: &Path, scratch: &Path) -> Value {
    let plugin = sibling(dir, &["host-local", "berth-host-local"]);
    let ty = plugin.as_ref().and_then(|p| p.file_name()?.to_str().map(String::from)).unwrap_or_else(|| "host-local".into());
    json!({
        "type": ty,
        "subnet": SUBNET,
        "routes": [{"dst": ROUTE}],
        "dataDir": scratch.join("ipam").display().to_string(),
    })
}

fn empty(_: &Env) -> Value {
    json!({})
}

fn with_ipam(env: &Env) -> Value {
    json!({"ipam": env.ipam})
}

fn bridge(env: &Env) -> Value {
    // ipMasq makes the plugin write firewall rules, so the leak check has some to look for.
    json!({"bridge": BRIDGE, "isGateway": true, "ipMasq": true, "ipam": env.ipam})
}

fn macvlan(env: &Env) -> Value {
    json!({"master": MASTER, "mode": "bridge", "ipam": env.ipam})
}

fn ipvlan(env: &Env) -> Value {
    json!({"master": MASTER, "ipam": env.ipam})
}

fn vlan(env: &Env) -> Value {
    json!({"master": MASTER, "vlanId": 42, "ipam": env.ipam})
}

fn host_device(env: &Env) -> Value {
    json!({"device": DEVICE, "ipam": env.ipam})
}

fn ovs(env: &Env) -> Value {
    json!({"bridge": "cfovs0", "ipam": env.ipam})
}

fn host_mode(_: &Env) -> Value {
    // The test host has no default route; lo is an interface it surely has.
    json!({"interfaces": ["lo"]})
}

fn host_local(env: &Env) -> Value {
    let mut ipam = env.ipam.clone();
    ipam["type"] = Value::Null;
    json!({"ipam": ipam})
}

fn static_ipam(_: &Env) -> Value {
    json!({"ipam": {"addresses": [{"address": "10.99.0.5/24", "gateway": "10.99.0.1"}], "routes": [{"dst": ROUTE}]}})
}

fn portmap(_: &Env) -> Value {
    json!({
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
    })
}

fn firewall(_: &Env) -> Value {
    json!({"backend": "iptables"})
}

fn tuning(_: &Env) -> Value {
    json!({"sysctl": {"net.core.somaxconn": "512"}})
}

fn bandwidth(_: &Env) -> Value {
    json!({"ingressRate": 8_000_000, "ingressBurst": 1_600_000, "egressRate": 8_000_000, "egressBurst": 1_600_000})
}

fn vrf(_: &Env) -> Value {
    json!({"vrfname": "cfvrf0"})
}

/// A veth `MASTER` in the host, up, its peer in a scratch namespace: a parent for macvlan.
fn master_veth(host: &TestHost) -> Result<(), String> {
    host_veth(host, MASTER)
}

/// A veth `DEVICE` in the host for host-device to move into the container.
fn device_veth(host: &TestHost) -> Result<(), String> {
    host_veth(host, DEVICE)
}

fn host_veth(host: &TestHost, name: &str) -> Result<(), String> {
    let far = host.container();
    let far_ns = NetNs::open(&far.path).map_err(|e| format!("open {}: {e}", far.path.display()))?;
    let peer = berth_netlink::VethPeer { name: "eth0", netns: Some(&far_ns), mac: None };
    let mut nl = host.netlink();
    let link = nl.create_veth(name, &peer, None, None).map_err(|e| format!("create veth {name}: {e}"))?;
    nl.set_up(link.index).map_err(|e| format!("set {name} up: {e}"))
}

fn ovs_unreachable() -> Option<String> {
    let sockets = ["/run/openvswitch/db.sock", "/var/run/openvswitch/db.sock"];
    (!sockets.iter().any(|s| Path::new(s).exists()))
        .then(|| "no Open vSwitch reachable (no ovsdb-server socket); run it in the kernel lab".to_string())
}

fn dhcp_unavailable() -> Option<String> {
    Some("needs a DHCP server on the container's link and the plugin's daemon; not driven by berth-conform yet".into())
}
