//! berth-macvlan's configuration: the reference macvlan plugin's keys, same names and
//! defaults, plus `vlan` (pipework's `eth0.100` trunk mode).

use berth_netlink::{MacAddr, MacvlanMode};
use berth_cni::skel::Request;
use berth_cni::spec::decode_plugin_conf;
use berth_cni::{CniError, CniResult};
use berth_util::names::check_interface_name;
use serde::Deserialize;

/// As the JSON says it; [`MacvlanConf::parse`] checks it.
#[derive(Debug, Clone, Deserialize)]
struct RawConf {
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(rename = "linkInContainer", default)]
    link_in_container: bool,
    #[serde(default)]
    vlan: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct MacvlanConf {
    /// The parent link; `None`: the interface of the default route.
    pub master: Option<String>,
    pub mode: MacvlanMode,
    /// `None` (or 0 in the JSON): the kernel's choice, the parent's MTU.
    pub mtu: Option<u32>,
    /// The `mac` key; see [`MacvlanConf::container_mac`] for the other sources.
    pub mac: Option<String>,
    /// The master is looked up, and the macvlan created, in the container's namespace.
    pub link_in_container: bool,
    /// 802.1q trunk: the parent is the sub-interface `MASTER.VLAN`, created when missing.
    pub vlan: Option<u16>,
    /// IPAM configured (a non-empty `ipam.type`); without it the link is layer 2 only.
    pub with_ipam: bool,
}

impl MacvlanConf {
    pub fn parse(req: &Request) -> CniResult<MacvlanConf> {
        let raw: RawConf = decode_plugin_conf(&req.stdin)?;
        if let Some(master) = &raw.master {
            check_interface_name(master).map_err(|e| CniError::invalid_config(format!("master: {e}")).with_details(master))?;
        }
        let mode = match raw.mode.as_deref() {
            None | Some("") => MacvlanMode::Bridge,
            Some(m) => m.parse().map_err(|e| CniError::invalid_config(format!("mode: {e}")))?,
        };
        let mtu = raw.mtu.filter(|&m| m != 0);
        if let Some(mtu) = mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::invalid_config(format!("mtu: {mtu} is outside 68..=65535")));
            }
        }
        let vlan = match raw.vlan {
            None => None,
            Some(v @ 1..=4094) => Some(v as u16),
            Some(v) => return Err(CniError::invalid_config(format!("vlan: {v} is outside 1..=4094"))),
        };
        if vlan.is_some() && mode == MacvlanMode::Passthru {
            // passthru takes the whole parent; a shared trunk sub-interface cannot be that.
            return Err(CniError::invalid_config("vlan: not possible with mode passthru"));
        }
        Ok(MacvlanConf {
            master: raw.master,
            mode,
            mtu,
            mac: raw.mac,
            link_in_container: raw.link_in_container,
            vlan,
            with_ipam: req.conf.ipam.as_ref().is_some_and(|i| !i.plugin_type.is_empty()),
        })
    }

    /// The container MAC, by the same precedence as berth-bridge: CNI_ARGS MAC,
    /// runtimeConfig.mac (the `mac` capability), args.cni.mac, the `mac` key.
    pub fn container_mac(&self, req: &Request) -> CniResult<Option<MacAddr>> {
        berth_cni::iface::requested_mac(req, self.mac.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::skel::{Command, Request};
    use berth_cni::spec::{NetConf, Version};

    fn req(json: serde_json::Value, args: &[(&str, &str)]) -> Request {
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

    #[test]
    fn defaults_are_the_reference_plugins() {
        let conf = MacvlanConf::parse(&req(serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "berth-macvlan"}), &[])).unwrap();
        assert_eq!(conf.mode, MacvlanMode::Bridge);
        assert_eq!(conf.master, None);
        assert_eq!(conf.mtu, None);
        assert!(!conf.with_ipam && !conf.link_in_container && conf.vlan.is_none());
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad = |extra: serde_json::Value| {
            let mut j = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "berth-macvlan"});
            j.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            MacvlanConf::parse(&req(j, &[])).unwrap_err()
        };
        for (extra, field) in [
            (serde_json::json!({"mode": "passthrough"}), "mode"),
            (serde_json::json!({"vlan": 4095}), "vlan"),
            (serde_json::json!({"vlan": 0}), "vlan"),
            (serde_json::json!({"mtu": 20}), "mtu"),
            (serde_json::json!({"master": "a/b"}), "master"),
            (serde_json::json!({"vlan": 5, "mode": "passthru"}), "vlan"),
        ] {
            let err = bad(extra.clone());
            assert_eq!(err.code, 7, "{extra}: {err}");
            assert!(err.msg.starts_with(field), "{extra}: {err}");
        }
        assert_eq!(bad(serde_json::json!({"mtu": "big"})).code, 7);
    }

    #[test]
    fn mac_precedence_follows_berth_bridge() {
        let j = serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "berth-macvlan", "mac": "0a:00:00:00:00:01",
            "args": {"cni": {"mac": "0a:00:00:00:00:02"}}, "runtimeConfig": {"mac": "0a:00:00:00:00:03"}
        });
        let mac = |args: &[(&str, &str)]| {
            let r = req(j.clone(), args);
            MacvlanConf::parse(&r).unwrap().container_mac(&r).unwrap().unwrap().to_string()
        };
        assert_eq!(mac(&[]), "0a:00:00:00:00:03");
        assert_eq!(mac(&[("MAC", "0a:00:00:00:00:04")]), "0a:00:00:00:00:04");
    }
}
