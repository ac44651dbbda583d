//! Policy routing rules (`ip rule`): which routing table a packet is looked up in, by its
//! source, destination, interfaces or mark.

use super::{Netlink, NetlinkError, Result};
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rtm};

/// One rule, as far as `ip rule add|del` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleEntry {
    pub ipv6: bool,
    pub from: Option<IpNet>,
    pub to: Option<IpNet>,
    pub table: u32,
    pub priority: Option<u32>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub fwmark: Option<u32>,
}

impl Netlink {
    /// Adds a rule; the same rule already present is not an error.
    pub fn add_rule(&mut self, rule: &RuleEntry) -> Result<()> {
        match self.ack(Rtm::NewRule(rule_message(rule)), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(NetlinkError::kernel(format!("add rule {}", describe(rule)), e)),
        }
    }

    /// Deletes the first rule matching `rule`'s selectors.
    pub fn del_rule(&mut self, rule: &RuleEntry) -> Result<()> {
        self.ack(Rtm::DelRule(rule_message(rule)), 0).map_err(|e| NetlinkError::kernel(format!("delete rule {}", describe(rule)), e))
    }
}

fn rule_message(rule: &RuleEntry) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = if rule.ipv6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    msg.header.action = RuleAction::ToTable;
    // Tables above 255 only fit the attribute; the header's byte then says "see attribute".
    msg.header.table = u8::try_from(rule.table).unwrap_or(0);
    msg.attributes.push(RuleAttribute::Table(rule.table));
    if let Some(from) = rule.from {
        msg.header.src_len = from.prefix_len();
        msg.attributes.push(RuleAttribute::Source(from.addr()));
    }
    if let Some(to) = rule.to {
        msg.header.dst_len = to.prefix_len();
        msg.attributes.push(RuleAttribute::Destination(to.addr()));
    }
    if let Some(priority) = rule.priority {
        msg.attributes.push(RuleAttribute::Priority(priority));
    }
    if let Some(iif) = &rule.iif {
        msg.attributes.push(RuleAttribute::Iifname(iif.clone()));
    }
    if let Some(oif) = &rule.oif {
        msg.attributes.push(RuleAttribute::Oifname(oif.clone()));
    }
    if let Some(mark) = rule.fwmark {
        msg.attributes.push(RuleAttribute::FwMark(mark));
    }
    msg
}

fn describe(rule: &RuleEntry) -> String {
    let mut s = String::new();
    if let Some(from) = rule.from {
        s += &format!("from {from} ");
    }
    if let Some(to) = rule.to {
        s += &format!("to {to} ");
    }
    s + &format!("table {}", rule.table)
}
