//! What the server answers for itself: the names on its network, bare and under its domain,
//! and the reverse names of their addresses. Everything else goes to the host's resolvers.

use crate::store::NetworkState;
use crate::wire::{self, Query, Rdata, RCODE_NXDOMAIN};
use std::collections::HashMap;
use std::net::IpAddr;

/// Answers carry a TTL of 0: a name freed by DEL and taken by another container must not be
/// served from a cache with the old address.
pub const TTL: u32 = 0;

#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    names: HashMap<String, Vec<IpAddr>>,
    reverse: HashMap<IpAddr, String>,
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answered here: these bytes.
    Reply(Vec<u8>),
    /// Not a name of this network: relay it to the host's resolvers.
    Forward,
}

impl Zone {
    pub fn new(state: &NetworkState) -> Zone {
        let mut zone = Zone { domain: state.domain.clone(), ..Default::default() };
        for entry in &state.entries {
            for name in &entry.names {
                zone.names.entry(name.clone()).or_default().extend(&entry.ips);
            }
            if let Some(first) = entry.names.first() {
                for ip in &entry.ips {
                    zone.reverse.insert(*ip, zone.qualified(first));
                }
            }
        }
        zone
    }

    fn qualified(&self, name: &str) -> String {
        if self.domain.is_empty() {
            name.to_string()
        } else {
            format!("{name}.{}", self.domain)
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn answer(&self, query: &Query) -> Decision {
        if query.qclass != wire::CLASS_IN {
            return Decision::Forward;
        }
        if let Some(ip) = wire::reverse_address(&query.name) {
            return match self.reverse.get(&ip) {
                Some(name) if matches!(query.qtype, wire::TYPE_PTR | wire::TYPE_ANY) => {
                    Decision::Reply(wire::response(query, 0, true, &[Rdata::Ptr(name.clone())], TTL))
                }
                Some(_) => Decision::Reply(wire::response(query, 0, true, &[], TTL)),
                None => Decision::Forward,
            };
        }
        let in_domain = !self.domain.is_empty()
            && (query.name == self.domain || query.name.strip_suffix(&self.domain).is_some_and(|rest| rest.ends_with('.')));
        let bare = if in_domain { &query.name[..query.name.len().saturating_sub(self.domain.len() + 1)] } else { &query.name };
        match self.names.get(bare) {
            Some(ips) => Decision::Reply(wire::response(query, 0, true, &records(ips, query.qtype), TTL)),
            None if in_domain => Decision::Reply(wire::response(query, RCODE_NXDOMAIN, true, &[], TTL)),
            None => Decision::Forward,
        }
    }
}

fn records(ips: &[IpAddr], qtype: u16) -> Vec<Rdata> {
    let wanted = |ip: &IpAddr| match qtype {
        wire::TYPE_A => ip.is_ipv4(),
        wire::TYPE_AAAA => ip.is_ipv6(),
        wire::TYPE_ANY => true,
        _ => false,
    };
    ips.iter().filter(|ip| wanted(ip)).map(|ip| Rdata::of(*ip)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Entry;
    use crate::wire::{build_query, parse_answer, parse_query, TYPE_A, TYPE_AAAA, TYPE_PTR};

    fn zone() -> Zone {
        let ips = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect();
        let entry = |id: &str, names: &[&str], addrs: &[&str]| Entry {
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: Default::default(),
            names: names.iter().map(|n| n.to_string()).collect(),
            ips: ips(addrs),
        };
        Zone::new(&NetworkState {
            domain: "dns.podman".into(),
            entries: vec![entry("a", &["web", "www"], &["10.0.0.2", "fd00::2"]), entry("b", &["db"], &["10.0.0.3"])],
            ..Default::default()
        })
    }

    fn ask(zone: &Zone, name: &str, qtype: u16) -> Option<wire::Answer> {
        let packet = build_query(7, name, qtype);
        match zone.answer(&parse_query(&packet).unwrap()) {
            Decision::Reply(bytes) => Some(parse_answer(&bytes).unwrap()),
            Decision::Forward => None,
        }
    }

    #[test]
    fn names_answer_bare_and_in_the_domain() {
        let z = zone();
        let a = ask(&z, "WEB", TYPE_A).unwrap();
        assert_eq!(a.records, [Rdata::A("10.0.0.2".parse().unwrap())]);
        assert!(a.authoritative);
        let aaaa = ask(&z, "www.dns.podman", TYPE_AAAA).unwrap();
        assert_eq!(aaaa.records, [Rdata::Aaaa("fd00::2".parse().unwrap())]);
        let none = ask(&z, "db", TYPE_AAAA).unwrap();
        assert_eq!((none.rcode, none.records.len()), (0, 0), "a name without an address of that family: NODATA");
        assert_eq!(ask(&z, "nope.dns.podman", TYPE_A).unwrap().rcode, RCODE_NXDOMAIN);
        assert_eq!(ask(&z, "example.com", TYPE_A), None, "forwarded");
        assert_eq!(ask(&z, "nope", TYPE_A), None, "forwarded: the host may know it");
    }

    #[test]
    fn reverse_names_answer_for_this_network_only() {
        let z = zone();
        let ptr = ask(&z, "2.0.0.10.in-addr.arpa", TYPE_PTR).unwrap();
        assert_eq!(ptr.records, [Rdata::Ptr("web.dns.podman".into())]);
        let v6 = ask(&z, &wire::reverse_name("fd00::2".parse().unwrap()), TYPE_PTR).unwrap();
        assert_eq!(v6.records, [Rdata::Ptr("web.dns.podman".into())]);
        assert_eq!(ask(&z, "9.0.0.10.in-addr.arpa", TYPE_PTR), None);
    }
}
