//! The `tunnels` option: GRE and VXLAN ports on the network's Open vSwitch bridge, joining it to
//! the bridges of other hosts, as the seeds' `ovs-vsctl add-port ovs0 gre0 -- set interface
//! gre0 type=gre options:remote_ip=...` makes them, written through OVSDB.
//!
//! A network's tunnels are made by its first ADD and shared by its containers; every ADD brings
//! them in line with the configuration (one that differs is replaced; one of this network no
//! longer configured, say to a peer's old address, goes). The DEL that leaves the network no
//! container port takes them with it, and `berth net rm` ([`remove_tunnels`]) removes them
//! whatever is still attached.
//!
//! A tunnel port carries the network's VLAN settings (`vlan` or `trunk`), so that two networks
//! sharing a bridge, each on its own VLAN, keep their tunnels' traffic apart, and the
//! `external_ids` `owner=berth-ovs`, `network=NAME` and `tunnel=TYPE` by which berth-ovs tells
//! its tunnels, and whose they are, from other ports. Its name is `name`, or the type and a
//! hash of type, remote and key (`gre-1a2b3c4d`).

use crate::config::OvsConf;
use crate::error::doing;
use crate::ovsdb::OvsdbError;
use crate::vswitch::{InterfaceRow, NewPort, PortRow, Vswitch, APPLY_TIMEOUT, OWNER};
use berth_cni::rollback::Rollback;
use berth_cni::{CniError, CniResult, Code};
use berth_util::hash::fnv1a32;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The underlay MTU the container MTU is derived from.
pub const UNDERLAY_MTU: u32 = 1500;
/// The inner Ethernet header every tunnel of a bridge carries.
const INNER_ETHERNET: u32 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    Gre,
    Vxlan,
}

impl TunnelKind {
    /// The Interface `type`.
    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Gre => "gre",
            TunnelKind::Vxlan => "vxlan",
        }
    }

    /// The largest `key`: GRE's is 32 bits, a VXLAN network identifier 24.
    pub fn max_key(self) -> u64 {
        match self {
            TunnelKind::Gre => u64::from(u32::MAX),
            TunnelKind::Vxlan => (1 << 24) - 1,
        }
    }
}

/// One tunnel port, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: TunnelKind,
    pub remote_ip: IpAddr,
    /// GRE's key, VXLAN's network identifier; none: GRE without a key, VXLAN 0.
    pub key: Option<u32>,
    pub name: String,
}

impl Tunnel {
    /// A tunnel named `name`, or after its type and a hash of type, remote and key.
    pub fn new(kind: TunnelKind, remote_ip: IpAddr, key: Option<u32>, name: Option<String>) -> Tunnel {
        let name = name.unwrap_or_else(|| {
            let (remote, key_text) = (remote_ip.to_string(), key.map(|k| k.to_string()).unwrap_or_default());
            let hash = fnv1a32([kind.name().as_bytes(), b"\0", remote.as_bytes(), b"\0", key_text.as_bytes()]);
            format!("{}-{hash:08x}", kind.name())
        });
        Tunnel { kind, remote_ip, key, name }
    }

    /// What encapsulation adds to a frame: the outer IP header, GRE (4 bytes, 8 with a key) or
    /// UDP and VXLAN (16), and the inner Ethernet header.
    pub fn overhead(&self) -> u32 {
        let outer_ip = if self.remote_ip.is_ipv4() { 20 } else { 40 };
        let tunnel = match self.kind {
            TunnelKind::Gre if self.key.is_some() => 8,
            TunnelKind::Gre => 4,
            TunnelKind::Vxlan => 16,
        };
        outer_ip + tunnel + INNER_ETHERNET
    }

    /// The Interface's `options`.
    pub fn options(&self) -> BTreeMap<String, String> {
        let mut options = BTreeMap::from([("remote_ip".to_string(), self.remote_ip.to_string())]);
        if let Some(key) = self.key {
            options.insert("key".into(), key.to_string());
        }
        options
    }

    /// `gre to 192.0.2.2, key 5`, for messages.
    fn describe(&self) -> String {
        let key = self.key.map(|k| format!(", key {k}")).unwrap_or_default();
        format!("{} to {}{key}", self.kind.name(), self.remote_ip)
    }

    fn is_configured_as(&self, iface: &InterfaceRow) -> bool {
        iface.iface_type == self.kind.name() && iface.options == self.options()
    }
}

fn is_tunnel(port: &PortRow) -> bool {
    port.owned_by_berth() && port.external_ids.contains_key("tunnel")
}

/// ADD: the network's tunnels as configured. Missing ones are added (and removed again
/// through `undo` if the ADD fails later); one configured otherwise is replaced; this
/// network's tunnels no longer configured go. The caller's wait for ovs-vswitchd (for the
/// container's port, a later change) covers these changes too.
pub(crate) fn ensure<'a>(ovs: &mut Vswitch, conf: &'a OvsConf, undo: &mut Rollback<'a>) -> CniResult<()> {
    let socket = conf.ovsdb_socket.as_str();
    for t in &conf.tunnels {
        let what = || format!("add tunnel {} ({}) to Open vSwitch bridge {}", t.name, t.describe(), conf.bridge);
        if let Some(port) = ovs.port(&t.name).map_err(doing(what(), socket))? {
            check_owner(&port, conf, t)?;
            let iface = ovs.interface(&t.name).map_err(doing(what(), socket))?;
            if iface.is_some_and(|i| t.is_configured_as(&i)) {
                continue;
            }
            ovs.del_port(&port.uuid).map_err(doing(what(), socket))?;
        }
        add(ovs, conf, t).map_err(doing(what(), socket))?;
        undo.push("removing the tunnel", move || {
            let mut ovs = crate::connect(conf)?;
            crate::remove_port(&mut ovs, &t.name, false).map_err(doing(format!("remove tunnel {}", t.name), socket))?;
            Ok(())
        });
    }
    let what = || format!("remove the unconfigured tunnels of network {}", conf.network);
    let mine = ovs.ports_with(&[("owner", OWNER), ("network", &conf.network)]).map_err(doing(what(), socket))?;
    for stale in mine.iter().filter(|p| is_tunnel(p) && !conf.tunnels.iter().any(|t| t.name == p.name)) {
        ovs.del_port(&stale.uuid).map_err(doing(what(), socket))?;
    }
    Ok(())
}

/// A port of the tunnel's name is this network's tunnel, or the name is taken.
fn check_owner(port: &PortRow, conf: &OvsConf, t: &Tunnel) -> CniResult<()> {
    let network = port.external_ids.get("network").map(String::as_str);
    if is_tunnel(port) && network == Some(conf.network.as_str()) {
        return Ok(());
    }
    let holder = match network {
        Some(other) if port.owned_by_berth() => format!("is a port of berth network {other}"),
        _ => "is a port berth-ovs did not make".to_string(),
    };
    Err(CniError::new(Code::Kernel, format!("tunnel {} ({}): Open vSwitch port {} {holder}", t.name, t.describe(), t.name)))
}

fn add(ovs: &mut Vswitch, conf: &OvsConf, t: &Tunnel) -> Result<i64, OvsdbError> {
    let options = t.options();
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ids = [("owner", OWNER), ("network", conf.network.as_str()), ("tunnel", t.kind.name())];
    let port = NewPort {
        bridge: &conf.bridge,
        name: &t.name,
        iface_type: t.kind.name(),
        options: &options,
        vlans: &conf.vlans,
        external_ids: &ids,
    };
    ovs.add_port(&port)
}

/// DEL, once the container's port is gone: the network's tunnels go with its last container
/// port. Waits for ovs-vswitchd when it removed any.
pub(crate) fn remove_if_unused(ovs: &mut Vswitch, conf: &OvsConf) -> Result<(), OvsdbError> {
    let mine = ovs.ports_with(&[("owner", OWNER), ("network", &conf.network)])?;
    if mine.iter().any(|p| !is_tunnel(p)) {
        return Ok(());
    }
    remove(ovs, mine.iter().filter(|p| is_tunnel(p))).map(drop)
}

/// Removes `ports` in one configuration change each; waits for ovs-vswitchd to apply the
/// last. Returns how many there were.
fn remove<'a>(ovs: &mut Vswitch, ports: impl Iterator<Item = &'a PortRow>) -> Result<usize, OvsdbError> {
    let mut last = None;
    let mut removed = 0;
    for port in ports {
        last = Some(ovs.del_port(&port.uuid)?);
        removed += 1;
    }
    if let Some(cfg) = last {
        ovs.wait_applied(cfg, APPLY_TIMEOUT, None)?;
    }
    Ok(removed)
}

/// `berth net rm`: the tunnels of `network`, whatever is still attached, through the
/// ovsdb-server at `socket`. Returns how many there were.
pub fn remove_tunnels(socket: &str, network: &str) -> CniResult<usize> {
    let what = || format!("remove the tunnels of network {network}");
    let mut ovs = Vswitch::connect(socket).map_err(doing(what(), socket))?;
    let mine = ovs.ports_with(&[("owner", OWNER), ("network", network)]).map_err(doing(what(), socket))?;
    Ok(remove(&mut ovs, mine.iter().filter(|p| is_tunnel(p))).map_err(doing(what(), socket))?)
}

/// CHECK, and ADD once ovs-vswitchd has applied it: each tunnel is on the bridge with its
/// type, options and VLANs, and in the datapath (a missing kernel module shows here).
pub(crate) fn check(ovs: &mut Vswitch, conf: &OvsConf) -> CniResult<()> {
    if conf.tunnels.is_empty() {
        return Ok(());
    }
    let socket = conf.ovsdb_socket.as_str();
    let mismatch =
        |t: &Tunnel, what: String| CniError::new(Code::Kernel, format!("tunnel {} ({}): {what}", t.name, t.describe()));
    let bridge = ovs.bridge_ports(&conf.bridge).map_err(doing(format!("look up bridge {}", conf.bridge), socket))?;
    for t in &conf.tunnels {
        let look = || format!("look up tunnel {}", t.name);
        let port = ovs
            .port(&t.name)
            .map_err(doing(look(), socket))?
            .ok_or_else(|| mismatch(t, "Open vSwitch has no such port".into()))?;
        if !bridge.as_ref().is_some_and(|ports| ports.contains(&port.uuid)) {
            return Err(mismatch(t, format!("not a port of Open vSwitch bridge {}", conf.bridge)));
        }
        if port.vlans() != conf.vlans {
            return Err(mismatch(
                t,
                format!(
                    "tag {:?}, trunks {:?}; the network's are {:?}, {:?}",
                    port.tag, port.trunks, conf.vlans.tag, conf.vlans.trunks
                ),
            ));
        }
        let iface =
            ovs.interface(&t.name).map_err(doing(look(), socket))?.ok_or_else(|| mismatch(t, "no such interface".into()))?;
        if !t.is_configured_as(&iface) {
            return Err(mismatch(t, format!("the interface is type {:?} with options {:?}", iface.iface_type, iface.options)));
        }
        match (iface.state.error, iface.state.ofport) {
            (None, Some(ofport)) if ofport > 0 => {}
            (error, ofport) => {
                let why = error.unwrap_or_else(|| format!("ofport {ofport:?}"));
                return Err(mismatch(t, format!("ovs-vswitchd could not set it up: {why}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overheads_and_names() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let gre = Tunnel::new(TunnelKind::Gre, ip("192.0.2.2"), Some(5), None);
        assert_eq!((gre.overhead(), Tunnel { key: None, ..gre.clone() }.overhead()), (42, 38));
        let vxlan = Tunnel::new(TunnelKind::Vxlan, ip("fd00::2"), Some(42), None);
        assert_eq!(vxlan.overhead(), 70);
        assert_ne!(gre.name, Tunnel::new(TunnelKind::Gre, ip("192.0.2.2"), Some(6), None).name, "the key is in the name");
        assert_eq!(gre.name, Tunnel::new(TunnelKind::Gre, ip("192.0.2.2"), Some(5), None).name, "and nothing else");
        let options: Vec<(String, String)> = gre.options().into_iter().collect();
        assert_eq!(options, [("key".into(), "5".into()), ("remote_ip".into(), "192.0.2.2".into())]);
        assert_eq!(gre.describe(), "gre to 192.0.2.2, key 5");
    }
}
