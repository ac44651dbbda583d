//! `berth-dns`: a chained plugin, after berth-bridge (or any plugin whose result gives the
//! container's addresses and their gateway), that gives containers names on their network.
//! ADD records the container's names (CNI_ARGS `K8S_POD_NAME`, the `aliases` capability) and
//! addresses in the network's records, makes the network's DNS server ([`server`], this same
//! binary run as `berth-dns serve`) read them, starting it on the gateway addresses when it is
//! not running, and returns the result with `dns.nameservers` = those gateway addresses and
//! `dns.search` = the network's domain, which the runtime writes into the container's
//! resolv.conf. DEL and GC remove records; the network's last record going stops its server.
//! A name a live container of the network holds is refused to another.
//!
//! podman's CNI backend treats a network as having DNS (`dns_enabled`, `--network-alias`)
//! only when its conflist has a plugin of type `dnsname`: berth-dns takes dnsname's keys
//! (`domainName`, `capabilities.aliases`) and may be installed under that name (README).

pub mod config;
mod control;
pub mod error;
pub mod server;
pub mod store;
pub mod wire;
pub mod zone;

pub use config::DnsConf;
pub use error::{DnsError, DnsResult};

use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::RunResult;
use berth_cni::CniResult;
use std::net::IpAddr;
use store::{Entry, NetworkState};

pub struct DnsPlugin;

impl Plugin for DnsPlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let conf = DnsConf::parse(req)?;
        let mut result = req.conf.prev_result()?.ok_or_else(|| {
            DnsError::config("prevResult", "is required: chain berth-dns after the plugin that gives the container its addresses")
        })?;
        let gateways = gateways(&result);
        if gateways.is_empty() {
            let why = "has no gateway address: the DNS server listens on the network's gateway (berth-bridge with isGateway)";
            return Err(DnsError::config("prevResult", why).into());
        }
        let entry = Entry {
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns_path()?.clone(),
            names: config::container_names(req, &conf.network)?,
            ips: container_ips(&result),
        };
        register(&conf, entry, &gateways)?;
        result.dns.nameservers = gateways.iter().map(IpAddr::to_string).collect();
        if !result.dns.search.contains(&conf.domain) {
            result.dns.search.insert(0, conf.domain.clone());
        }
        Ok(result)
    }

    /// Removes the attachment's names; succeeds when they are gone already.
    fn del(&self, req: &Request) -> CniResult<()> {
        let conf = DnsConf::parse(req)?;
        Ok(forget(&conf, |e| e.is(&req.container_id, &req.ifname))?)
    }

    /// The attachment's names are recorded as the request gives them and the server answers.
    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = DnsConf::parse(req)?;
        let names = config::container_names(req, &conf.network)?;
        let state = NetworkState::load(&conf.dir)?.unwrap_or_default();
        let entry = state.entries.iter().find(|e| e.is(&req.container_id, &req.ifname));
        match entry {
            None => return Err(DnsError::Check(format!("{} has no names on network {}", req.container_id, conf.network)).into()),
            Some(e) if e.names != names => {
                let msg = format!("{} answers to {:?} on network {}, not {names:?}", req.container_id, e.names, conf.network);
                return Err(DnsError::Check(msg).into());
            }
            Some(_) => {}
        }
        match control::ask(&conf.dir, "ping")? {
            Some(reply) if reply.starts_with("ok") => Ok(()),
            _ => Err(DnsError::Check(format!("the DNS server of network {} is not running", conf.network)).into()),
        }
    }

    /// Removes the names of the network's attachments not in `cni.dev/valid-attachments`.
    fn gc(&self, req: &Request) -> CniResult<()> {
        let conf = DnsConf::parse(req)?;
        let keep = berth_ipam::config::valid_attachments(&req.conf)?;
        Ok(forget(&conf, |e| !keep.iter().any(|k| e.is(&k.container_id, &k.ifname)))?)
    }
}

/// The gateways of the result's addresses, each once: where the network's server listens.
fn gateways(result: &RunResult) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for gw in result.ips.iter().filter_map(|ip| ip.gateway) {
        if !out.contains(&gw) {
            out.push(gw);
        }
    }
    out
}

/// The container's addresses: those on an interface inside its namespace, or on none named.
fn container_ips(result: &RunResult) -> Vec<IpAddr> {
    let in_container = |i: usize| result.interfaces.get(i).is_some_and(|iface| !iface.sandbox.is_empty());
    result.ips.iter().filter(|ip| ip.interface.is_none_or(in_container)).map(|ip| ip.address.addr()).collect()
}

/// Records `entry` under the network's lock and has the server answer for it; on failure the
/// records are as they were.
fn register(conf: &DnsConf, entry: Entry, gateways: &[IpAddr]) -> DnsResult<()> {
    let _lock = store::lock(&conf.dir)?;
    let before = NetworkState::load(&conf.dir)?;
    let mut state = before.clone().unwrap_or_else(|| NetworkState { port: 53, ..Default::default() });
    if let Some((name, owner)) = state.conflict(&entry.container_id, &entry.ifname, &entry.names) {
        let (name, owner) = (name.to_string(), owner.container_id.clone());
        return Err(DnsError::NameTaken { name, network: conf.network.clone(), owner });
    }
    state.domain = conf.domain.clone();
    state.resolv_conf = conf.resolv_conf.clone();
    state.upsert(entry);
    let new_addresses: Vec<IpAddr> = gateways.iter().filter(|g| !state.listen.contains(g)).copied().collect();
    if !new_addresses.is_empty() {
        // The server binds its addresses when it starts: a new one means a new server.
        control::stop(&conf.dir)?;
        state.listen.extend(new_addresses);
    }
    state.save(&conf.dir)?;
    control::reload_or_start(&conf.dir).inspect_err(|_| {
        let _ = match &before {
            Some(old) => old.save(&conf.dir),
            None => NetworkState::remove(&conf.dir),
        };
    })
}

/// Drops the entries `doomed` picks; the last one going stops the server and removes the
/// records. Nothing to do when the network has no folder.
fn forget(conf: &DnsConf, doomed: impl Fn(&Entry) -> bool) -> DnsResult<()> {
    let Some(_lock) = store::lock_existing(&conf.dir)? else { return Ok(()) };
    let Some(mut state) = NetworkState::load(&conf.dir)? else { return control::stop(&conf.dir) };
    let before = state.entries.len();
    state.entries.retain(|e| !doomed(e));
    if state.entries.is_empty() {
        control::stop(&conf.dir)?;
        return NetworkState::remove(&conf.dir);
    }
    if state.entries.len() != before {
        state.save(&conf.dir)?;
        control::reload_if_running(&conf.dir)?;
    }
    Ok(())
}
