//! berth-bridge's configuration: the reference bridge plugin's keys, same names and defaults.

use berth_cni::skel::{Command, Request};
use berth_cni::spec::decode_plugin_conf;
use berth_cni::{CniError, CniResult};
use berth_firewall::FirewallBackend;
use berth_netlink::MacAddr;
use serde::Deserialize;

pub const DEFAULT_BRIDGE: &str = "cni0";

#[derive(Debug, Clone, Deserialize)]
pub struct BridgeConf {
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(rename = "isGateway", default)]
    pub is_gateway: bool,
    #[serde(rename = "isDefaultGateway", default)]
    pub is_default_gateway: bool,
    #[serde(rename = "forceAddress", default)]
    pub force_address: bool,
    /// Masquerade the container's routed traffic behind the host's address.
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    /// "auto" (nftables when `nft` is installed, else iptables), "nftables", "iptables",
    /// "iptables-nft", "iptables-legacy" or "none" (no NAT, port mappings or isolation), as
    /// written; [`BridgeConf::firewall_backend`] is what it names.
    #[serde(rename = "firewallBackend", default = "auto")]
    firewall_backend_name: String,
    /// The firewall backend `firewallBackend` names, checked by `parse`.
    #[serde(skip)]
    pub firewall_backend: FirewallBackend,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Inter-container communication on this bridge (Docker's `--icc`). Off isolates every
    /// container port from the others; the gateway and the outside stay reachable.
    #[serde(default = "yes")]
    pub icc: bool,
    /// Isolation from other berth networks. Off lets this network's containers reach, and be
    /// reached by, the containers of every other berth network (routed through the host);
    /// traffic between two networks is dropped only when both are isolated (published ports
    /// stay reachable either way).
    #[serde(rename = "isolateNetworks", default = "yes")]
    pub isolate_networks: bool,
    /// IPv6 duplicate address detection; off by default so an address is usable at once.
    #[serde(rename = "enabledad", default)]
    pub enable_dad: bool,
    /// The container interface's MAC (the `mac` capability and CNI_ARGS MAC override it).
    #[serde(default)]
    pub mac: Option<String>,
    /// The MAC to give the container interface, from all the sources above (ADD only).
    #[serde(skip)]
    pub container_mac: Option<MacAddr>,
}

fn auto() -> String {
    "auto".into()
}

fn yes() -> bool {
    true
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.into()
}

impl BridgeConf {
    pub fn parse(req: &Request) -> CniResult<BridgeConf> {
        let mut conf: BridgeConf = decode_plugin_conf(&req.stdin)?;
        if conf.is_default_gateway {
            // A default route through the bridge needs the gateway address on it.
            conf.is_gateway = true;
        }
        berth_cni::skel::validate_ifname(&conf.bridge)
            .map_err(|e| CniError::invalid_config(format!("bridge: {}", e.msg)).with_details(&conf.bridge))?;
        // Checked before anything is created, not when the firewall is first used.
        conf.firewall_backend = conf.firewall_backend_name.parse()?;
        if conf.firewall_backend != FirewallBackend::None {
            berth_firewall::check_bridge_name(&conf.bridge)?;
        }
        if let Some(mtu) = conf.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::invalid_config(format!("mtu: {mtu} is outside 68..=65535")));
            }
        }
        if conf.vlan.is_some_and(|v| v != 0) {
            return Err(CniError::invalid_config("vlan: VLAN filtering on the bridge is not supported by berth-bridge"));
        }
        if req.command == Command::Add {
            // Checked before anything is made. Precedence: CNI_ARGS MAC, runtimeConfig.mac,
            // args.cni.mac, `mac`.
            conf.container_mac = berth_cni::iface::requested_mac(req, conf.mac.as_deref())?;
        }
        Ok(conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::spec::{NetConf, Version};

    fn request(stdin: &str) -> Request {
        Request {
            command: Command::Add,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            args: Vec::new(),
            cni_path: Vec::new(),
            stdin: stdin.as_bytes().to_vec(),
            conf: NetConf::default(),
            version: Version(1, 1, 0),
            options: Default::default(),
        }
    }

    #[test]
    fn firewall_backend_is_checked_with_the_configuration() {
        let conf = |backend: &str| BridgeConf::parse(&request(&format!(r#"{{"name": "n", "type": "berth-bridge"{backend}}}"#)));
        assert_eq!(conf("").unwrap().firewall_backend, FirewallBackend::Auto);
        let iptables = conf(r#", "firewallBackend": "iptables-legacy""#).unwrap();
        assert_eq!(iptables.firewall_backend, FirewallBackend::IptablesLegacy);
        let err = conf(r#", "firewallBackend": "pf""#).unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("firewallBackend \"pf\""), "{err}");
    }
}
