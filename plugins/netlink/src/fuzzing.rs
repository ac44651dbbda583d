//! One entry point for the fuzz targets (berth-fuzz): a reply datagram decoded as every dump
//! and request of this crate decodes it. Not an API: the parsers stay private.

use super::{links_extra, parse, socket, tc, vxlan, PortFlag, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE};
use netlink_packet_core::NLMSG_DONE;

/// Decodes every message of `datagram` (links with their details and bridge port flags,
/// addresses, routes, FDB entries, namespace IDs, qdiscs, filters, ACKs with extended ACK
/// messages) and returns how many decoded to something.
pub fn decode_reply(datagram: &[u8]) -> usize {
    // /proc/net/psched of a kernel with a nanosecond clock, as on this machine.
    let ticks = tc::Psched::parse("000003e8 00000040 000f4240 3b9aca00").expect("a valid psched line");
    let mut decoded = 0;
    for message in socket::messages(datagram) {
        let Ok(message) = message else { break };
        let payload = message.payload;
        let known = match message.kind {
            RTM_NEWLINK => {
                let flags = [PortFlag::Hairpin, PortFlag::Isolated].map(|f| parse::port_flag(payload, f as u16).is_some());
                links_extra::link_detail(payload).is_some() | flags.contains(&true)
            }
            RTM_NEWADDR => parse::address(payload).is_some(),
            RTM_NEWROUTE => parse::route(payload).is_some(),
            vxlan::RTM_NEWNEIGH => {
                // The entry's own link (ndmsg's ifindex), as fdb_entries asks for it.
                let index = payload.get(4..8).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                vxlan::remote_entry(payload, index).is_some()
            }
            links_extra::RTM_NEWNSID => links_extra::nsid(payload).is_some(),
            tc::RTM_NEWQDISC => tc::parse_qdisc(payload, &ticks).is_some(),
            tc::RTM_NEWTFILTER => !tc::parse_redirects(payload).is_empty(),
            NLMSG_DONE => message.done().map_err(|e| e.to_string()).is_ok(),
            _ => message.ack().is_some_and(|ack| ack.map_err(|e| e.to_string()).is_ok()),
        };
        decoded += usize::from(known);
    }
    decoded
}

/// /proc/net/psched as [`tc`] reads it.
pub fn decode_psched(text: &str) -> bool {
    tc::Psched::parse(text).is_some()
}
