//! `pipework route|rule|tc GUEST ARGS`: what `ip route ARGS`, `ip rule ARGS` and `tc ARGS`
//! do, inside the guest's network namespace, over netlink. The common forms of their
//! argument syntax are read; anything else is refused with what is supported.

use super::line::GuestTool;
use crate::error::{BerthError, BerthResult};
use crate::target::resolve;
use berth_netlink::{Netlink, RouteEntry, RuleEntry};
use berth_netns::NetNs;
use ipnet::IpNet;
use std::net::IpAddr;

const ROUTE_SYNTAX: &str = "route GUEST add|del|replace DEST|default [via GATEWAY] [dev IF] [metric N] [table N] [scope link|host|global] [mtu N]";
const RULE_SYNTAX: &str = "rule GUEST add|del [from PREFIX] [to PREFIX] [iif IF] [oif IF] [fwmark N] [priority N] table|lookup N";

pub fn run(tool: GuestTool, guest: &str, args: &[String]) -> BerthResult<()> {
    let target = resolve(guest)?;
    let netns = target.netns.ok_or_else(|| BerthError::NotFound(format!("{guest} is not running")))?;
    let mut nl = Netlink::open_in(&NetNs::open(&netns)?)?;
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match tool {
        GuestTool::Route => route(&mut nl, &words),
        GuestTool::Rule => rule(&mut nl, &words),
        GuestTool::Tc => super::tc::run(&mut nl, &words),
    }
}

fn unsupported(syntax: &str, what: &str) -> BerthError {
    BerthError::InvalidArgument(format!("{what}; supported: {syntax}"))
}

/// `ip route add|del|replace ...`.
fn route(nl: &mut Netlink, words: &[&str]) -> BerthResult<()> {
    let (verb, rest) = words.split_first().ok_or_else(|| unsupported(ROUTE_SYNTAX, "no route command"))?;
    let route = parse_route(nl, rest)?;
    match *verb {
        "add" | "append" => nl.add_route(&route)?,
        "del" | "delete" => nl.del_route(&route)?,
        "replace" | "change" => {
            // Replace: whatever route goes to that destination (in that table) is dropped first.
            let existing = nl.routes()?.into_iter().filter(|r| r.dst == route.dst && r.table == route.table);
            for old in existing.collect::<Vec<_>>() {
                nl.del_route(&old)?;
            }
            nl.add_route(&route)?;
        }
        other => return Err(unsupported(ROUTE_SYNTAX, &format!("route command {other:?}"))),
    }
    Ok(())
}

fn parse_route(nl: &mut Netlink, words: &[&str]) -> BerthResult<RouteEntry> {
    let (dst, mut rest) = words.split_first().ok_or_else(|| unsupported(ROUTE_SYNTAX, "no destination"))?;
    let mut route = RouteEntry { dst: destination(dst)?, gateway: None, oif: None, table: None, priority: None, mtu: None, scope: None };
    while let [key, value, tail @ ..] = rest {
        match *key {
            "via" => route.gateway = Some(ip(value)?),
            "dev" => route.oif = Some(nl.link_by_name(value)?.ok_or_else(|| BerthError::NotFound(format!("no interface {value} in the guest")))?.index),
            "metric" | "priority" | "preference" => route.priority = Some(number(key, value)?),
            "table" => route.table = Some(table(value)?),
            "mtu" => route.mtu = Some(number(key, value)?),
            "scope" => route.scope = Some(scope(value)?),
            other => return Err(unsupported(ROUTE_SYNTAX, &format!("route option {other:?}"))),
        }
        rest = tail;
    }
    if let [dangling] = rest {
        return Err(unsupported(ROUTE_SYNTAX, &format!("{dangling:?} needs a value")));
    }
    Ok(route)
}

/// `ip rule add|del ...`.
fn rule(nl: &mut Netlink, words: &[&str]) -> BerthResult<()> {
    let (verb, mut rest) = words.split_first().ok_or_else(|| unsupported(RULE_SYNTAX, "no rule command"))?;
    let mut rule = RuleEntry::default();
    let mut table_given = false;
    while let [key, value, tail @ ..] = rest {
        match *key {
            "from" => rule.from = Some(prefix(value)?),
            "to" => rule.to = Some(prefix(value)?),
            "iif" => rule.iif = Some(value.to_string()),
            "oif" => rule.oif = Some(value.to_string()),
            "fwmark" => rule.fwmark = Some(number(key, value)?),
            "priority" | "pref" | "preference" => rule.priority = Some(number(key, value)?),
            "table" | "lookup" => (rule.table, table_given) = (table(value)?, true),
            other => return Err(unsupported(RULE_SYNTAX, &format!("rule option {other:?}"))),
        }
        rest = tail;
    }
    if !rest.is_empty() || !table_given {
        return Err(unsupported(RULE_SYNTAX, "a rule needs its table, and every option its value"));
    }
    rule.ipv6 = rule.from.or(rule.to).is_some_and(|p| p.addr().is_ipv6());
    match *verb {
        "add" => nl.add_rule(&rule)?,
        "del" | "delete" => nl.del_rule(&rule)?,
        other => return Err(unsupported(RULE_SYNTAX, &format!("rule command {other:?}"))),
    }
    Ok(())
}

fn destination(word: &str) -> BerthResult<IpNet> {
    match word {
        "default" => Ok("0.0.0.0/0".parse().expect("a prefix")),
        _ => prefix(word),
    }
}

/// `10.0.0.0/8`, or a bare address as a host route.
fn prefix(word: &str) -> BerthResult<IpNet> {
    word.parse::<IpNet>()
        .or_else(|_| word.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| BerthError::InvalidArgument(format!("{word:?} is not an address or prefix")))
}

fn ip(word: &str) -> BerthResult<IpAddr> {
    word.parse().map_err(|_| BerthError::InvalidArgument(format!("{word:?} is not an IP address")))
}

fn number(key: &str, word: &str) -> BerthResult<u32> {
    word.parse().map_err(|_| BerthError::InvalidArgument(format!("{key} {word:?} is not a number")))
}

fn table(word: &str) -> BerthResult<u32> {
    match word {
        "main" => Ok(254),
        "local" => Ok(255),
        "default" => Ok(253),
        n => number("table", n),
    }
}

fn scope(word: &str) -> BerthResult<u8> {
    match word {
        "global" | "universe" => Ok(0),
        "link" => Ok(253),
        "host" => Ok(254),
        other => Err(BerthError::InvalidArgument(format!("scope {other:?}: global, link or host"))),
    }
}
