//! `berth-host-local`: addresses from configured ranges, recorded on the host's disk; a
//! drop-in for the reference host-local (same configuration, same store layout).
//!
//! - ADD: one address per range set (the same ones again for a repeated ADD);
//! - DEL: releases every address of the container and interface; fine when there is none;
//! - CHECK: fails unless the container and interface hold an address;
//! - GC (CNI 1.1): releases every address not held by `cni.dev/valid-attachments`;
//! - STATUS (CNI 1.1): code 50 when some range set has no free address left.

use crate::allocator::{self, Lease};
use crate::config::{valid_attachments, HostLocalConf, StoreConf};
use crate::store::{Owner, Store};
use berth_cni::error::Context;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{Dns, IpConfig, Route, RunResult};
use berth_cni::{CniError, CniResult, Code};
use ipnet::IpNet;
use std::collections::HashSet;
use std::path::Path;

pub struct HostLocal;

impl Plugin for HostLocal {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let conf = HostLocalConf::parse(&req.conf, &req.args)?;
        let dns = match &conf.resolv_conf {
            Some(path) => parse_resolv_conf(path)?,
            None => Dns::default(),
        };
        let leases = {
            let store = Store::open(&conf.store)?;
            allocator::allocate(&store, &conf.range_sets, &Owner::new(&req.container_id, &req.ifname))?
        };
        Ok(result(&conf, &leases, dns))
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        // Only where the store is matters: a DEL must work even if the ranges changed.
        let Some(store) = Store::open_existing(&StoreConf::parse(&req.conf)?)? else { return Ok(()) };
        allocator::release(&store, &req.container_id, &req.ifname).map(drop)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = HostLocalConf::parse(&req.conf, &req.args)?;
        let held = match Store::open_existing(&conf.store)? {
            Some(store) => {
                store.allocations()?.into_iter().any(|a| a.owner.is_some_and(|o| o.is(&req.container_id, &req.ifname)))
            }
            None => false,
        };
        if held {
            Ok(())
        } else {
            Err(CniError::new(
                Code::UnknownContainer,
                format!(
                    "no address is allocated to container {} ({}) in network {}",
                    req.container_id, req.ifname, conf.store.network
                ),
            ))
        }
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let conf = HostLocalConf::parse(&req.conf, &req.args)?;
        let taken: HashSet<_> = match Store::open_existing(&conf.store)? {
            Some(store) => store.allocations()?.into_iter().map(|a| a.ip).collect(),
            None => HashSet::new(),
        };
        for (i, set) in conf.range_sets.iter().enumerate() {
            if allocator::free_count(set, &taken) == 0 {
                return Err(allocator::exhausted(i, set));
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> CniResult<()> {
        let valid = valid_attachments(&req.conf)?;
        let Some(store) = Store::open_existing(&StoreConf::parse(&req.conf)?)? else { return Ok(()) };
        allocator::gc(&store, &valid).map(drop)
    }
}

/// The ADD result: the addresses with their ranges' prefix length and gateway, the top-level
/// routes, then the routes of the ranges the addresses came from.
fn result(conf: &HostLocalConf, leases: &[Lease], dns: Dns) -> RunResult {
    let mut routes: Vec<Route> = conf.routes.clone();
    let mut ips = Vec::with_capacity(leases.len());
    for lease in leases {
        let range = &conf.range_sets[lease.set].ranges[lease.range];
        // A leased address is in its range, so of the subnet's family.
        let address = IpNet::new(lease.ip, range.subnet.prefix_len()).unwrap_or_else(|_| IpNet::from(lease.ip));
        ips.push(IpConfig { interface: None, address, gateway: Some(range.gateway) });
        for route in &range.routes {
            if !routes.contains(route) {
                routes.push(route.clone());
            }
        }
    }
    RunResult { ips, routes, dns, ..Default::default() }
}

/// A resolv.conf as the reference reads it: nameserver, domain, search, options.
pub fn parse_resolv_conf(path: &Path) -> CniResult<Dns> {
    let text = std::fs::read_to_string(path).io_context(|| format!("ipam.resolvConf: cannot read {}", path.display()))?;
    Ok(resolv_conf_dns(&text))
}

fn resolv_conf_dns(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with(['#', ';']) {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, first, rest @ ..] = fields.as_slice() else { continue };
        match *key {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => dns.search.extend(std::iter::once(first).chain(rest).map(|s| s.to_string())),
            "options" => dns.options.extend(std::iter::once(first).chain(rest).map(|s| s.to_string())),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_read_like_the_reference() {
        let dns = resolv_conf_dns(
            "# generated\nnameserver 10.0.0.1\nnameserver fd00::1 # trailing\n; comment\ndomain example.com\n\
             search a.example b.example\nsearch c.example\noptions ndots:2 edns0\nsortlist 10.0.0.0\nnameserver\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.1", "fd00::1"]);
        assert_eq!(dns.domain, "example.com");
        assert_eq!(dns.search, ["a.example", "b.example", "c.example"]);
        assert_eq!(dns.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn missing_resolv_conf_names_the_file() {
        let e = parse_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("/nonexistent/resolv.conf"), "{e}");
    }
}
