//! Stacked links: macvlan and 802.1q VLAN sub-interfaces on a parent ("lower") link, and
//! what the kernel reports about them beyond [`Link`]: the parent (maybe in another
//! namespace), the macvlan mode, the VLAN id, the alias.

use super::{parse, Link, MacAddr, Netlink, NetlinkError, Result, RTM_NEWLINK};
use berth_netns::NetNs;
use netlink_packet_core::{parse_string, NlasIterator, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVlan, LinkAttribute, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage as Rtm;
use std::os::fd::{AsFd, AsRawFd};

/// How macvlan links on one parent reach each other (IFLA_MACVLAN_MODE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    /// Only to and from the parent's wire, never to each other.
    Private,
    /// Through the external switch (which must hairpin).
    Vepa,
    /// Directly to each other inside the kernel.
    Bridge,
    /// The only macvlan of its parent, taking over the parent's MAC.
    Passthru,
}

impl MacvlanMode {
    /// The name the reference plugin's `mode` option uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthru => "passthru",
        }
    }

    fn to_kernel(self) -> MacVlanMode {
        match self {
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
        }
    }

    fn from_kernel(value: u32) -> Option<MacvlanMode> {
        match MacVlanMode::from(value) {
            MacVlanMode::Private => Some(MacvlanMode::Private),
            MacVlanMode::Vepa => Some(MacvlanMode::Vepa),
            MacVlanMode::Bridge => Some(MacvlanMode::Bridge),
            MacVlanMode::Passthrough => Some(MacvlanMode::Passthru),
            _ => None,
        }
    }
}

impl std::fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MacvlanMode {
    type Err = NetlinkError;
    fn from_str(s: &str) -> Result<MacvlanMode> {
        Ok(match s {
            "bridge" => MacvlanMode::Bridge,
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "passthru" => MacvlanMode::Passthru,
            _ => {
                return Err(NetlinkError::Invalid(format!(
                    "unknown macvlan mode {s:?} (bridge, private, vepa or passthru)"
                )))
            }
        })
    }
}

/// A new macvlan link on `parent` (an index in the socket's namespace).
#[derive(Debug, Clone)]
pub struct MacvlanSpec<'a> {
    pub name: &'a str,
    pub parent: u32,
    pub mode: MacvlanMode,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    /// Create the link directly in this namespace (the parent stays where it is).
    pub netns: Option<&'a NetNs>,
}

/// A link with what stacked links add to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDetail {
    pub link: Link,
    /// IFLA_LINK: the parent's index, for macvlan, vlan, veth ... links.
    pub parent: Option<u32>,
    /// IFLA_LINK_NETNSID: present when the parent lives in another namespace; it is this
    /// namespace's id for that one (see [`Netlink::nsid_of`]).
    pub parent_netnsid: Option<i32>,
    /// IFLA_IFALIAS.
    pub alias: Option<String>,
    pub macvlan_mode: Option<MacvlanMode>,
    pub vlan_id: Option<u16>,
}

impl Netlink {
    /// Creates a macvlan link in one request (directly in `spec.netns` when given); the link
    /// is left down.
    pub fn create_macvlan(&mut self, spec: &MacvlanSpec) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(spec.name.to_string()));
        msg.attributes.push(LinkAttribute::Link(spec.parent));
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.mac {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(ns) = spec.netns {
            // The fd only has to stay open until the kernel has answered, which `ns` outlives.
            msg.attributes.push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(spec.mode.to_kernel())])),
        ]));
        self.ack(Rtm::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL).map_err(|e| {
            self.fail(e, |me| format!("create macvlan {} (mode {}) on {}", spec.name, spec.mode, me.describe(spec.parent)))
        })
    }

    /// Creates the 802.1q sub-interface `name` for VLAN `vid` on `parent`, left down.
    pub fn create_vlan(&mut self, name: &str, parent: u32, vid: u16) -> Result<Link> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(vid)])),
        ]));
        self.ack(Rtm::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| self.fail(e, |me| format!("create VLAN {vid} sub-interface {name} on {}", me.describe(parent))))?;
        self.link_by_name(name)?
            .ok_or_else(|| NetlinkError::kernel(format!("create VLAN sub-interface {name}"), "the new link is gone"))
    }

    /// Sets IFLA_IFALIAS (`ip link set X alias ...`), a free-form label on the link.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::IfAlias(alias.to_string())))
            .map_err(|e| self.fail(e, |me| format!("set alias {alias:?} on {}", me.describe(index))))
    }

    /// One link with its stacking details; `Ok(None)` when there is no such link.
    pub fn link_detail(&mut self, index: u32) -> Result<Option<LinkDetail>> {
        if index == 0 {
            return Ok(None);
        }
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let mut found = None;
        let res = self.query(Rtm::GetLink(msg), |kind, payload| {
            if kind == RTM_NEWLINK && found.is_none() {
                found = link_detail(payload);
            }
        });
        match res {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetlinkError::kernel(format!("look up link index {index}"), e)),
        }
    }

    /// Every link of this namespace with its stacking details.
    pub fn links_detailed(&mut self) -> Result<Vec<LinkDetail>> {
        let mut links = Vec::new();
        self.dump(Rtm::GetLink(LinkMessage::default()), |kind, payload| {
            if kind == RTM_NEWLINK {
                links.extend(link_detail(payload));
            }
        })
        .map_err(|e| NetlinkError::kernel("list links", e))?;
        Ok(links)
    }

    /// This namespace's id for `ns` (RTM_GETNSID), as IFLA_LINK_NETNSID reports it;
    /// `None` when none is assigned.
    pub fn nsid_of(&mut self, ns: &NetNs) -> Result<Option<i32>> {
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(ns.as_fd().as_raw_fd() as u32));
        let mut id = None;
        self.query(Rtm::GetNsId(msg), |kind, payload| {
            if kind == RTM_NEWNSID {
                id = nsid(payload);
            }
        })
        .map_err(|e| NetlinkError::kernel(format!("look up the id of network namespace {}", ns.path().display()), e))?;
        Ok(id.filter(|&i| i >= 0))
    }
}

pub(super) const RTM_NEWNSID: u16 = 88;
const NSID_HEADER_LEN: usize = 4;
const NETNSA_NSID: u16 = 1;
const LINK_HEADER_LEN: usize = 16;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_MACVLAN_MODE: u16 = 1;
const IFLA_VLAN_ID: u16 = 1;

/// The RTM_NEWLINK payload of one link, with the attributes `parse::link` leaves out.
pub(super) fn link_detail(payload: &[u8]) -> Option<LinkDetail> {
    let link = parse::link(payload)?;
    let mut detail =
        LinkDetail { link, parent: None, parent_netnsid: None, alias: None, macvlan_mode: None, vlan_id: None };
    for nla in NlasIterator::new(payload.get(LINK_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        let value = nla.value();
        match nla.kind() {
            IFLA_LINK => detail.parent = read_u32(value).filter(|&i| i != 0),
            IFLA_LINK_NETNSID => detail.parent_netnsid = read_u32(value).map(|v| v as i32),
            IFLA_IFALIAS => detail.alias = parse_string(value).ok().filter(|s| !s.is_empty()),
            IFLA_LINKINFO => read_info_data(value, &mut detail),
            _ => {}
        }
    }
    Some(detail)
}

/// The macvlan mode or VLAN id inside IFLA_LINKINFO / IFLA_INFO_DATA.
fn read_info_data(linkinfo: &[u8], detail: &mut LinkDetail) {
    let mut kind = None;
    let mut data = None;
    for nla in NlasIterator::new(linkinfo) {
        let Ok(nla) = nla else { return };
        match nla.kind() {
            IFLA_INFO_KIND => kind = parse_string(nla.value()).ok(),
            IFLA_INFO_DATA => data = Some(nla.value().to_vec()),
            _ => {}
        }
    }
    let (Some(kind), Some(data)) = (kind, data) else { return };
    for nla in NlasIterator::new(data.as_slice()) {
        let Ok(nla) = nla else { return };
        match (kind.as_str(), nla.kind()) {
            ("macvlan" | "macvtap", IFLA_MACVLAN_MODE) => {
                detail.macvlan_mode = read_u32(nla.value()).and_then(MacvlanMode::from_kernel);
            }
            ("vlan", IFLA_VLAN_ID) => {
                detail.vlan_id = nla.value().get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
            }
            _ => {}
        }
    }
}

/// NETNSA_NSID of an RTM_NEWNSID payload.
pub(super) fn nsid(payload: &[u8]) -> Option<i32> {
    for nla in NlasIterator::new(payload.get(NSID_HEADER_LEN..)?) {
        let nla = nla.ok()?;
        if nla.kind() == NETNSA_NSID {
            return read_u32(nla.value()).map(|v| v as i32);
        }
    }
    None
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_the_reference_plugin_writes_them() {
        for name in ["bridge", "private", "vepa", "passthru"] {
            let mode: MacvlanMode = name.parse().unwrap();
            assert_eq!(mode.as_str(), name);
            assert_eq!(MacvlanMode::from_kernel(u32::from(mode.to_kernel())), Some(mode));
        }
        assert!(matches!("passthrough".parse::<MacvlanMode>().unwrap_err(), NetlinkError::Invalid(_)));
    }
}
