//! Real configurations of every berth plugin, as the README, the conformance tests and
//! podman write them: the seeds of the config targets and of the black-box runs.
//! Paths are relative to a `dir` the caller owns, so mutants write nowhere else.

use serde_json::{json, Value};

/// The IPAM sections the configurations use, with state under `dir`.
struct Ipams {
    host_local: Value,
    legacy_host_local: Value,
    static_ipam: Value,
    dhcp: Value,
}

impl Ipams {
    fn new(dir: &str) -> Ipams {
        Ipams {
            host_local: json!({
                "type": "berth-host-local",
                "ranges": [[{"subnet": "10.22.0.0/16", "rangeStart": "10.22.1.20", "rangeEnd": "10.22.3.50",
                             "gateway": "10.22.0.254", "exclude": ["10.22.2.0/24", "10.22.3.7"]}],
                           [{"subnet": "fd00:22::/64"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd01::/64", "gw": "fd00:22::1"}],
                "dataDir": format!("{dir}/ipam"),
            }),
            legacy_host_local: json!({"type": "berth-host-local", "subnet": "10.88.0.0/16", "gateway": "10.88.0.1",
                "dataDir": format!("{dir}/ipam")}),
            static_ipam: json!({
                "type": "berth-static",
                "addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}, {"address": "fd00:10::5/64"}],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {"nameservers": ["10.10.0.1"], "domain": "example.com", "search": ["example.com"]},
            }),
            dhcp: json!({"type": "berth-dhcp", "daemonSocketPath": format!("{dir}/dhcp.sock"), "timeout": 0.2,
                "request": [{"option": "subnet-mask"}, {"skipDefault": true, "option": "121"}],
                "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}, {"option": "12", "value": "c1"}]}),
        }
    }
}

/// The network configurations of `plugin` (its binary's name), with state under `dir`.
pub fn configs(plugin: &str, dir: &str) -> Vec<Value> {
    let ipam = Ipams::new(dir);
    let keys = match plugin {
        "berth-bridge" | "berth-macvlan" | "berth-ovs" | "berth-host-device" => interface_plugin_keys(plugin, &ipam, dir),
        _ => other_plugin_keys(plugin, &ipam, dir),
    };
    keys.into_iter()
        .map(|(version, name, extra)| {
            let mut conf = json!({"cniVersion": version, "name": name, "type": plugin});
            if let (Some(conf), Value::Object(extra)) = (conf.as_object_mut(), extra) {
                conf.extend(extra);
            }
            conf
        })
        .collect()
}

/// cniVersion, network name and the plugin's own keys of each configuration.
type Keys = Vec<(&'static str, &'static str, Value)>;

/// The plugins that give the container an interface.
fn interface_plugin_keys(plugin: &str, ipam: &Ipams, dir: &str) -> Keys {
    match plugin {
        "berth-bridge" => vec![
            (
                "1.0.0",
                "mynet",
                json!({"bridge": "fzbr0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
                "mtu": 1400, "firewallBackend": "auto", "ipam": ipam.host_local,
                "capabilities": {"portMappings": true, "mac": true},
                "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                                  "mac": "0a:58:0a:16:00:09"}}),
            ),
            (
                "0.4.0",
                "podman",
                json!({"bridge": "fzbr1", "isGateway": true, "ipMasq": false, "firewallBackend": "none",
                "icc": false, "isolateNetworks": false, "promiscMode": true, "vlan": 0, "ipam": ipam.legacy_host_local}),
            ),
            (
                "1.1.0",
                "ov42",
                json!({"bridge": "fzbrv", "firewallBackend": "none", "ipam": ipam.static_ipam,
                "vxlan": {"vni": 42, "remotes": ["192.0.2.2"], "port": 4789, "dev": "lo"}}),
            ),
        ],
        "berth-macvlan" => vec![
            ("1.0.0", "lan", json!({"master": "fzpar0", "mode": "bridge", "mtu": 1400, "ipam": ipam.host_local})),
            (
                "1.1.0",
                "lan2",
                json!({"master": "fzpar0", "mode": "private", "mac": "0a:00:00:00:00:01",
                "linkInContainer": false, "ipam": ipam.dhcp}),
            ),
        ],
        "berth-ovs" => vec![(
            "1.0.0",
            "ovsnet",
            json!({"bridge": "br-fz", "vlan": 10, "mtu": 1400,
            "ovsdbSocket": format!("{dir}/db.sock"), "ipam": ipam.static_ipam}),
        )],
        _ => vec![
            ("1.0.0", "hd", json!({"device": "fzdev0", "ipam": ipam.static_ipam})),
            ("0.4.0", "hd2", json!({"hwaddr": "0a:00:00:00:00:02"})),
        ],
    }
}

/// IPAM, chained and namespace-only plugins.
fn other_plugin_keys(plugin: &str, ipam: &Ipams, dir: &str) -> Keys {
    match plugin {
        "berth-host" => vec![("1.0.0", "hostnet", json!({})), ("1.1.0", "hostnet", json!({"interfaces": ["lo"]}))],
        "berth-none" => vec![("1.0.0", "isolated", json!({})), ("0.3.1", "isolated", json!({}))],
        "berth-host-local" => {
            vec![("1.0.0", "hl", json!({"ipam": ipam.host_local})), ("0.3.1", "hl2", json!({"ipam": ipam.legacy_host_local}))]
        }
        "berth-static" => vec![("1.0.0", "st", json!({"ipam": ipam.static_ipam}))],
        "berth-dhcp" => vec![("1.0.0", "lan", json!({"ipam": ipam.dhcp}))],
        "berth-bandwidth" => vec![
            (
                "1.0.0",
                "mynet",
                json!({"ingressRate": 1_000_000, "ingressBurst": 100_000, "egressRate": 2_000_000,
                "egressBurst": 200_000, "prevResult": prev_result()}),
            ),
            (
                "1.1.0",
                "mynet",
                json!({"capabilities": {"bandwidth": true},
                "runtimeConfig": {"bandwidth": {"ingressRate": 8000, "ingressBurst": 16000}}, "prevResult": prev_result()}),
            ),
        ],
        "berth-dns" => vec![(
            "1.0.0",
            "mynet",
            json!({"domainName": "dns.podman", "dataDir": format!("{dir}/dns"),
            "resolvConf": format!("{dir}/resolv.conf"), "capabilities": {"aliases": true},
            "runtimeConfig": {"aliases": {"mynet": ["web", "db"]}}, "prevResult": prev_result()}),
        )],
        _ => vec![("1.0.0", "n", json!({}))],
    }
}

/// An ADD result of berth-bridge, as a chained plugin receives it.
pub fn prev_result() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "fzbr0", "mac": "0a:58:0a:16:00:01"}, {"name": "veth1234", "mac": "0a:58:0a:16:00:02"},
                       {"name": "eth0", "mac": "0a:58:0a:16:00:09", "sandbox": "/var/run/netns/c1"}],
        "ips": [{"interface": 2, "address": "10.22.1.20/16", "gateway": "10.22.0.254"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.254"}],
        "dns": {"nameservers": ["10.22.0.254"], "search": ["dns.podman"]}
    })
}

/// Every plugin binary berth builds.
pub const PLUGINS: &[&str] = &[
    "berth-bridge",
    "berth-macvlan",
    "berth-ovs",
    "berth-host-device",
    "berth-host",
    "berth-none",
    "berth-host-local",
    "berth-static",
    "berth-dhcp",
    "berth-bandwidth",
    "berth-dns",
];

/// A CNI invocation as one fuzz input: `KEY=VALUE` lines, a NUL, then stdin.
pub fn invocation(env: &[(&str, &str)], stdin: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in env {
        out.extend_from_slice(format!("{key}={value}\n").as_bytes());
    }
    out.push(0);
    out.extend_from_slice(stdin.to_string().as_bytes());
    out
}

/// The environment of a runtime's ADD (or `command`) for container `c1`.
pub fn cni_env(command: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.22.1.30"),
    ]
}

/// Splits an input made by [`invocation`] into environment and stdin; an input without a
/// NUL is all stdin.
pub fn split_invocation(input: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let Some(at) = input.iter().rposition(|&b| b == 0) else { return (Vec::new(), input.to_vec()) };
    let env = String::from_utf8_lossy(&input[..at])
        .lines()
        .filter_map(|line| line.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    (env, input[at + 1..].to_vec())
}
