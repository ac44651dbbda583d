//! berth-ovs's configuration: ovs-cni's keys (`bridge`, `vlan`, `trunk`, `mtu`,
//! `socket_file`), berth's `ovsdbSocket`, `createBridge` and `tunnels`, and the MAC sources
//! every berth plugin reads.

use crate::tunnel::{Tunnel, TunnelKind};
use crate::vswitch::Vlans;
use berth_netlink::MacAddr;
use berth_cni::skel::{validate_ifname, Request};
use berth_cni::spec::decode_plugin_conf;
use berth_cni::{CniError, CniResult};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// Where ovsdb-server listens on a stock install.
pub const DEFAULT_OVSDB_SOCKET: &str = "unix:/var/run/openvswitch/db.sock";

/// The largest VLAN id the Port table takes (`tag` and `trunks` are 0..=4095).
const MAX_VID: i64 = 4095;

/// As the JSON says it; [`OvsConf::parse`] checks it.
#[derive(Debug, Clone, Deserialize)]
struct RawConf {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(default)]
    trunk: Option<Vec<Value>>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    mac: Option<String>,
    /// ovs-cni calls it `socket_file`.
    #[serde(rename = "ovsdbSocket", alias = "socket_file", default)]
    ovsdb_socket: Option<String>,
    #[serde(rename = "createBridge", default)]
    create_bridge: bool,
    #[serde(default)]
    tunnels: Vec<RawTunnel>,
}

/// One of `tunnels`: `{"type": "gre", "remote_ip": "192.0.2.2", "key": 5, "name": "gre0"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    #[serde(rename = "type")]
    kind: String,
    remote_ip: String,
    #[serde(default)]
    key: Option<u64>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OvsConf {
    pub bridge: String,
    /// An access port on `vlan`, a trunk of `trunk`, or (neither) a trunk of every VLAN.
    pub vlans: Vlans,
    /// Of both ends of the veth, as configured; `None` (or 0 in the JSON): the kernel's
    /// default, or lowered for `tunnels` ([`OvsConf::veth_mtu`]).
    pub mtu: Option<u32>,
    pub mac: Option<String>,
    /// `unix:/path` or `/path`.
    pub ovsdb_socket: String,
    /// Create the bridge when it is missing, else fail.
    pub create_bridge: bool,
    /// IPAM configured (a non-empty `ipam.type`); without it the link is layer 2 only.
    pub with_ipam: bool,
    /// GRE and VXLAN ports to other hosts, made with the network's first port on the bridge.
    pub tunnels: Vec<Tunnel>,
    /// The network's name (`name`): whose ports and tunnels they are.
    pub network: String,
}

impl OvsConf {
    pub fn parse(req: &Request) -> CniResult<OvsConf> {
        let raw: RawConf = decode_plugin_conf(&req.stdin)?;
        let bridge = raw.bridge.filter(|b| !b.is_empty()).ok_or_else(|| CniError::invalid_config("bridge: required"))?;
        // An OVS bridge is also a network device of that name.
        validate_ifname(&bridge).map_err(|e| CniError::invalid_config(format!("bridge: {}", e.msg)).with_details(&bridge))?;
        let tag = raw.vlan.map(|v| vid("vlan", v)).transpose()?;
        let trunks = raw.trunk.as_deref().map(parse_trunks).transpose()?;
        if tag.is_some() && trunks.is_some() {
            return Err(CniError::invalid_config("vlan: an access port has one VLAN; give either vlan or trunk, not both"));
        }
        let mtu = raw.mtu.filter(|&m| m != 0);
        if let Some(mtu) = mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::invalid_config(format!("mtu: {mtu} is outside 68..=65535")));
            }
        }
        let ovsdb_socket = raw.ovsdb_socket.filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_OVSDB_SOCKET.to_string());
        crate::ovsdb::socket_path(&ovsdb_socket).map_err(|e| CniError::invalid_config(format!("ovsdbSocket: {e}")))?;
        let tunnels = raw.tunnels.iter().enumerate().map(|(i, t)| parse_tunnel(i, t)).collect::<CniResult<Vec<_>>>()?;
        if let Some(twice) = tunnels.iter().enumerate().find_map(|(i, t)| tunnels[..i].iter().find(|o| o.name == t.name)) {
            return Err(CniError::invalid_config(format!("tunnels: two tunnels are named {}", twice.name)));
        }
        Ok(OvsConf {
            bridge,
            vlans: Vlans { tag, trunks: trunks.unwrap_or_default() },
            mtu,
            mac: raw.mac,
            ovsdb_socket,
            create_bridge: raw.create_bridge,
            with_ipam: req.conf.ipam.as_ref().is_some_and(|i| !i.plugin_type.is_empty()),
            tunnels,
            network: req.conf.name.clone(),
        })
    }

    /// The MTU of both ends of the veth: `mtu` when set, else with tunnels the underlay's
    /// (1500) less the largest encapsulation's overhead, so that full-size frames cross in one
    /// underlay packet.
    pub fn veth_mtu(&self) -> Option<u32> {
        let overhead = self.tunnels.iter().map(Tunnel::overhead).max();
        self.mtu.or(overhead.map(|o| crate::tunnel::UNDERLAY_MTU - o))
    }

    /// The container MAC, by the precedence of every berth plugin: CNI_ARGS MAC,
    /// runtimeConfig.mac (the `mac` capability), args.cni.mac, the `mac` key.
    pub fn container_mac(&self, req: &Request) -> CniResult<Option<MacAddr>> {
        berth_cni::iface::requested_mac(req, self.mac.as_deref())
    }
}

/// `tunnels[i]`, checked: a known type, an address, a key in the type's range, a usable name.
fn parse_tunnel(i: usize, raw: &RawTunnel) -> CniResult<Tunnel> {
    let bad = |msg: String| CniError::invalid_config(format!("tunnels[{i}].{msg}"));
    let kind = match raw.kind.as_str() {
        "gre" => TunnelKind::Gre,
        "vxlan" => TunnelKind::Vxlan,
        other => return Err(bad(format!("type: {other:?} is not \"gre\" or \"vxlan\""))),
    };
    let remote_ip = raw.remote_ip.parse().map_err(|_| bad(format!("remote_ip: {:?} is not an IP address", raw.remote_ip)))?;
    let key = match raw.key {
        Some(key) if key > kind.max_key() => {
            return Err(bad(format!("key: {key} is outside 0..={} for {}", kind.max_key(), kind.name())))
        }
        key => key.map(|k| k as u32),
    };
    let tunnel = Tunnel::new(kind, remote_ip, key, raw.name.clone());
    validate_ifname(&tunnel.name).map_err(|e| bad(format!("name: {}", e.msg)))?;
    Ok(tunnel)
}

fn vid(field: &str, v: i64) -> CniResult<u16> {
    if (0..=MAX_VID).contains(&v) {
        Ok(v as u16)
    } else {
        Err(CniError::invalid_config(format!("{field}: VLAN id {v} is outside 0..={MAX_VID}")))
    }
}

/// ovs-cni's `trunk`: `[{"id": 42}, {"minID": 1000, "maxID": 1010}]`; plain numbers too.
fn parse_trunks(entries: &[Value]) -> CniResult<Vec<u16>> {
    let bad = |entry: &Value, why: &str| CniError::invalid_config(format!("trunk: {why}")).with_details(entry);
    let mut vids = BTreeSet::new();
    for entry in entries {
        let int = |key: &str| -> CniResult<Option<u16>> {
            match entry.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(|n| vid(&format!("trunk {key}"), n))
                    .transpose()?
                    .map(Some)
                    .ok_or_else(|| bad(entry, &format!("{key} is not an integer"))),
            }
        };
        match entry {
            Value::Number(n) => {
                let n = n.as_i64().ok_or_else(|| bad(entry, "not an integer"))?;
                vids.insert(vid("trunk", n)?);
            }
            Value::Object(fields) => {
                if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "id" | "minID" | "maxID")) {
                    return Err(bad(entry, &format!("unknown key {unknown:?} (id, minID, maxID)")));
                }
                let (id, min, max) = (int("id")?, int("minID")?, int("maxID")?);
                match (min, max) {
                    (Some(min), Some(max)) if min <= max => vids.extend(min..=max),
                    (Some(min), Some(max)) => return Err(bad(entry, &format!("minID {min} is greater than maxID {max}"))),
                    (None, None) => {}
                    _ => return Err(bad(entry, "a range needs both minID and maxID")),
                }
                match id {
                    Some(id) => {
                        vids.insert(id);
                    }
                    None if min.is_none() => return Err(bad(entry, "an entry needs id, or minID and maxID")),
                    None => {}
                }
            }
            _ => return Err(bad(entry, "entries are VLAN ids or {\"id\"} / {\"minID\", \"maxID\"} objects")),
        }
    }
    if vids.is_empty() {
        return Err(CniError::invalid_config("trunk: empty (leave it out to trunk every VLAN)"));
    }
    Ok(vids.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::skel::Command;
    use berth_cni::spec::{NetConf, Version};
    use serde_json::json;

    fn req(json: Value, args: &[(&str, &str)]) -> Request {
        let stdin = json.to_string().into_bytes();
        Request {
            command: Command::Add,
            container_id: "c1".into(),
            netns: Some("/var/run/netns/c1".into()),
            ifname: "eth0".into(),
            args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cni_path: vec![],
            conf: NetConf::from_slice(&stdin).unwrap(),
            stdin,
            version: Version::V1_0_0,
            options: Default::default(),
        }
    }

    fn conf(extra: Value) -> CniResult<OvsConf> {
        let mut j = json!({"cniVersion": "1.0.0", "name": "n", "type": "berth-ovs", "bridge": "br0"});
        j.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        OvsConf::parse(&req(j, &[]))
    }

    #[test]
    fn defaults() {
        let c = conf(json!({})).unwrap();
        assert_eq!(c.bridge, "br0");
        assert_eq!(c.vlans, Vlans::default());
        assert_eq!(c.vlans.vlan_mode(), "trunk", "no vlan, no trunk: every VLAN, as ovs-cni");
        assert_eq!(c.ovsdb_socket, DEFAULT_OVSDB_SOCKET);
        assert!(!c.create_bridge && !c.with_ipam && c.mtu.is_none());
    }

    #[test]
    fn vlans_and_trunks() {
        let c = conf(json!({"vlan": 100})).unwrap();
        assert_eq!(c.vlans, Vlans { tag: Some(100), trunks: vec![] });
        assert_eq!(c.vlans.vlan_mode(), "access");
        let c = conf(json!({"trunk": [{"minID": 100, "maxID": 103}, {"id": 300}, 7, {"id": 101}]})).unwrap();
        assert_eq!(c.vlans.trunks, vec![7, 100, 101, 102, 103, 300]);
        assert_eq!(c.vlans.tag, None);
        let c = conf(json!({"trunk": [{"minID": 10, "maxID": 11, "id": 20}]})).unwrap();
        assert_eq!(c.vlans.trunks, vec![10, 11, 20]);
    }

    #[test]
    fn socket_and_bridge_options() {
        let c = conf(json!({"ovsdbSocket": "/tmp/ovs/db.sock", "createBridge": true, "mtu": 1400})).unwrap();
        assert_eq!(c.ovsdb_socket, "/tmp/ovs/db.sock");
        assert!(c.create_bridge);
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(conf(json!({"socket_file": "unix:/run/x.sock"})).unwrap().ovsdb_socket, "unix:/run/x.sock", "ovs-cni's key");
        assert_eq!(conf(json!({"mtu": 0})).unwrap().mtu, None);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (extra, field) in [
            (json!({"vlan": 4096}), "vlan"),
            (json!({"vlan": -1}), "vlan"),
            (json!({"vlan": 100, "trunk": [200]}), "vlan"),
            (json!({"trunk": []}), "trunk"),
            (json!({"trunk": [{"minID": 200, "maxID": 100}]}), "trunk"),
            (json!({"trunk": [{"minID": 200}]}), "trunk"),
            (json!({"trunk": [{"maxID": 5000, "minID": 1}]}), "trunk"),
            (json!({"trunk": [{"vid": 5}]}), "trunk"),
            (json!({"trunk": ["100"]}), "trunk"),
            (json!({"trunk": [{}]}), "trunk"),
            (json!({"mtu": 20}), "mtu"),
            (json!({"bridge": "a/b"}), "bridge"),
            (json!({"bridge": ""}), "bridge"),
            (json!({"ovsdbSocket": "tcp:127.0.0.1:6640"}), "ovsdbSocket"),
        ] {
            let err = conf(extra.clone()).unwrap_err();
            assert_eq!(err.code, 7, "{extra}: {err}");
            assert!(err.msg.starts_with(field), "{extra}: {err}");
        }
        assert_eq!(conf(json!({"vlan": "100"})).unwrap_err().code, 7);
        let no_bridge = OvsConf::parse(&req(json!({"cniVersion": "1.0.0", "name": "n", "type": "berth-ovs"}), &[])).unwrap_err();
        assert!(no_bridge.msg.starts_with("bridge"), "{no_bridge}");
    }

    #[test]
    fn tunnels_are_checked_and_lower_the_mtu() {
        let c = conf(json!({"tunnels": [{"type": "gre", "remote_ip": "192.0.2.2", "key": 5}]})).unwrap();
        let gre = &c.tunnels[0];
        assert_eq!((gre.kind, gre.remote_ip.to_string(), gre.key), (TunnelKind::Gre, "192.0.2.2".into(), Some(5)));
        assert!(gre.name.starts_with("gre-") && gre.name.len() <= 15, "{}", gre.name);
        assert_eq!(c.veth_mtu(), Some(1458), "GRE with a key: 42 bytes of encapsulation");
        let c = conf(json!({"tunnels": [{"type": "gre", "remote_ip": "192.0.2.2"}, {"type": "vxlan", "remote_ip": "192.0.2.3", "key": 42}]})).unwrap();
        assert_eq!(c.veth_mtu(), Some(1450), "the largest overhead: VXLAN's 50");
        assert_ne!(c.tunnels[0].name, c.tunnels[1].name);
        let c = conf(json!({"tunnels": [{"type": "vxlan", "remote_ip": "fd00::2", "name": "vx0"}], "mtu": 1400})).unwrap();
        assert_eq!((c.tunnels[0].name.as_str(), c.veth_mtu()), ("vx0", Some(1400)), "an explicit mtu is kept");
        assert_eq!(conf(json!({"tunnels": [{"type": "vxlan", "remote_ip": "fd00::2"}]})).unwrap().veth_mtu(), Some(1430));
        assert_eq!(conf(json!({})).unwrap().veth_mtu(), None);
        for (tunnels, says) in [
            (json!([{"type": "geneve", "remote_ip": "192.0.2.2"}]), "tunnels[0].type"),
            (json!([{"type": "gre", "remote_ip": "host-b"}]), "tunnels[0].remote_ip"),
            (json!([{"type": "vxlan", "remote_ip": "192.0.2.2", "key": 16777216}]), "tunnels[0].key"),
            (json!([{"type": "gre", "remote_ip": "192.0.2.2", "key": 4294967296u64}]), "tunnels[0].key"),
            (json!([{"type": "gre", "remote_ip": "192.0.2.2", "name": "a/b"}]), "tunnels[0].name"),
            (json!([{"type": "gre", "remote_ip": "192.0.2.2"}, {"type": "gre", "remote_ip": "192.0.2.2"}]), "tunnels: two"),
        ] {
            let err = conf(json!({ "tunnels": tunnels })).unwrap_err();
            assert_eq!(err.code, 7, "{tunnels}: {err}");
            assert!(err.msg.starts_with(says), "{tunnels}: {err}");
        }
    }

    #[test]
    fn mac_precedence_follows_the_other_plugins() {
        let j = json!({
            "cniVersion": "1.0.0", "name": "n", "type": "berth-ovs", "bridge": "br0", "mac": "0a:00:00:00:00:01",
            "args": {"cni": {"mac": "0a:00:00:00:00:02"}},
        });
        let mac = |args: &[(&str, &str)]| {
            let r = req(j.clone(), args);
            OvsConf::parse(&r).unwrap().container_mac(&r).unwrap().unwrap().to_string()
        };
        assert_eq!(mac(&[]), "0a:00:00:00:00:02");
        assert_eq!(mac(&[("MAC", "0a:00:00:00:00:04")]), "0a:00:00:00:00:04");
    }
}
