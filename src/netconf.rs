//! What `berth net create` writes: a network as Docker's drivers describe one (`bridge`,
//! `macvlan`, `ovs`), turned into the conflist of berth's plugins. Defaults are Docker's
//! bridge driver's: masquerade, published ports and isolation between networks on.

use crate::error::{BerthError, BerthResult};
use berth_cni::spec::ConfList;
use berth_util::names::{check_identifier, check_interface_name};
use clap::ValueEnum;
use ipnet::IpNet;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Driver {
    Bridge,
    Macvlan,
    Ovs,
    Overlay,
}

impl Driver {
    /// The driver a conflist was written for, from its first plugin.
    pub fn of(list: &ConfList) -> &'static str {
        match list.plugins.first().and_then(|p| p.get("type")).and_then(Value::as_str) {
            Some("berth-bridge" | "bridge") => "bridge",
            Some("berth-macvlan" | "macvlan") => "macvlan",
            Some("berth-ovs" | "ovs") => "ovs",
            _ => "other",
        }
    }
}

/// `berth net create`'s arguments, checked.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    pub subnets: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    pub ip_ranges: Vec<IpNet>,
    /// `--aux-address NAME=IP`: addresses never handed out (a router, a printer).
    pub aux_addresses: BTreeMap<String, String>,
    pub ipv6: bool,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub bandwidth: bool,
    /// `-d overlay`: the VXLAN the network's bridge joins (`--vni`, `--remote`, `--group`).
    pub vxlan: Option<berth_bridge::VxlanConf>,
    /// `--peer SUBNET=HOST_IP`: other hosts' container subnets, routed through those hosts.
    pub peers: Vec<(IpNet, IpAddr)>,
    /// `-d ovs --tunnel TYPE:REMOTE[:KEY]`: tunnel ports to other hosts' bridges.
    pub tunnels: Vec<berth_ovs::tunnel::Tunnel>,
}

fn invalid(msg: String) -> BerthError {
    BerthError::InvalidArgument(msg)
}

/// `KEY=VALUE` pairs of `-o` and `--label`.
pub fn key_values(flag: &str, pairs: &[String]) -> BerthResult<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(invalid(format!("{flag} {p:?} is not KEY=VALUE"))),
        })
        .collect()
}

impl NetworkSpec {
    pub fn conflist(&self, driver: Driver) -> BerthResult<ConfList> {
        check_identifier(&self.name).map_err(|e| invalid(format!("invalid network name {:?}: {e}", self.name)))?;
        let mut plugin = match driver {
            Driver::Bridge => self.bridge_plugin()?,
            Driver::Macvlan => self.macvlan_plugin()?,
            Driver::Ovs => self.ovs_plugin()?,
            Driver::Overlay => self.overlay_plugin()?,
        };
        if self.vxlan.is_some() && driver != Driver::Overlay {
            return Err(invalid("--vni, --remote and --group go with -d overlay".into()));
        }
        if !self.peers.is_empty() && driver != Driver::Bridge {
            return Err(invalid("--peer goes with -d bridge (routed between hosts)".into()));
        }
        if !self.tunnels.is_empty() && driver != Driver::Ovs {
            return Err(invalid("--tunnel goes with -d ovs (use -d overlay for VXLAN on a Linux bridge)".into()));
        }
        plugin.insert("ipam".into(), self.ipam()?);
        let mut plugins = vec![plugin];
        if self.bandwidth {
            plugins.push(crate::rate::bandwidth_plugin());
        }
        let mut raw = json!({ "cniVersion": "1.1.0", "name": self.name, "plugins": plugins });
        if !self.labels.is_empty() {
            raw["berth.labels"] = json!(self.labels);
        }
        if !self.peers.is_empty() {
            raw["berth.peers"] = json!(self.peers_json()?);
        }
        Ok(serde_json::from_value(raw).map_err(|e| berth_cni::CniError::invalid_config("network").with_details(e))?)
    }

    /// The options a driver takes, by berth's short name or Docker's long one.
    fn option(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.options.get(*n)).map(String::as_str)
    }

    fn refuse_unknown_options(&self, driver: &str, known: &[&str]) -> BerthResult<()> {
        match self.options.keys().find(|k| !known.contains(&k.as_str())) {
            Some(unknown) => Err(invalid(format!("-o {unknown}: not an option of the {driver} driver (it takes {})", known.join(", ")))),
            None => Ok(()),
        }
    }

    fn bridge_plugin(&self) -> BerthResult<Map<String, Value>> {
        const KNOWN: &[&str] = &[
            "bridge", "com.docker.network.bridge.name", "icc", "com.docker.network.bridge.enable_icc", "masquerade",
            "com.docker.network.bridge.enable_ip_masquerade", "mtu", "com.docker.network.driver.mtu", "host_binding_ipv4",
            "com.docker.network.bridge.host_binding_ipv4",
        ];
        self.refuse_unknown_options("bridge", KNOWN)?;
        let default_bridge: String = format!("berth-{}", self.name).chars().take(15).collect();
        let bridge = self.option(&["bridge", "com.docker.network.bridge.name"]).unwrap_or(&default_bridge).to_string();
        check_interface_name(&bridge).map_err(|e| invalid(format!("-o bridge={bridge}: {e}")))?;
        let icc = flag(self.option(&["icc", "com.docker.network.bridge.enable_icc"]), "icc", true)?;
        let masquerade = flag(self.option(&["masquerade", "com.docker.network.bridge.enable_ip_masquerade"]), "masquerade", true)?;
        let mut plugin = json_map(json!({
            "type": "berth-bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": masquerade && !self.internal,
            "icc": icc,
            "hairpinMode": true,
            "capabilities": { "portMappings": true, "ips": true, "mac": true },
        }));
        if let Some(mtu) = self.mtu()? {
            plugin.insert("mtu".into(), json!(mtu));
        }
        if !self.peers.is_empty() {
            // Routed between hosts: the peers see the containers' own addresses; anywhere
            // else, the host's.
            let subnets: Vec<String> = self.peers.iter().map(|(subnet, _)| subnet.trunc().to_string()).collect();
            plugin.insert("noMasqueradeDestinations".into(), json!(subnets));
        }
        if let Some(address) = self.option(&["host_binding_ipv4", "com.docker.network.bridge.host_binding_ipv4"]) {
            let ip: IpAddr = address.parse().map_err(|_| invalid(format!("-o host_binding_ipv4={address}: not an IP address")))?;
            plugin.insert("berth.hostBindingAddress".into(), json!(ip.to_string()));
        }
        Ok(plugin)
    }

    /// A berth-bridge network whose bridge joins a VXLAN: one layer 2 segment across hosts,
    /// so no host's bridge is its gateway (each would answer for the same address) and nothing
    /// is masqueraded; a container reaches the outside through a second network, as with
    /// Docker's overlay driver. Each host gets its own `--ip-range` of the common subnet.
    fn overlay_plugin(&self) -> BerthResult<Map<String, Value>> {
        let vxlan = self.vxlan.as_ref().ok_or_else(|| invalid("-d overlay needs --vni N and --remote IP (repeatable) or --group".into()))?;
        vxlan.check()?;
        let mut plugin = self.bridge_plugin()?;
        plugin.insert("isGateway".into(), json!(false));
        plugin.insert("ipMasq".into(), json!(false));
        let mut spec = json!({ "vni": vxlan.vni, "port": vxlan.port });
        if let Some(group) = vxlan.group {
            spec["group"] = json!(group.to_string());
        } else {
            spec["remotes"] = json!(vxlan.remotes.iter().map(IpAddr::to_string).collect::<Vec<_>>());
        }
        if let Some(dev) = &vxlan.dev {
            check_interface_name(dev).map_err(|e| invalid(format!("--vxlan-dev {dev}: {e}")))?;
            spec["dev"] = json!(dev);
        }
        plugin.insert("vxlan".into(), spec);
        Ok(plugin)
    }

    /// `berth.peers`, checked: each a subnet of none of ours, through an address.
    fn peers_json(&self) -> BerthResult<Vec<Value>> {
        let mut out = Vec::new();
        for (subnet, via) in &self.peers {
            if let Some(mine) = self.subnets.iter().find(|s| overlap(s, subnet)) {
                return Err(invalid(format!("--peer {subnet}: overlaps this network's subnet {mine}")));
            }
            out.push(json!({ "subnet": subnet.trunc().to_string(), "via": via.to_string() }));
        }
        Ok(out)
    }

    fn macvlan_plugin(&self) -> BerthResult<Map<String, Value>> {
        self.refuse_unknown_options("macvlan", &["parent", "macvlan_mode", "mode", "mtu", "com.docker.network.driver.mtu"])?;
        let parent = self.option(&["parent"]).ok_or_else(|| invalid("-d macvlan needs -o parent=INTERFACE[.VLAN]".into()))?;
        let (master, vlan) = match parent.rsplit_once('.') {
            Some((master, vlan)) if vlan.parse::<u16>().is_ok() => (master, Some(vlan.parse::<u16>().expect("checked"))),
            _ => (parent, None),
        };
        check_interface_name(master).map_err(|e| invalid(format!("-o parent={parent}: {e}")))?;
        let mode = self.option(&["macvlan_mode", "mode"]).unwrap_or("bridge");
        if !["bridge", "private", "vepa", "passthru"].contains(&mode) {
            return Err(invalid(format!("-o macvlan_mode={mode}: bridge, private, vepa or passthru")));
        }
        let mut plugin = json_map(json!({ "type": "berth-macvlan", "master": master, "mode": mode, "capabilities": { "ips": true, "mac": true } }));
        if let Some(vlan) = vlan {
            plugin.insert("vlan".into(), json!(vlan));
        }
        if let Some(mtu) = self.mtu()? {
            plugin.insert("mtu".into(), json!(mtu));
        }
        Ok(plugin)
    }

    fn ovs_plugin(&self) -> BerthResult<Map<String, Value>> {
        self.refuse_unknown_options("ovs", &["bridge", "vlan", "mtu", "com.docker.network.driver.mtu"])?;
        let bridge = self.option(&["bridge"]).ok_or_else(|| invalid("-d ovs needs -o bridge=OVS_BRIDGE".into()))?;
        let mut plugin = json_map(json!({ "type": "berth-ovs", "bridge": bridge, "createBridge": true, "capabilities": { "ips": true, "mac": true } }));
        if let Some(vlan) = self.option(&["vlan"]) {
            let vlan: u16 = vlan.parse().ok().filter(|v| (1..=4094).contains(v)).ok_or_else(|| invalid(format!("-o vlan={vlan}: 1 to 4094")))?;
            plugin.insert("vlan".into(), json!(vlan));
        }
        if let Some(mtu) = self.mtu()? {
            plugin.insert("mtu".into(), json!(mtu));
        }
        if let Some(socket) = ovsdb_socket_from_env() {
            plugin.insert("ovsdbSocket".into(), json!(socket));
        }
        if !self.tunnels.is_empty() {
            let tunnels: Vec<Value> = self
                .tunnels
                .iter()
                .map(|t| {
                    let mut tunnel = json!({ "type": t.kind.name(), "remote_ip": t.remote_ip.to_string() });
                    if let Some(key) = t.key {
                        tunnel["key"] = json!(key);
                    }
                    tunnel
                })
                .collect();
            plugin.insert("tunnels".into(), json!(tunnels));
        }
        Ok(plugin)
    }

    fn mtu(&self) -> BerthResult<Option<u32>> {
        self.option(&["mtu", "com.docker.network.driver.mtu"])
            .map(|m| m.parse::<u32>().ok().filter(|m| (68..=65535).contains(m)).ok_or_else(|| invalid(format!("-o mtu={m}: 68 to 65535"))))
            .transpose()
    }

    /// berth-host-local: one range set per subnet, with its gateway and `--ip-range`; a
    /// default route per family unless `--internal`.
    fn ipam(&self) -> BerthResult<Value> {
        if self.subnets.is_empty() {
            return Err(invalid("--subnet is required (berth picks no subnet for you)".into()));
        }
        if self.ipv6 != self.subnets.iter().any(|s| s.addr().is_ipv6()) {
            return Err(invalid("--ipv6 and an IPv6 --subnet go together".into()));
        }
        let mut sets = Vec::new();
        let mut routes = Vec::new();
        for subnet in self.subnets.iter().map(IpNet::trunc) {
            sets.push(json!([self.range(subnet)?]));
            let default = if subnet.addr().is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            if !self.internal && self.vxlan.is_none() && !routes.iter().any(|r: &Value| r["dst"] == default) {
                routes.push(json!({ "dst": default }));
            }
        }
        for extra in self.gateways.iter().copied().chain(self.ip_ranges.iter().map(IpNet::addr)).chain(self.aux()?) {
            if !self.subnets.iter().any(|s| s.contains(&extra)) {
                return Err(invalid(format!("{extra} is in none of the subnets")));
            }
        }
        Ok(json!({ "type": "berth-host-local", "ranges": sets, "routes": routes }))
    }

    /// The `--aux-address` addresses, checked.
    fn aux(&self) -> BerthResult<Vec<IpAddr>> {
        self.aux_addresses
            .iter()
            .map(|(name, ip)| ip.parse().map_err(|_| invalid(format!("--aux-address {name}={ip}: not an IP address"))))
            .collect()
    }

    fn range(&self, subnet: IpNet) -> BerthResult<Value> {
        let gateway = match self.gateways.iter().find(|g| subnet.contains(*g)) {
            Some(gw) => *gw,
            None => first_host(subnet).ok_or_else(|| invalid(format!("--subnet {subnet} has no host addresses")))?,
        };
        let mut range = json!({ "subnet": subnet.to_string(), "gateway": gateway.to_string() });
        let reserved: Vec<String> = self.aux()?.iter().filter(|ip| subnet.contains(*ip)).map(IpAddr::to_string).collect();
        if !reserved.is_empty() {
            // berth-host-local's `exclude`: never handed out.
            range["exclude"] = json!(reserved);
        }
        if let Some(ip_range) = self.ip_ranges.iter().map(IpNet::trunc).find(|r| subnet.contains(&r.addr())) {
            let first = first_host(ip_range).ok_or_else(|| invalid(format!("--ip-range {ip_range} has no host addresses")))?;
            // Not `hosts().last()`: an IPv6 range has 2^64 of them.
            let last = match ip_range {
                IpNet::V4(v4) if v4.prefix_len() < 31 => IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4.broadcast()) - 1)),
                other => other.broadcast(),
            };
            range["rangeStart"] = json!(first.to_string());
            range["rangeEnd"] = json!(last.to_string());
        }
        Ok(range)
    }
}

/// A subnet's first usable address: after the network address, in IPv6 too (where `hosts()`
/// starts at the subnet-router anycast address).
fn first_host(subnet: IpNet) -> Option<IpAddr> {
    match subnet {
        IpNet::V4(v4) => v4.hosts().next().map(IpAddr::V4),
        IpNet::V6(v6) if v6.prefix_len() < 128 => Some(IpAddr::V6((u128::from(v6.network()) + 1).into())),
        IpNet::V6(_) => None,
    }
}

fn flag(value: Option<&str>, name: &str, default: bool) -> BerthResult<bool> {
    match value {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(invalid(format!("-o {name}={other}: true or false"))),
    }
}

fn json_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The subnets a conflist's IPAM hands out (`ranges` or the legacy `subnet`).
pub fn subnets_of(list: &ConfList) -> Vec<IpNet> {
    let Some(ipam) = list.plugins.first().and_then(|p| p.get("ipam")) else { return Vec::new() };
    let mut out: Vec<IpNet> = ipam["ranges"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|set| set.as_array().into_iter().flatten())
        .filter_map(|r| r["subnet"].as_str()?.parse().ok())
        .collect();
    if let Some(subnet) = ipam["subnet"].as_str().and_then(|s| s.parse().ok()) {
        out.push(subnet);
    }
    out
}

/// `berth.peers` of a conflist: (subnet, through).
pub fn peers_of(list: &ConfList) -> Vec<(IpNet, IpAddr)> {
    let peers = list.extra.get("berth.peers").and_then(Value::as_array).cloned().unwrap_or_default();
    peers.iter().filter_map(|p| Some((p["subnet"].as_str()?.parse().ok()?, p["via"].as_str()?.parse().ok()?))).collect()
}

/// `--peer SUBNET=HOST_IP`.
pub fn parse_peer(arg: &str) -> BerthResult<(IpNet, IpAddr)> {
    let bad = || invalid(format!("--peer {arg:?}: SUBNET=HOST_IP, e.g. 10.62.0.0/24=192.0.2.2"));
    let (subnet, via) = arg.split_once('=').ok_or_else(bad)?;
    Ok((subnet.parse().map_err(|_| bad())?, via.parse().map_err(|_| bad())?))
}

/// `--tunnel TYPE:REMOTE[:KEY]`: `gre:192.0.2.2`, `gre:192.0.2.2:5`, `vxlan:[fd00::2]:42`.
pub fn parse_tunnel(arg: &str) -> BerthResult<berth_ovs::tunnel::Tunnel> {
    use berth_ovs::tunnel::{Tunnel, TunnelKind};
    let bad =
        |why: &str| invalid(format!("--tunnel {arg:?}: {why} (TYPE:REMOTE[:KEY], e.g. gre:192.0.2.2:5 or vxlan:[fd00::2]:42)"));
    let (kind, rest) = arg.split_once(':').ok_or_else(|| bad("no remote address"))?;
    let kind = match kind {
        "gre" => TunnelKind::Gre,
        "vxlan" => TunnelKind::Vxlan,
        _ => return Err(bad("the type is gre or vxlan")),
    };
    // An IPv6 address is bracketed when a key follows.
    let (remote, key) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed.split_once(']').ok_or_else(|| bad("no closing bracket"))?;
            (ip, after.strip_prefix(':'))
        }
        None if rest.parse::<IpAddr>().is_ok() => (rest, None),
        None => match rest.split_once(':') {
            Some((ip, key)) => (ip, Some(key)),
            None => (rest, None),
        },
    };
    let remote: IpAddr = remote.parse().map_err(|_| bad("the remote is not an IP address"))?;
    let key = key.map(|k| {
        k.parse::<u64>().ok().filter(|k| *k <= kind.max_key()).ok_or_else(|| bad(&format!("the key is 0 to {}", kind.max_key())))
    });
    Ok(Tunnel::new(kind, remote, key.transpose()?.map(|k| k as u32), None))
}

/// Where ovsdb-server listens when `ovs-vsctl` would look elsewhere than the plugin's default:
/// `unix:$OVS_RUNDIR/db.sock` when OVS_RUNDIR is set.
pub fn ovsdb_socket_from_env() -> Option<String> {
    let dir = std::env::var_os("OVS_RUNDIR").filter(|d| !d.is_empty())?;
    Some(format!("unix:{}/db.sock", std::path::Path::new(&dir).display()))
}

/// Whether two prefixes share an address.
pub fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnets: &[&str]) -> NetworkSpec {
        NetworkSpec { name: "n".into(), subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(), ..Default::default() }
    }

    #[test]
    fn docker_bridge_defaults() {
        let list = spec(&["10.88.0.7/24"]).conflist(Driver::Bridge).unwrap();
        let p = &list.plugins[0];
        assert_eq!((p["bridge"].as_str(), p["ipMasq"].as_bool(), p["icc"].as_bool()), (Some("berth-n"), Some(true), Some(true)));
        assert_eq!(p["capabilities"]["portMappings"], true);
        assert_eq!(p["ipam"]["ranges"][0][0]["gateway"], "10.88.0.1");
        assert_eq!(p["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
    }

    #[test]
    fn options_internal_ipv6_and_ranges() {
        let mut s = spec(&["10.1.0.0/16", "fd00:1::/64"]);
        s.ipv6 = true;
        s.internal = true;
        s.ip_ranges = vec!["10.1.5.0/24".parse().unwrap()];
        s.aux_addresses = key_values("--aux-address", &["router=10.1.5.9".into()]).unwrap();
        s.options = key_values("-o", &["mtu=1400".into(), "com.docker.network.bridge.enable_icc=false".into()]).unwrap();
        let p = &s.conflist(Driver::Bridge).unwrap().plugins[0];
        assert_eq!((p["ipMasq"].as_bool(), p["icc"].as_bool(), p["mtu"].as_u64()), (Some(false), Some(false), Some(1400)));
        assert_eq!(p["ipam"]["ranges"][0][0]["rangeStart"], "10.1.5.1");
        assert_eq!(p["ipam"]["ranges"][0][0]["exclude"], json!(["10.1.5.9"]));
        assert_eq!(p["ipam"]["ranges"][0][0]["rangeEnd"], "10.1.5.254");
        assert_eq!(p["ipam"]["ranges"][1][0]["gateway"], "fd00:1::1");
        assert_eq!(p["ipam"]["routes"], json!([]), "--internal: no route out");
    }

    #[test]
    fn macvlan_parent_vlan_and_bad_input() {
        let mut s = spec(&["192.168.5.0/24"]);
        s.options = key_values("-o", &["parent=eth0.42".into()]).unwrap();
        let p = &s.conflist(Driver::Macvlan).unwrap().plugins[0];
        assert_eq!((p["master"].as_str(), p["vlan"].as_u64(), p["mode"].as_str()), (Some("eth0"), Some(42), Some("bridge")));
        s.options = key_values("-o", &["colour=blue".into()]).unwrap();
        assert!(s.conflist(Driver::Bridge).unwrap_err().to_string().contains("colour"));
        assert!(spec(&[]).conflist(Driver::Bridge).is_err(), "--subnet is required");
        let mut v6 = spec(&["10.0.0.0/24"]);
        v6.ipv6 = true;
        assert!(v6.conflist(Driver::Bridge).is_err());
        assert!(key_values("-o", &["novalue".into()]).is_err());
    }

    #[test]
    fn overlay_and_peers() {
        let mut s = spec(&["10.70.0.0/24"]);
        assert!(s.conflist(Driver::Overlay).unwrap_err().to_string().contains("--vni"));
        s.vxlan = Some(serde_json::from_value(json!({"vni": 42, "remotes": ["192.0.2.2"], "dev": "eth0"})).unwrap());
        let p = &s.conflist(Driver::Overlay).unwrap().plugins[0];
        assert_eq!((p["isGateway"].as_bool(), p["ipMasq"].as_bool()), (Some(false), Some(false)));
        assert_eq!(p["vxlan"], json!({"vni": 42, "port": 4789, "remotes": ["192.0.2.2"], "dev": "eth0"}));
        assert_eq!(p["ipam"]["routes"], json!([]), "no gateway on an overlay");
        assert!(s.conflist(Driver::Bridge).is_err(), "--vni needs -d overlay");

        let mut r = spec(&["10.61.0.0/24"]);
        r.peers = vec![parse_peer("10.62.0.0/24=192.0.2.2").unwrap()];
        let list = r.conflist(Driver::Bridge).unwrap();
        assert_eq!(list.plugins[0]["ipMasq"], true, "the outside sees the host's address");
        assert_eq!(list.plugins[0]["noMasqueradeDestinations"], json!(["10.62.0.0/24"]), "the peers, the containers' own");
        assert_eq!(peers_of(&list), r.peers);
        assert!(parse_peer("10.62.0.0/24").is_err());
        r.peers = vec![parse_peer("10.61.0.0/16=192.0.2.2").unwrap()];
        assert!(r.conflist(Driver::Bridge).unwrap_err().to_string().contains("overlaps"));
    }

    #[test]
    fn ovs_tunnels() {
        let mut s = spec(&["10.40.0.0/24"]);
        s.options = key_values("-o", &["bridge=ovs0".into()]).unwrap();
        s.tunnels = vec![parse_tunnel("gre:192.0.2.2:5").unwrap(), parse_tunnel("vxlan:[fd00::2]:42").unwrap()];
        let p = &s.conflist(Driver::Ovs).unwrap().plugins[0];
        assert_eq!(
            p["tunnels"],
            json!([{"type": "gre", "remote_ip": "192.0.2.2", "key": 5}, {"type": "vxlan", "remote_ip": "fd00::2", "key": 42}])
        );
        assert!(s.conflist(Driver::Bridge).unwrap_err().to_string().contains("-d ovs"));
        let gre = parse_tunnel("gre:192.0.2.2").unwrap();
        assert_eq!((gre.remote_ip.to_string(), gre.key), ("192.0.2.2".into(), None));
        assert_eq!(parse_tunnel("vxlan:fd00::2").unwrap().key, None, "an IPv6 remote alone needs no brackets");
        for bad in ["gre", "geneve:192.0.2.2", "gre:host-b:5", "vxlan:192.0.2.2:16777216", "gre:[fd00::2:5", "gre:192.0.2.2:x"] {
            assert!(parse_tunnel(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlaps() {
        let a: IpNet = "10.0.0.0/16".parse().unwrap();
        assert!(overlap(&a, &"10.0.5.0/24".parse().unwrap()));
        assert!(!overlap(&a, &"10.1.0.0/16".parse().unwrap()));
    }
}
