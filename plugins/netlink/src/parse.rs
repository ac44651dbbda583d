//! Replies into the module's types. Headers are decoded by netlink-packet-route; attributes
//! one at a time, so that one the crate cannot decode (a newer kernel's, an exotic link
//! kind's) is skipped instead of losing the whole link, address or route.

use super::{Link, MacAddr, RouteEntry};
use ipnet::IpNet;
use netlink_packet_core::{parse_string, Nla, NlasIterator, Parseable, ParseableParametrized};
use netlink_packet_route::address::{AddressAttribute, AddressHeader};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader, LinkProtoInfoBridge};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteLwEnCapType, RouteMetric, RouteType,
};
use netlink_packet_route::AddressFamily;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const LINK_HEADER_LEN: usize = 16;
const ADDRESS_HEADER_LEN: usize = 8;
const ROUTE_HEADER_LEN: usize = 12;

const IFLA_PROTINFO: u16 = 12;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

/// The RTM_NEWLINK payload of one link.
pub(super) fn link(payload: &[u8]) -> Option<Link> {
    let header = LinkHeader::parse(payload).ok()?;
    let mut link = Link {
        index: header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        kind: None,
        master: None,
        up: header.flags.contains(LinkFlags::Up),
        carrier: header.flags.contains(LinkFlags::LowerUp),
        running: header.flags.contains(LinkFlags::Running),
        promisc: header.flags.contains(LinkFlags::Promisc),
        peer_index: None,
    };
    let mut iflink = None;
    for nla in NlasIterator::new(payload.get(LINK_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        if nla.kind() == IFLA_LINKINFO {
            // Only the kind is wanted: read it directly rather than through the crate's
            // per-kind IFLA_INFO_DATA decoders.
            link.kind = info_kind(nla.value());
            continue;
        }
        match LinkAttribute::parse_with_param(&nla, header.interface_family) {
            Ok(LinkAttribute::IfName(name)) => link.name = name,
            Ok(LinkAttribute::Address(bytes)) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
            }
            Ok(LinkAttribute::Mtu(mtu)) => link.mtu = mtu,
            Ok(LinkAttribute::Controller(master)) if master != 0 => link.master = Some(master),
            Ok(LinkAttribute::Link(index)) if index != 0 => iflink = Some(index),
            _ => {}
        }
    }
    if link.kind.as_deref() == Some("veth") {
        link.peer_index = iflink;
    }
    Some(link)
}

/// `IFLA_INFO_KIND` inside an `IFLA_LINKINFO` value.
fn info_kind(linkinfo: &[u8]) -> Option<String> {
    for nla in NlasIterator::new(linkinfo) {
        let nla = nla.ok()?;
        if nla.kind() == IFLA_INFO_KIND {
            return parse_string(nla.value()).ok().filter(|s| !s.is_empty());
        }
    }
    None
}

/// A one-byte IFLA_BRPORT_* flag (`attr`) from an AF_BRIDGE RTM_NEWLINK (a bridge port's
/// IFLA_PROTINFO), with the port's index.
pub(super) fn port_flag(payload: &[u8], attr_kind: u16) -> Option<(u32, bool)> {
    let header = LinkHeader::parse(payload).ok()?;
    for nla in NlasIterator::new(payload.get(LINK_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        if nla.kind() != IFLA_PROTINFO {
            continue;
        }
        if let Ok(LinkAttribute::ProtoInfoBridge(infos)) = LinkAttribute::parse_with_param(&nla, AddressFamily::Bridge)
        {
            for info in infos {
                if let LinkProtoInfoBridge::Other(attr) = info {
                    if attr.kind() == attr_kind {
                        let mut value = [0u8; 1];
                        if attr.value_len() == 1 {
                            attr.emit_value(&mut value);
                            return Some((header.index, value[0] != 0));
                        }
                    }
                }
            }
        }
    }
    None
}

/// The RTM_NEWADDR payload of one address: (link index, address/prefix).
pub(super) fn address(payload: &[u8]) -> Option<(u32, IpNet)> {
    let header = AddressHeader::parse(payload).ok()?;
    let (mut local, mut address) = (None, None);
    for nla in NlasIterator::new(payload.get(ADDRESS_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        match AddressAttribute::parse(&nla) {
            Ok(AddressAttribute::Local(ip)) => local = Some(ip),
            Ok(AddressAttribute::Address(ip)) => address = Some(ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on point-to-point
    // links); IPv6 sends IFA_ADDRESS alone.
    let ip = local.or(address)?;
    Some((header.index, IpNet::new(ip, header.prefix_len).ok()?))
}

/// One route of a dump, with what `routes()` filters on.
pub(super) struct DumpedRoute {
    pub entry: RouteEntry,
    pub table: u32,
    pub kind: RouteType,
}

/// The RTM_NEWROUTE payload of one IPv4 or IPv6 route (others give `None`).
pub(super) fn route(payload: &[u8]) -> Option<DumpedRoute> {
    let header = RouteHeader::parse(payload).ok()?;
    let family = header.address_family;
    let unspecified: IpAddr = match family {
        AddressFamily::Inet => Ipv4Addr::UNSPECIFIED.into(),
        AddressFamily::Inet6 => Ipv6Addr::UNSPECIFIED.into(),
        _ => return None,
    };
    let mut dst = unspecified;
    let mut entry = RouteEntry {
        dst: IpNet::new(unspecified, 0).ok()?,
        gateway: None,
        oif: None,
        table: None,
        priority: None,
        mtu: None,
        scope: Some(header.scope.into()),
    };
    let mut table = u32::from(header.table);
    for nla in NlasIterator::new(payload.get(ROUTE_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        let parsed = RouteAttribute::parse_with_param(&nla, (family, header.kind, RouteLwEnCapType::None));
        match parsed {
            Ok(RouteAttribute::Destination(addr)) => dst = route_ip(addr)?,
            Ok(RouteAttribute::Gateway(addr)) => entry.gateway = route_ip(addr),
            Ok(RouteAttribute::Oif(oif)) => entry.oif = Some(oif),
            Ok(RouteAttribute::Priority(p)) => entry.priority = Some(p),
            Ok(RouteAttribute::Table(t)) => table = t,
            Ok(RouteAttribute::Metrics(metrics)) => {
                for metric in metrics {
                    if let RouteMetric::Mtu(mtu) = metric {
                        entry.mtu = Some(mtu);
                    }
                }
            }
            _ => {}
        }
    }
    entry.dst = IpNet::new(dst, header.destination_prefix_length).ok()?;
    entry.table = Some(table);
    Some(DumpedRoute { entry, table, kind: header.kind })
}

fn route_ip(addr: RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(ip) => Some(ip.into()),
        RouteAddress::Inet6(ip) => Some(ip.into()),
        _ => None,
    }
}
