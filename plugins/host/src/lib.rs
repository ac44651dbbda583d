//! `berth-host`: Docker's `--network host` as a CNI plugin. The container shares the host's
//! network namespace, so ADD wires nothing: it checks that CNI_NETNS *is* the host's namespace
//! (the one the plugin runs in) and reports the host interfaces the config names, with their
//! addresses and the default gateway through them. DEL changes nothing.
//!
//! Config: `"interfaces": ["eth0", ...]` (optional; default: the interfaces that carry a
//! default route).

use berth_cni::error::{CniError, CniResult, Code};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{decode_plugin_conf, Interface, IpConfig, RunResult};
use serde::Deserialize;

pub struct HostPlugin;

#[derive(Deserialize)]
struct HostConf {
    #[serde(default)]
    interfaces: Vec<String>,
}

impl HostPlugin {
    fn require_host_namespace(req: &Request) -> CniResult<NetNs> {
        let ns = NetNs::open(req.netns_path()?)?;
        if ns.id()? != NetNs::current()?.id()? {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("berth-host needs the container in the host's network namespace, but CNI_NETNS is {}", ns.path().display()),
            ));
        }
        Ok(ns)
    }

    fn describe(req: &Request, ns: &NetNs) -> CniResult<RunResult> {
        let conf: HostConf = decode_plugin_conf(&req.stdin)?;
        let mut nl = Netlink::open()?;
        let routes = nl.routes()?;
        let default_routes: Vec<_> = routes.iter().filter(|r| r.dst.prefix_len() == 0).collect();
        let links = if conf.interfaces.is_empty() {
            let mut found = Vec::new();
            for r in &default_routes {
                if let Some(link) = r.oif.map(|i| nl.link_by_index(i)).transpose()?.flatten() {
                    if !found.iter().any(|l: &berth_netlink::Link| l.index == link.index) {
                        found.push(link);
                    }
                }
            }
            found
        } else {
            conf.interfaces
                .iter()
                .map(|name| {
                    nl.link_by_name(name)?
                        .ok_or_else(|| CniError::invalid_config(format!("interfaces: the host has no interface {name:?}")))
                })
                .collect::<CniResult<_>>()?
        };
        let addresses = nl.addresses(None)?;
        let mut result = RunResult::default();
        for link in links {
            let index = result.push_interface(Interface {
                name: link.name.clone(),
                mac: berth_cni::iface::mac_string(link.mac),
                sandbox: ns.path().display().to_string(),
                ..Default::default()
            });
            for (_, addr) in addresses.iter().filter(|(i, _)| *i == link.index) {
                let gateway = default_routes
                    .iter()
                    .find(|r| r.oif == Some(link.index) && r.dst.addr().is_ipv4() == addr.addr().is_ipv4())
                    .and_then(|r| r.gateway);
                result.ips.push(IpConfig { interface: Some(index), address: *addr, gateway });
            }
        }
        Ok(result)
    }
}

impl Plugin for HostPlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let ns = Self::require_host_namespace(req)?;
        Self::describe(req, &ns)
    }

    fn del(&self, _req: &Request) -> CniResult<()> {
        Ok(())
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let ns = Self::require_host_namespace(req)?;
        Self::describe(req, &ns).map(drop)
    }
}
