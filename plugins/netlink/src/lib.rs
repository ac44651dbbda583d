//! A small synchronous rtnetlink client over netlink-packet-route: one socket per namespace,
//! a request and its ACK per operation, no async runtime (a plugin runs once per container).
//!
//! A socket belongs to the namespace it was opened in, so `Netlink::open_in(ns)` configures
//! that namespace without the caller staying inside it.

#[doc(hidden)]
pub mod fuzzing;
mod links_extra;
mod parse;
mod rules;
pub mod socket;
mod tc;
#[cfg(test)]
mod tests;
mod vxlan;
mod wire;

pub use wire::NlError;

pub 
use berth_netns::NetNs;
use ipnet::IpNet;
use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkProtoInfoBridge,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rtm};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

pub use links_extra::{LinkDetail, MacvlanMode, MacvlanSpec};
pub use rules::RuleEntry;
pub use tc::{Qdisc, TokenBucket, TBF_HANDLE};
pub use vxlan::{VxlanSpec, FLOOD_MAC, VXLAN_PORT};

/// An rtnetlink operation that failed, or a value that names no kernel object.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused, or the socket failed: what was asked, and the kernel's answer.
    #[error("{op}")]
    Kernel { op: String, source: NlError },
    /// A value given to us (a MAC address, a macvlan mode) that is not well formed.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Netns(#[from] berth_netns::NetnsError),
}

impl NetlinkError {
    fn kernel(op: impl Into<String>, source: impl Into<NlError>) -> NetlinkError {
        NetlinkError::Kernel { op: op.into(), source: source.into() }
    }

    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.errno(),
            _ => None,
        }
    }
}

pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// Creates a namespace bound at `/var/run/netns/NAME`, as `ip netns add` does, with `lo` up.
pub fn create_named_netns(name: &str) -> Result<NetNs> {
    let ns = NetNs::create_named(name)?;
    Netlink::open_in(&ns)?.set_up_by_name("lo")?;
    Ok(ns)
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// `IFLA_INFO_KIND`: "bridge", "veth", "macvlan", ... `None` for plain devices (lo).
    pub kind: Option<String>,
    /// Index of the bridge (or other master) this link is enslaved to.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// The link has carrier (IFF_LOWER_UP): a veth whose peer is up, a NIC with a cable.
    pub carrier: bool,
    /// Operational (IFF_RUNNING): the kernel has acted on the carrier, given the link its
    /// queue and told the bridge it is a port. Frames sent between carrier and this are lost.
    pub running: bool,
    pub promisc: bool,
    /// For a veth: the peer's index (in whichever namespace the peer lives).
    pub peer_index: Option<u32>,
}

/// A 48-bit MAC address, written `0a:58:0a:00:00:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl std::str::FromStr for MacAddr {
    type Err = NetlinkError;
    fn from_str(s: &str) -> Result<MacAddr> {
        let bad = || NetlinkError::Invalid(format!("invalid MAC address {s:?}"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// A route in the main table (or `table`), as far as CNI results describe them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: Option<u32>,
    pub priority: Option<u32>,
    pub mtu: Option<u32>,
    /// RT_SCOPE_*: 0 universe, 253 link, 254 host. `None` picks universe (link when no gateway).
    pub scope: Option<u8>,
}

/// One-byte bridge port flags (IFLA_BRPORT_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortFlag {
    /// Frames may leave by the port they came in (IFLA_BRPORT_MODE).
    Hairpin = 4,
    /// Isolated ports cannot talk to each other, only to non-isolated ones (IFLA_BRPORT_ISOLATED).
    Isolated = 33,
}

/// Options for the container end of a new veth pair.
#[derive(Debug, Clone, Default)]
pub struct VethPeer<'a> {
    pub name: &'a str,
    pub netns: Option<&'a NetNs>,
    pub mac: Option<MacAddr>,
}

pub struct Netlink {
    transport: socket::Transport,
    seq: u32,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("port", &self.transport.port()).field("seq", &self.seq).finish()
    }
}

impl Netlink {
    /// A socket in the calling thread's current namespace.
    pub fn open() -> Result<Netlink> {
        Netlink::connect().map_err(|e| NetlinkError::kernel("open netlink socket", e))
    }

    /// A socket in `ns`, usable from anywhere afterwards.
    pub fn open_in(ns: &NetNs) -> Result<Netlink> {
        ns.run(Netlink::open)?
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let mut links = Vec::new();
        self.dump(Rtm::GetLink(LinkMessage::default()), |kind, payload| {
            if kind == RTM_NEWLINK {
                links.extend(parse::link(payload));
            }
        })
        .map_err(|e| NetlinkError::kernel("list links", e))?;
        Ok(links)
    }
    /// `Ok(None)` when no link has that name.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        if name.is_empty() || name.len() >= IFNAMSIZ {
            return Ok(None); // no link can be called that
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg).map_err(|e| NetlinkError::kernel(format!("look up link {name}"), e))
    }
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        if index == 0 {
            return Ok(None);
        }
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg).map_err(|e| NetlinkError::kernel(format!("look up link index {index}"), e))
    }

    /// Creates a bridge, or returns the existing link of that name (an error if it is not a bridge),
    /// up and with `mtu`. An existing bridge that needs nothing costs one request.
    pub fn ensure_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<Link> {
        let link = match self.link_by_name(name)? {
            Some(link) => link,
            None => {
                let mut msg = LinkMessage::default();
                msg.attributes.push(LinkAttribute::IfName(name.to_string()));
                if let Some(mtu) = mtu {
                    msg.attributes.push(LinkAttribute::Mtu(mtu));
                }
                msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
                match self.ack(Rtm::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
                    // EEXIST: another ADD made it meanwhile.
                    Err(e) if e.errno() != Some(libc::EEXIST) => return Err(NetlinkError::kernel(format!("create bridge {name}"), e)),
                    _ => {}
                }
                self.link_by_name(name)?
                    .ok_or_else(|| NetlinkError::kernel(format!("create bridge {name}"), "the new link is gone"))?
            }
        };
        if link.kind.as_deref() != Some("bridge") {
            return Err(NetlinkError::kernel(
                format!("link {name}(index {}) already exists and is not a bridge", link.index),
                format!("its kind is {}", link.kind.as_deref().unwrap_or("none")),
            ));
        }
        let mtu_wrong = mtu.is_some_and(|mtu| link.mtu != mtu);
        if let (true, Some(mtu)) = (mtu_wrong, mtu) {
            self.set_mtu(link.index, mtu)?;
        }
        if !link.up {
            self.set_up(link.index)?;
        }
        if !mtu_wrong && link.up {
            return Ok(link);
        }
        self.link_by_index(link.index)?
            .ok_or_else(|| NetlinkError::kernel(format!("look up bridge {name}(index {})", link.index), "the link is gone"))
    }

    /// Creates a veth pair in one request: `host_name` here (enslaved to `master`, if given)
    /// and the peer directly in its namespace, both with `mtu`. Returns the host end.
    pub fn create_veth(&mut self, host_name: &str, peer: &VethPeer, mtu: Option<u32>, master: Option<u32>) -> Result<Link> {
        let what = || format!("create veth {host_name} (peer {})", peer.name);
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.name.to_string()));
        if let Some(mtu) = mtu {
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = peer.mac {
            peer_msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(ns) = peer.netns {
            // The fd only has to stay open until the kernel has answered, which `ns` outlives.
            peer_msg.attributes.push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        }

        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host_name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.ack(Rtm::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL).map_err(|e| NetlinkError::kernel(what(), e))?;
        self.link_by_name(host_name)?.ok_or_else(|| NetlinkError::kernel(what(), "the new link is gone"))
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_link(index, |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
        .map_err(|e| self.fail(e, |me| format!("bring up {}", me.describe(index))))
    }
    pub fn set_up_by_name(&mut self, name: &str) -> Result<()> {
        let link = self.link_by_name(name)?.ok_or_else(|| NetlinkError::kernel(format!("no link {name}"), "not found"))?;
        self.set_up(link.index)
    }
    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_link(index, |m| {
            m.header.flags = LinkFlags::empty();
            m.header.change_mask = LinkFlags::Up;
        })
        .map_err(|e| self.fail(e, |me| format!("bring down {}", me.describe(index))))
    }
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::Mtu(mtu)))
            .map_err(|e| self.fail(e, |me| format!("set MTU {mtu} on {}", me.describe(index))))
    }
    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::Address(mac.0.to_vec())))
            .map_err(|e| self.fail(e, |me| format!("set MAC address {mac} on {}", me.describe(index))))
    }
    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        self.set_link(index, |m| {
            m.header.flags = if on { LinkFlags::Promisc } else { LinkFlags::empty() };
            m.header.change_mask = LinkFlags::Promisc;
        })
        .map_err(|e| {
            let state = if on { "on" } else { "off" };
            self.fail(e, |me| format!("turn promiscuous mode {state} on {}", me.describe(index)))
        })
    }
    pub fn rename(&mut self, index: u32, name: &str) -> Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::IfName(name.to_string())))
            .map_err(|e| self.fail(e, |me| format!("rename {} to {name}", me.describe(index))))
    }
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::Controller(master)))
            .map_err(|e| self.fail(e, |me| format!("attach {} to master {}", me.describe(index), me.describe(master))))
    }
    /// Bridge port hairpin mode, so traffic may leave by the port it came in.
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        self.set_port_flag(index, PortFlag::Hairpin, on)
    }

    /// Sets a one-byte flag of a bridge port.
    pub fn set_port_flag(&mut self, index: u32, flag: PortFlag, on: bool) -> Result<()> {
        // An AF_BRIDGE RTM_SETLINK goes to the port's bridge (br_setlink), which reads the
        // nested IFLA_PROTINFO as IFLA_BRPORT_* attributes. The crate names none of these
        // flags, so each is a DefaultNla; the crate sets NLA_F_NESTED on IFLA_PROTINFO itself
        // (without it the kernel would read the value as a bare port state).
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::ProtoInfoBridge(vec![LinkProtoInfoBridge::Other(DefaultNla::new(
            flag as u16,
            vec![u8::from(on)],
        ))]));
        self.ack(Rtm::SetLink(msg), 0).map_err(|e| {
            let state = if on { "on" } else { "off" };
            self.fail(e, |me| format!("turn {flag:?} {state} on bridge port {}", me.describe(index)))
        })
    }

    /// A bridge port flag as the kernel reports it (AF_BRIDGE link dump); `None` when
    /// `index` is not a bridge port.
    pub fn port_flag(&mut self, index: u32, flag: PortFlag) -> Result<Option<bool>> {
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        let mut found = None;
        self.dump(Rtm::GetLink(msg), |kind, payload| {
            if kind == RTM_NEWLINK {
                if let Some((i, on)) = parse::port_flag(payload, flag as u16) {
                    if i == index {
                        found = Some(on);
                    }
                }
            }
        })
        .map_err(|e| NetlinkError::kernel("list bridge ports", e))?;
        Ok(found)
    }

    pub fn move_to_netns(&mut self, index: u32, ns: &NetNs) -> Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()))).map_err(|e| {
            self.fail(e, |me| format!("move {} to network namespace {}", me.describe(index), ns.path().display()))
        })
    }
    /// Deletes a link; `Ok(false)` when it was already gone.
    pub fn delete_link(&mut self, index: u32) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.ack(Rtm::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(self.fail(e, |me| format!("delete link {}", me.describe(index)))),
        }
    }

    /// Deletes a link like [`Netlink::delete_link`], but returns once the kernel has
    /// unregistered it (gone from its namespace, announced, its name free again) rather than
    /// once the kernel has also waited to free it, which costs 15-18 ms of every deletion;
    /// see `exchange_detached`. Consumes the socket.
    pub fn delete_link_detached(self, index: u32) -> Result<bool> {
        const RTNLGRP_LINK: u32 = 1;
        const RTM_DELLINK: u16 = 17;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let gone = |kind: u16, payload: &[u8]| {
            // ifinfomsg: family, pad, type (2), index (4), ...
            kind == RTM_DELLINK && payload.get(4..8).is_some_and(|b| b == index.to_ne_bytes())
        };
        match self.exchange_detached(Rtm::DelLink(msg), RTNLGRP_LINK, gone) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(NetlinkError::kernel(format!("delete link {index}"), e)),
        }
    }

    /// Adds an address; one already present is not an error.
    pub fn add_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        match self.ack(Rtm::NewAddress(address_message(index, addr, true)), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(self.fail(e, |me| format!("add address {addr} to {}", me.describe(index)))),
        }
    }
    pub fn del_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        self.ack(Rtm::DelAddress(address_message(index, addr, false)), 0)
            .map_err(|e| self.fail(e, |me| format!("delete address {addr} from {}", me.describe(index))))
    }
    /// Addresses on one link, or on all links with `None`, as (link index, address/prefix).
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<(u32, IpNet)>> {
        let mut out = Vec::new();
        let mut msg = AddressMessage::default();
        msg.header.index = index.unwrap_or(0);
        self.dump(Rtm::GetAddress(msg), |kind, payload| {
            if kind == RTM_NEWADDR {
                if let Some((link, net)) = parse::address(payload) {
                    let wanted = match index {
                        Some(i) => i == link,
                        None => true,
                    };
                    if wanted {
                        out.push((link, net));
                    }
                }
            }
        })
        .map_err(|e| match index {
            Some(i) => self.fail(e, |me| format!("list addresses of {}", me.describe(i))),
            None => NetlinkError::kernel("list addresses", e),
        })?;
        Ok(out)
    }

    /// Adds a route; an identical one already present is not an error.
    pub fn add_route(&mut self, route: &RouteEntry) -> Result<()> {
        // CREATE without EXCL adds a second route to the same destination (a container on two
        // networks gets both default routes, as the reference plugins' RouteAddEcmp does);
        // EEXIST then only means this very route is there already.
        match self.ack(Rtm::NewRoute(route_message(route, false)), NLM_F_CREATE) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(self.fail(e, |me| format!("add route {}", me.describe_route(route)))),
        }
    }
    pub fn del_route(&mut self, route: &RouteEntry) -> Result<()> {
        self.ack(Rtm::DelRoute(route_message(route, true)), 0)
            .map_err(|e| self.fail(e, |me| format!("delete route {}", me.describe_route(route))))
    }
    /// Routes of the main table for both families.
    pub fn routes(&mut self) -> Result<Vec<RouteEntry>> {
        let mut out = Vec::new();
        // AF_UNSPEC: the kernel dumps every family; IPv4 and IPv6 are kept.
        self.dump(Rtm::GetRoute(RouteMessage::default()), |kind, payload| {
            if kind == RTM_NEWROUTE {
                if let Some(r) = parse::route(payload) {
                    let local_kind = matches!(
                        r.kind,
                        RouteType::Local | RouteType::Broadcast | RouteType::Anycast | RouteType::Multicast
                    );
                    if r.table == RT_TABLE_MAIN && !local_kind {
                        out.push(r.entry);
                    }
                }
            }
        })
        .map_err(|e| NetlinkError::kernel("list routes", e))?;
        Ok(out)
    }

    /// The route the kernel takes to `ip`, as `ip route get` shows it: its gateway (none when
    /// `ip` is on-link) and outgoing interface. `None` when `ip` is unreachable or local.
    pub fn route_to(&mut self, ip: IpAddr) -> Result<Option<RouteEntry>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(ip);
        msg.header.destination_prefix_length = if ip.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(ip)));
        let mut found = None;
        let res = self.query(Rtm::GetRoute(msg), |kind, payload| {
            if kind == RTM_NEWROUTE && found.is_none() {
                found = parse::route(payload).filter(|r| r.kind == RouteType::Unicast).map(|r| r.entry);
            }
        });
        match res {
            Ok(()) => Ok(found),
            Err(e) if matches!(e.errno(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => Ok(None),
            Err(e) => Err(NetlinkError::kernel(format!("look up the route to {ip}"), e)),
        }
    }

    // ---- private helpers ----

    /// One RTM_GETLINK (by index or IFLA_IFNAME); ENODEV is "no such link".
    fn get_link(&mut self, msg: LinkMessage) -> Result<Option<Link>, NlError> {
        let mut found = None;
        let res = self.query(Rtm::GetLink(msg), |kind, payload| {
            if kind == RTM_NEWLINK && found.is_none() {
                found = parse::link(payload);
            }
        });
        match res {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An RTM_SETLINK on `index`, filled in by `edit`.
    fn set_link(&mut self, index: u32, edit: impl FnOnce(&mut LinkMessage)) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        edit(&mut msg);
        self.ack(Rtm::SetLink(msg), 0)
    }

    /// The error of a failed operation, described (with link names looked up) only now.
    fn fail(&mut self, err: NlError, what: impl FnOnce(&mut Netlink) -> String) -> NetlinkError {
        NetlinkError::kernel(what(self), err)
    }

    /// `eth0(index 5)`, or `index 5` when the link cannot be found.
    fn describe(&mut self, index: u32) -> String {
        match self.link_by_index(index) {
            Ok(Some(link)) => format!("{}(index {index})", link.name),
            _ => format!("index {index}"),
        }
    }

    fn describe_route(&mut self, route: &RouteEntry) -> String {
        let mut s = route.dst.to_string();
        if let Some(gw) = route.gateway {
            s += &format!(" via {gw}");
        }
        if let Some(oif) = route.oif {
            s += &format!(" dev {}", self.describe(oif));
        }
        if let Some(table) = route.table {
            s += &format!(" table {table}");
        }
        if let Some(metric) = route.priority {
            s += &format!(" metric {metric}");
        }
        s
    }
}

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFNAMSIZ: usize = 16;
const RT_TABLE_MAIN: u32 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address_message(index: u32, addr: IpNet, adding: bool) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(addr.addr());
    msg.header.prefix_len = addr.prefix_len();
    msg.header.index = index;
    match addr {
        IpNet::V4(net) => {
            msg.header.scope = if net.addr().is_loopback() { AddressScope::Host } else { AddressScope::Universe };
            msg.attributes.push(AddressAttribute::Local(net.addr().into()));
            msg.attributes.push(AddressAttribute::Address(net.addr().into()));
            if adding && net.prefix_len() < 31 {
                msg.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
            }
        }
        IpNet::V6(net) => {
            msg.attributes.push(AddressAttribute::Address(net.addr().into()));
        }
    }
    msg
}

fn route_message(route: &RouteEntry, deleting: bool) -> RouteMessage {
    let dst = route.dst.trunc();
    let table = route.table.unwrap_or(RT_TABLE_MAIN);
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(dst.addr());
    msg.header.destination_prefix_length = dst.prefix_len();
    // rtm_table has 8 bits; larger ids go in RTA_TABLE alone (RT_TABLE_UNSPEC here).
    msg.header.table = u8::try_from(table).unwrap_or(0);
    if deleting {
        // Unspecified protocol/type and scope "nowhere" match any route, as `ip route del` does.
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        msg.header.scope = route.scope.map(RouteScope::from).unwrap_or(RouteScope::NoWhere);
    } else {
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        let scope = route.scope.unwrap_or(if route.gateway.is_some() { RT_SCOPE_UNIVERSE } else { RT_SCOPE_LINK });
        msg.header.scope = RouteScope::from(scope);
    }
    if dst.prefix_len() > 0 {
        msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst.addr())));
    }
    if let Some(gw) = route.gateway {
        msg.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(priority) = route.priority {
        msg.attributes.push(RouteAttribute::Priority(priority));
    }
    msg.attributes.push(RouteAttribute::Table(table));
    if let (false, Some(mtu)) = (deleting, route.mtu) {
        msg.attributes.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    msg
}
