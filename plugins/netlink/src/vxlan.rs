//! VXLAN links and their flood list: the bridge forwarding entries (FDB) with the all-zeros
//! MAC that send broadcast, unknown-unicast and multicast frames to each remote VTEP, as
//! `bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst 192.0.2.2` makes them.

use super::{Link, MacAddr, Netlink, NetlinkError, Result};
use netlink_packet_core::{NlasIterator, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rtm};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IANA port for VXLAN (the kernel's default is Linux's historical 8472).
pub const VXLAN_PORT: u16 = 4789;

/// A new VXLAN link.
#[derive(Debug, Clone)]
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    /// The VXLAN network identifier, 1 to 2^24 - 1.
    pub vni: u32,
    /// The UDP destination port.
    pub port: u16,
    /// A multicast group to flood to (instead of, or besides, FDB entries).
    pub group: Option<IpAddr>,
    /// The underlay link (IFLA_VXLAN_LINK): the kernel sizes the MTU from it and sends and
    /// joins the group through it.
    pub dev: Option<u32>,
    pub mtu: Option<u32>,
}

/// The zero MAC: an FDB entry for it floods to its destination.
pub const FLOOD_MAC: MacAddr = MacAddr([0; 6]);
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NEIGHBOUR_HEADER_LEN: usize = 12;
pub(super) const RTM_NEWNEIGH: u16 = 28;

impl Netlink {
    /// Creates a VXLAN link, left down, and returns it.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> Result<Link> {
        let mut data = vec![InfoVxlan::Id(spec.vni), InfoVxlan::Port(spec.port)];
        match spec.group {
            Some(IpAddr::V4(g)) => data.push(InfoVxlan::Group(g)),
            Some(IpAddr::V6(g)) => data.push(InfoVxlan::Group6(g)),
            None => {}
        }
        if let Some(dev) = spec.dev {
            data.push(InfoVxlan::Link(dev));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(spec.name.to_string()));
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Vxlan), LinkInfo::Data(InfoData::Vxlan(data))]));
        let what = || format!("create VXLAN {} (VNI {}, port {})", spec.name, spec.vni, spec.port);
        self.ack(Rtm::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL).map_err(|e| NetlinkError::kernel(what(), e))?;
        self.link_by_name(spec.name)?.ok_or_else(|| NetlinkError::kernel(what(), "the new link is gone"))
    }

    /// Adds `remote` to the flood list of the VXLAN link `index`; one already there is kept.
    pub fn fdb_append_flood(&mut self, index: u32, remote: IpAddr) -> Result<()> {
        self.ack(Rtm::NewNeighbour(fdb_entry(index, FLOOD_MAC, remote)), NLM_F_CREATE | NLM_F_APPEND)
            .map_err(|e| self.fail(e, |me| format!("add flood entry to {remote} on {}", me.describe(index))))
    }

    /// Removes the entry for `mac` to `remote` from the VXLAN link `index` (the all-zeros MAC
    /// is a flood entry); `Ok(false)` when it was not there.
    pub fn fdb_del(&mut self, index: u32, mac: MacAddr, remote: IpAddr) -> Result<bool> {
        match self.ack(Rtm::DelNeighbour(fdb_entry(index, mac, remote)), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(self.fail(e, |me| format!("delete forwarding entry {mac} dst {remote} on {}", me.describe(index)))),
        }
    }

    /// The forwarding entries of the VXLAN link `index` that have a remote: (MAC, remote),
    /// the all-zeros MAC for the flood list, others learned or added.
    pub fn fdb_entries(&mut self, index: u32) -> Result<Vec<(MacAddr, IpAddr)>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        let mut out = Vec::new();
        self.dump(Rtm::GetNeighbour(msg), |kind, payload| {
            if kind == RTM_NEWNEIGH {
                out.extend(remote_entry(payload, index));
            }
        })
        .map_err(|e| self.fail(e, |me| format!("list the forwarding entries of {}", me.describe(index))))?;
        Ok(out)
    }

    /// The flood list of the VXLAN link `index`: the remotes of its all-zeros entries.
    pub fn fdb_flood_remotes(&mut self, index: u32) -> Result<Vec<IpAddr>> {
        Ok(self.fdb_entries(index)?.into_iter().filter(|(mac, _)| *mac == FLOOD_MAC).map(|(_, ip)| ip).collect())
    }
}

/// `MAC dst REMOTE self permanent` on the link `index`.
fn fdb_entry(index: u32, mac: MacAddr, remote: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header = NeighbourHeader {
        family: AddressFamily::Bridge,
        ifindex: index,
        state: NeighbourState::Permanent,
        // NTF_SELF: the entry is the VXLAN device's own, not its bridge's.
        flags: NeighbourFlags::Own,
        kind: RouteType::Unspec,
    };
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    msg.attributes.push(NeighbourAttribute::Destination(match remote {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }));
    msg
}

/// An FDB entry of link `index` with a remote, from an RTM_NEWNEIGH payload.
pub(super) fn remote_entry(payload: &[u8], index: u32) -> Option<(MacAddr, IpAddr)> {
    let header = NeighbourHeader::parse(payload).ok()?;
    if header.ifindex != index {
        return None;
    }
    let (mut mac, mut dst) = (None, None);
    for nla in NlasIterator::new(payload.get(NEIGHBOUR_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        match nla.kind() {
            NDA_LLADDR => mac = <[u8; 6]>::try_from(nla.value()).ok().map(MacAddr),
            NDA_DST => dst = ip(nla.value()),
            _ => {}
        }
    }
    Some((mac?, dst?))
}

fn ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}
