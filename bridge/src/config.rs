//! berth-bridge's configuration: the reference bridge plugin's keys, same names and defaults.

use berth_cni::skel::{Command, Request};
use berth_cni::spec::decode_plugin_conf;
use berth_cni::{CniError, CniResult};
use berth_firewall::FirewallBackend;
use berth_netlink::MacAddr;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

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
    /// With `ipMasq`: prefixes whose traffic keeps the container's own address (other hosts'
    /// container subnets, routed to without NAT), as written; [`BridgeConf::no_masquerade`]
    /// is what they say.
    #[serde(rename = "noMasqueradeDestinations", default)]
    no_masquerade_destinations: Vec<String>,
    /// The prefixes of `noMasqueradeDestinations`, checked by `parse`.
    #[serde(skip)]
    pub no_masquerade: Vec<IpNet>,
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
    /// A VXLAN port on the bridge joining it to the same VNI on other hosts.
    #[serde(default)]
    pub vxlan: Option<VxlanConf>,
}

/// `"vxlan": {"vni": 42, "remotes": ["192.0.2.2"], "port": 4789, "dev": "eth0"}`, or a
/// multicast `group` instead of `remotes`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct VxlanConf {
    pub vni: u32,
    /// The other hosts' underlay addresses: broadcasts and unknown destinations go to each.
    #[serde(default)]
    pub remotes: Vec<IpAddr>,
    /// A multicast group the VTEPs of this VNI join, instead of `remotes`.
    #[serde(default)]
    pub group: Option<IpAddr>,
    #[serde(default = "vxlan_port")]
    pub port: u16,
    /// The underlay interface; its MTU sizes the overlay's. Without it, 1500 is assumed.
    #[serde(default)]
    pub dev: Option<String>,
}

/// VXLAN's encapsulation: the inner Ethernet header, VXLAN, UDP and the outer IP header.
const VXLAN_OVERHEAD_V4: u32 = 14 + 8 + 8 + 20;
const VXLAN_OVERHEAD_V6: u32 = 14 + 8 + 8 + 40;
/// The underlay MTU assumed when `dev` is not given.
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

fn vxlan_port() -> u16 {
    berth_netlink::VXLAN_PORT
}

impl VxlanConf {
    /// The VXLAN device's name: one per VNI on a host (the kernel refuses a second device
    /// with the same VNI and port anyway).
    pub fn device_name(&self) -> String {
        format!("berthvx{}", self.vni)
    }

    /// What encapsulation adds to every frame: more over an IPv6 underlay.
    pub fn overhead(&self) -> u32 {
        let v6 = self.group.map_or_else(|| self.remotes.iter().any(IpAddr::is_ipv6), |g| g.is_ipv6());
        if v6 { VXLAN_OVERHEAD_V6 } else { VXLAN_OVERHEAD_V4 }
    }

    /// The overlay MTU over an underlay of `underlay_mtu` (or 1500).
    pub fn mtu(&self, underlay_mtu: Option<u32>) -> u32 {
        underlay_mtu.unwrap_or(DEFAULT_UNDERLAY_MTU).saturating_sub(self.overhead())
    }

    /// Every value in range; `remotes` or `group`, not both.
    pub fn check(&self) -> CniResult<()> {
        let bad = |msg: String| Err(CniError::invalid_config(format!("vxlan: {msg}")));
        if !(1..1 << 24).contains(&self.vni) {
            return bad(format!("vni {} is outside 1..=16777215", self.vni));
        }
        match (&self.group, self.remotes.is_empty()) {
            (None, true) => return bad("needs remotes (the other hosts' addresses) or a multicast group".into()),
            (Some(_), false) => return bad("remotes and group exclude each other".into()),
            (Some(g), true) if !g.is_multicast() => return bad(format!("group {g} is not a multicast address")),
            _ => {}
        }
        if let Some(r) = self.remotes.iter().find(|r| r.is_multicast() || r.is_unspecified()) {
            return bad(format!("remote {r} is not a unicast address"));
        }
        if self.port == 0 {
            return bad("port 0".into());
        }
        if let Some(dev) = &self.dev {
            berth_cni::skel::validate_ifname(dev).map_err(|e| CniError::invalid_config(format!("vxlan: dev: {}", e.msg)))?;
        }
        Ok(())
    }
}

/// Prefixes (`10.62.0.0/24`, `fd02::/64`; a bare address is one host), truncated to their
/// network.
fn parse_prefixes(field: &str, values: &[String]) -> CniResult<Vec<IpNet>> {
    let parse = |v: &String| {
        let net = v.parse::<IpNet>().or_else(|_| v.parse::<IpAddr>().map(IpNet::from));
        net.map(|n| n.trunc())
            .map_err(|_| CniError::invalid_config(format!("{field}: {v:?} is not an IP prefix (such as 10.62.0.0/24)")))
    };
    values.iter().map(parse).collect()
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
        conf.no_masquerade = parse_prefixes("noMasqueradeDestinations", &conf.no_masquerade_destinations)?;
        if conf.firewall_backend != FirewallBackend::None {
            berth_firewall::check_bridge_name(&conf.bridge)?;
        }
        if let Some(mtu) = conf.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::invalid_config(format!("mtu: {mtu} is outside 68..=65535")));
            }
        }
        if let Some(vxlan) = &conf.vxlan {
            vxlan.check()?;
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

    #[test]
    fn no_masquerade_destinations_are_prefixes() {
        let conf = |v: &str| {
            BridgeConf::parse(&request(&format!(r#"{{"name": "n", "type": "berth-bridge", "noMasqueradeDestinations": {v}}}"#)))
        };
        let ok = conf(r#"["10.62.0.9/24", "fd02::/64", "192.0.2.7"]"#).unwrap().no_masquerade;
        let want: Vec<IpNet> = ["10.62.0.0/24", "fd02::/64", "192.0.2.7/32"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(ok, want);
        let err = conf(r#"["10.62.0.0/33"]"#).unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.starts_with("noMasqueradeDestinations: \"10.62.0.0/33\""), "{err}");
    }

    #[test]
    fn vxlan_is_checked_and_sizes_the_mtu() {
        let conf = |vxlan: &str| BridgeConf::parse(&request(&format!(r#"{{"name": "n", "type": "berth-bridge", "vxlan": {vxlan}}}"#)));
        let ok = conf(r#"{"vni": 42, "remotes": ["192.0.2.2"]}"#).unwrap().vxlan.unwrap();
        assert_eq!((ok.port, ok.device_name(), ok.mtu(None), ok.mtu(Some(9000))), (4789, "berthvx42".into(), 1450, 8950));
        let v6 = conf(r#"{"vni": 7, "remotes": ["fd00::2"], "port": 8472}"#).unwrap().vxlan.unwrap();
        assert_eq!((v6.port, v6.mtu(None)), (8472, 1430));
        for (bad, says) in [
            (r#"{"vni": 0, "remotes": ["192.0.2.2"]}"#, "vni 0"),
            (r#"{"vni": 16777216, "remotes": ["192.0.2.2"]}"#, "vni 16777216"),
            (r#"{"vni": 1}"#, "needs remotes"),
            (r#"{"vni": 1, "group": "192.0.2.9"}"#, "not a multicast"),
            (r#"{"vni": 1, "group": "239.1.1.1", "remotes": ["192.0.2.2"]}"#, "exclude"),
            (r#"{"vni": 1, "remotes": ["192.0.2.2"], "dev": "a/b"}"#, "dev"),
        ] {
            let err = conf(bad).unwrap_err();
            assert_eq!(err.code, 7, "{bad}");
            assert!(err.msg.contains(says), "{bad}: {err}");
        }
    }
}
