//! `berth-dhcp`: an IPAM plugin whose addresses come from the network's own DHCPv4 server,
//! with nothing else to install or start.
//!
//! - ADD: DISCOVER/OFFER/REQUEST/ACK on CNI_IFNAME from inside the container's namespace (the
//!   main plugin made the interface first; it is brought up here). Before the REQUEST goes
//!   out, the keeper (started on the way when it is not running) records the offered address
//!   as pending; after the ACK the lease is handed to it (Hold), which turns the record into
//!   the lease it renews. A plugin killed in between leaves the pending record, which DEL, GC,
//!   or the keeper itself once the ADD's time is past, releases at the server. The result:
//!   the address, the router as gateway, classless static routes (option 121) or a default
//!   route, DNS servers.
//! - DEL: the keeper sends DHCPRELEASE and forgets the lease (or the pending address); fine
//!   when there is none.
//! - CHECK: fails when the keeper holds no lease for the attachment, or could not renew it.
//! - STATUS: fails when the keeper cannot be reached (50), or when a lease of this network
//!   was not renewed when due (51: the server is away).
//! - GC: releases the network's leases and pending addresses whose attachments are not in
//!   `cni.dev/valid-attachments`.
//!
//! Modules: [`message`] (the wire format), [`client`] (the exchanges), [`lease`] (what a lease
//! holds, the result), [`config`], [`proto`] (plugin to keeper), [`keeper`] and [`renewal`].

pub mod client;
pub mod config;
pub mod error;
pub mod keeper;
pub mod lease;
pub mod message;
pub mod proto;
pub mod renewal;

use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::RunResult;
use berth_cni::{CniError, CniResult, Code};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use client::{Client, Identity};
use config::DhcpConf;
use error::{DhcpError, KeeperCode};
use lease::{Endpoint, Lease, Owner, Pending};
use proto::Ask;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

pub struct Dhcp;

impl Plugin for Dhcp {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let conf = DhcpConf::parse(req)?;
        let netns = req.netns_path()?;
        let attempt = client::random_u64();
        let lease = obtain(req, &conf, netns, attempt)?;
        let result = lease.result();
        hand_over(&conf, &lease, attempt)?;
        Ok(result)
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        let conf = DhcpConf::parse(req)?;
        Ok(proto::ask(&conf.socket, &Ask::Release { key: owner(req, &conf).key() }, true)?)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = DhcpConf::parse(req)?;
        Ok(proto::ask(&conf.socket, &Ask::Check { key: owner(req, &conf).key() }, true)?)
    }

    fn status(&self, req: &Request) -> CniResult<()> {
        let conf = DhcpConf::parse(req)?;
        match proto::ask(&conf.socket, &Ask::Status { network: conf.network.clone() }, false) {
            Ok(()) => Ok(()),
            Err(e @ DhcpError::KeeperUnreachable { .. }) => Err(CniError::caused_by(Code::NotAvailable, &e)),
            Err(e @ DhcpError::Keeper { code: KeeperCode::NotRenewed, .. }) => {
                Err(CniError::caused_by(Code::LimitedConnectivity, &e))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn gc(&self, req: &Request) -> CniResult<()> {
        let conf = DhcpConf::parse(req)?;
        let keep = berth_ipam::config::valid_attachments(&req.conf)?
            .into_iter()
            .map(|a| Owner { network: conf.network.clone(), container_id: a.container_id, ifname: a.ifname }.key())
            .collect();
        Ok(proto::ask(&conf.socket, &Ask::Gc { network: conf.network.clone(), keep }, true)?)
    }
}

fn owner(req: &Request, conf: &DhcpConf) -> Owner {
    Owner { network: conf.network.clone(), container_id: req.container_id.clone(), ifname: req.ifname.clone() }
}

/// How long ADD waits for a new link to be operational (its carrier seen to by the kernel: a
/// veth's peer up, a macvlan's parent) before it sends anyway: what is sent before is lost.
const CARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn wait_until_running(nl: &mut Netlink, index: u32, wait: std::time::Duration) -> Result<(), DhcpError> {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if nl.link_by_index(index)?.is_some_and(|l| l.carrier && l.running) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// Asks the keeper to hold the lease of the pending record `attempt`.
fn hand_over(conf: &DhcpConf, lease: &Lease, attempt: u64) -> CniResult<()> {
    match proto::ask(&conf.socket, &Ask::Hold { lease: Box::new(lease.clone()), attempt: Some(attempt) }, true) {
        Ok(()) => Ok(()),
        // The keeper answered: it gave the lease back itself, or another ADD of the
        // attachment has it, or its pending record waits for the runtime's DEL.
        Err(e @ DhcpError::Keeper { .. }) => Err(CniError::from(e).context("the lease was obtained but not kept")),
        Err(e) => {
            // Nobody would renew it: give it back rather than let it run out under the container.
            let _ = renewal::release(&lease.claim());
            Err(CniError::from(e).context("the lease was obtained but cannot be kept"))
        }
    }
}

/// How long after its pending record an ADD may still hand the lease over: the rest of the
/// exchange (within the configured timeout), then its Hold, with a wide margin for a loaded
/// machine. After that the keeper releases the address on its own.
const ABANDON_MARGIN: Duration = Duration::from_secs(60);

/// A new lease for CNI_IFNAME, from inside the container's namespace at `netns`; each address
/// is recorded with the keeper as pending (under `attempt`) before it is requested.
fn obtain(req: &Request, conf: &DhcpConf, netns: &Path, attempt: u64) -> Result<Lease, DhcpError> {
    let ns = NetNs::open(netns)?;
    let mut nl = Netlink::open_in(&ns)?;
    let link = nl.link_by_name(&req.ifname)?.ok_or_else(|| DhcpError::NoInterface { ifname: req.ifname.clone() })?;
    // As the reference plugin does: a DHCP client needs its link up, the main plugin
    // configures the rest once IPAM has answered.
    if !link.up {
        nl.set_up(link.index)?;
    }
    wait_until_running(&mut nl, link.index, conf.timeout.min(CARRIER_WAIT))?;
    let mac = link.mac.map(|m| m.0).ok_or_else(|| DhcpError::NoInterface { ifname: req.ifname.clone() })?;
    let endpoint =
        Endpoint { owner: owner(req, conf), netns: netns.to_path_buf(), netns_id: ns.id()?, mac, provide: conf.provide.clone() };
    let abandon_in = conf.timeout + proto::LONGEST_ASK + ABANDON_MARGIN;
    let mut record_pending = |address: Ipv4Addr, server: Ipv4Addr| {
        let pending =
            Pending { endpoint: endpoint.clone(), address, server, attempt, abandon_at: lease::now() + abandon_in.as_secs() };
        match proto::ask(&conf.socket, &Ask::Pending { pending: Box::new(pending) }, true) {
            Err(e) if proto::predates_pending(&e) => Ok(()),
            other => other,
        }
    };
    let client = Client::open(&ns, &req.ifname, mac)?;
    let identity = Identity { provide: &conf.provide, request: &conf.request };
    let (grant, _) = client.acquire(&identity, conf.timeout, &mut record_pending)?;
    Ok(Lease {
        endpoint,
        request: conf.request.clone(),
        address: grant.address,
        server: grant.server,
        routers: grant.routers,
        classless_routes: grant.classless_routes,
        dns: grant.dns,
        domain: grant.domain,
        priority: conf.priority,
        bound_at: lease::now(),
        t1: grant.t1,
        t2: grant.t2,
        lease_time: grant.lease_time,
    })
}
