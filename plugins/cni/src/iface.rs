//! The container end of an attachment, whatever made the link (veth, macvlan, ...): its MAC
//! from the configuration, addresses and routes from the IPAM result, and the CHECK of all
//! that against a prevResult (the reference plugins' `ipam.ConfigureIface`). Also the veth
//! pair of the plugins that make one (berth-bridge, berth-ovs): its name, its creation and
//! its teardown; and how DEL deletes a link ([`delete_link`]).

use crate::error::{CniError, CniResult, Code};
use crate::rollback::Rollback;
use crate::skel::Request;
use crate::spec::RunResult;
use berth_netlink::{Link, MacAddr, Netlink, RouteEntry, VethPeer};
use berth_netns::sysctl;
use berth_netns::NetNs;
use berth_util::hash::fnv1a32;
use std::net::IpAddr;

/// Puts the result's addresses on `link` (in `ns`), brings it up, adds the result's routes
/// (without a gateway of their own, through the gateway of the same family). With
/// `enable_dad` false, IPv6 duplicate address detection is turned off first so the
/// addresses are usable at once.
///
/// IPv6 is on for the interface exactly when the result gives it an IPv6 address, as Docker
/// does since CVE-2024-32473: an interface on an IPv4-only network would otherwise get a
/// link-local address, join multicast groups and take router advertisements, so it could be
/// reached and misrouted over IPv6 nobody configured. It also keeps a new container quiet:
/// its router solicitations and MLD reports are flooded to every port of a bridge, work that
/// grows with the number of containers there.
///
/// The price is a sysctl written in every container's namespace: /proc/sys/net holds one
/// `ipv6` entry per namespace that has looked one up, all with that name, and a lookup
/// compares them in turn, so every later path through `net/ipv6`, in any namespace, costs
/// more with each container (50 us with 600 here, measured).
pub fn configure(ns: &NetNs, nl: &mut Netlink, link: &Link, result: &RunResult, enable_dad: bool) -> CniResult<()> {
    let has_v6 = result.ips.iter().any(|ip| ip.address.addr().is_ipv6());
    let has_v4 = result.ips.iter().any(|ip| ip.address.addr().is_ipv4());
    let conf = |key: &str| format!("net/ipv6/conf/{}/{key}", link.name);
    ns.run(|| -> Result<(), sysctl::SysctlError> {
        if has_v4 {
            // The kernel announces the addresses (gratuitous ARP) when the link comes up
            // below, as the reference plugins do with arping: neighbours that knew the
            // address at another MAC learn the new one at once. No packet socket of ours,
            // whose release waits for an RCU grace period (8-16 ms measured).
            sysctl::set(&format!("net/ipv4/conf/{}/arp_notify", link.name), "1")?;
        }
        if !has_v6 {
            // Best effort: a kernel without IPv6 has nothing to switch off.
            let _ = sysctl::set(&conf("disable_ipv6"), "1");
            return Ok(());
        }
        sysctl::set(&conf("disable_ipv6"), "0")?;
        if !enable_dad {
            sysctl::set(&conf("accept_dad"), "0")?;
        }
        Ok(())
    })??;
    for ip in &result.ips {
        nl.add_address(link.index, ip.address)?;
    }
    nl.set_up(link.index)?;
    for route in &result.routes {
        nl.add_route(&RouteEntry {
            dst: route.dst,
            gateway: route.gw.or_else(|| gateway_for(result, route.dst.addr())),
            oif: Some(link.index),
            table: route.table,
            priority: route.priority,
            mtu: route.mtu,
            scope: route.scope,
        })?;
    }
    Ok(())
}

/// The gateway of the result's first address of `dst`'s family.
pub fn gateway_for(result: &RunResult, dst: IpAddr) -> Option<IpAddr> {
    result.ips.iter().filter(|ip| ip.address.addr().is_ipv4() == dst.is_ipv4()).find_map(|ip| ip.gateway)
}

pub fn mac_string(mac: Option<MacAddr>) -> String {
    mac.map(|m| m.to_string()).unwrap_or_default()
}

/// CHECK's prevResult, without which it has nothing to compare.
pub fn prev_result(req: &Request) -> CniResult<RunResult> {
    req.conf.prev_result()?.ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))
}

/// The container interface CHECK found, for the plugin's own checks after the shared ones.
pub struct CheckedInterface {
    pub ns: NetNs,
    /// A socket in `ns`.
    pub nl: Netlink,
    pub link: Link,
    /// The interface's position in prevResult's `interfaces`.
    pub index: usize,
}

/// CHECK's opening, the same in every plugin: the container has CNI_IFNAME, a link of `kind`
/// (a "veth", a "macvlan"), and it is as prevResult's interface whose `sandbox` is CNI_NETNS
/// and whose `name` is CNI_IFNAME (the spec's rule) says: MAC, addresses, routes ([`check`]).
pub fn check_container_interface(req: &Request, prev: &RunResult, kind: &str) -> CniResult<CheckedInterface> {
    let mismatch = |what: String| CniError::new(Code::Kernel, what);
    let netns = req.netns_path()?;
    let ns = NetNs::open(netns)?;
    let mut nl = Netlink::open_in(&ns)?;
    let link = nl.link_by_name(&req.ifname)?.ok_or_else(|| mismatch(format!("{} is missing from the container", req.ifname)))?;
    if link.kind.as_deref() != Some(kind) {
        return Err(mismatch(format!("{} is a {:?} link, not a {kind}", req.ifname, link.kind)));
    }
    let sandbox = netns.display().to_string();
    let index = prev
        .interfaces
        .iter()
        .position(|i| i.name == req.ifname && i.sandbox == sandbox)
        .ok_or_else(|| mismatch(format!("prevResult has no interface {} in {sandbox}", req.ifname)))?;
    check(&mut nl, &link, prev, index)?;
    Ok(CheckedInterface { ns, nl, link, index })
}

/// CHECK of what prevResult says about the container interface `link`: its MAC, its
/// addresses, the routes. `index` is the interface's position in `prev.interfaces`.
pub fn check(nl: &mut Netlink, link: &Link, prev: &RunResult, index: usize) -> CniResult<()> {
    let mismatch = |what: String| CniError::new(Code::Kernel, what);
    let want_mac = &prev.interfaces[index].mac;
    if !want_mac.is_empty() && mac_string(link.mac) != want_mac.to_lowercase() {
        return Err(mismatch(format!("{} has MAC {}, prevResult says {want_mac}", link.name, mac_string(link.mac))));
    }
    let addresses = nl.addresses(Some(link.index))?;
    for ip in prev.ips.iter().filter(|ip| ip.interface.is_none_or(|i| i == index)) {
        if !addresses.iter().any(|(_, a)| *a == ip.address) {
            return Err(mismatch(format!("{} has no address {}", link.name, ip.address)));
        }
    }
    let routes = nl.routes()?;
    for route in &prev.routes {
        let found = routes.iter().any(|r| {
            r.dst == route.dst && (route.gw.is_none() || r.gateway == route.gw || r.gateway == gateway_for(prev, route.dst.addr()))
        });
        if !found {
            return Err(mismatch(format!("route to {} is missing in the container", route.dst)));
        }
    }
    Ok(())
}

/// The host end's name of a container's veth pair: stable for a container and interface, so
/// a retried ADD or a DEL can find it without the container's namespace.
///
/// Host veths already made carry these names: the hash must never change.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // The NUL keeps ("ab", "c") and ("a", "bc") apart.
    let hash = fnv1a32([container_id.as_bytes(), &[0], ifname.as_bytes()]);
    format!("veth{hash:08x}")
}

/// The host end's name for this request: the config's `hostVethName` (a berth extension, for
/// `berth pipework -l`), else [`host_veth_name`]. ADD, CHECK and DEL read the same config, so
/// they agree.
pub fn host_end_name(req: &Request) -> CniResult<String> {
    match req.conf.extra.get("hostVethName") {
        None | Some(serde_json::Value::Null) => Ok(host_veth_name(&req.container_id, &req.ifname)),
        Some(serde_json::Value::String(name)) => {
            berth_util::names::check_interface_name(name)
                .map_err(|e| CniError::invalid_config(format!("hostVethName {name:?}: {e}")))?;
            Ok(name.clone())
        }
        Some(other) => Err(CniError::invalid_config(format!("hostVethName: {other} is not a string"))),
    }
}

/// How a container's veth pair is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct VethSpec {
    /// The container end's MAC; the kernel picks one when `None`.
    pub container_mac: Option<MacAddr>,
    /// Of both ends.
    pub mtu: Option<u32>,
    /// The (Linux) bridge the host end is made a port of.
    pub master: Option<u32>,
}

/// Both ends of a container's veth pair.
#[derive(Debug, Clone)]
pub struct Veth {
    /// [`host_veth_name`], in the host namespace.
    pub host: Link,
    /// CNI_IFNAME, in the container's namespace.
    pub container: Link,
}

/// Creates the container's veth pair: the host end through `host`, the container's end
/// directly in `ns` (read back through `container`). Its removal is pushed on `undo`.
pub fn create_veth<'a>(
    req: &'a Request,
    ns: &NetNs,
    host: &mut Netlink,
    container: &mut Netlink,
    spec: &VethSpec,
    undo: &mut Rollback<'a>,
) -> CniResult<Veth> {
    let name = host_end_name(req)?;
    if let Some(stale) = host.link_by_name(&name)? {
        // The container has no such interface (`require_unused_name`), so this is left by an
        // ADD killed half-way.
        host.delete_link(stale.index)?;
    }
    // Pushed before the request: one that fails half-way may still leave the pair behind.
    let undo_name = name.clone();
    undo.push("deleting the veth", move || remove_host_veth(&undo_name));
    let peer = VethPeer { name: &req.ifname, netns: Some(ns), mac: spec.container_mac };
    let host_end = host.create_veth(&name, &peer, spec.mtu, spec.master)?;
    let container_end = container
        .link_by_name(&req.ifname)?
        .ok_or_else(|| CniError::kernel(format!("{} did not appear in the container", req.ifname), "missing after create"))?;
    Ok(Veth { host: host_end, container: container_end })
}

/// DEL of a container's veth pair; deleting either end removes both. Through the container's
/// end when its namespace still exists and has it, else through the host end, if the
/// namespace's removal or an earlier DEL left it. Succeeds when both are gone already.
pub fn remove_veth(req: &Request) -> CniResult<()> {
    if let Some(ns) = req.netns.as_ref().and_then(|p| NetNs::open(p).ok()) {
        let mut nl = Netlink::open_in(&ns)?;
        if let Some(link) = nl.link_by_name(&req.ifname)? {
            if link.kind.as_deref() == Some("veth") {
                delete_link(req, nl, link.index)?;
                return Ok(());
            }
        }
    }
    let mut host = Netlink::open()?;
    if let Some(veth) = host.link_by_name(&host_end_name(req)?)? {
        delete_link(req, host, veth.index)?;
    }
    Ok(())
}

/// The host end of a failed ADD's veth, if there is one (the container's end goes with it).
fn remove_host_veth(name: &str) -> CniResult<()> {
    let mut host = Netlink::open()?;
    if let Some(veth) = host.link_by_name(name)? {
        host.delete_link(veth.index)?;
    }
    Ok(())
}

/// Deletes link `index` through `nl` for a DEL; `Ok(false)` when it was gone already. Returns
/// before the kernel has freed the link only when the plugin's `main` chose that
/// ([`crate::skel::Options::return_before_kernel_frees_links`]); then `nl`, and every file the
/// process has open, stay open in a detached process until the kernel is done.
pub fn delete_link(req: &Request, mut nl: Netlink, index: u32) -> CniResult<bool> {
    let deleted =
        if req.options.return_before_kernel_frees_links { nl.delete_link_detached(index)? } else { nl.delete_link(index)? };
    Ok(deleted)
}

/// The MAC asked for the container interface, by precedence: CNI_ARGS `MAC=`, the `mac`
/// capability (runtimeConfig.mac), `args.cni.mac`, the plugin's own `mac` key.
pub fn requested_mac(req: &Request, conf_mac: Option<&str>) -> CniResult<Option<MacAddr>> {
    let args_cni_mac = req.conf.args.as_ref().and_then(|a| a.pointer("/cni/mac")).and_then(serde_json::Value::as_str);
    let chosen = match req.arg("MAC") {
        Some(mac) => Some(mac.to_string()),
        None => req.conf.runtime::<String>("mac")?.or_else(|| args_cni_mac.or(conf_mac).map(str::to_string)),
    };
    Ok(chosen.map(|m| m.parse()).transpose()?)
}

/// Fails (code 100) when the container already has an interface named CNI_IFNAME. Checked
/// before anything is made, so the failure undoes nothing of the existing interface.
pub fn require_unused_name(container: &mut Netlink, req: &Request) -> CniResult<()> {
    if container.link_by_name(&req.ifname)?.is_some() {
        return Err(CniError::new(
            Code::Kernel,
            format!("container {} already has an interface named {}", req.container_id, req.ifname),
        ));
    }
    Ok(())
}

/// The ADD result: the host-side interfaces (a bridge, a host veth), then the container's
/// interface `link` in `ns`, which carries every address of `configured`; its routes; DNS from
/// IPAM, else from the configuration's `dns`.
pub fn add_result(req: &Request, ns: &NetNs, link: &Link, host_side: Vec<crate::spec::Interface>, configured: RunResult) -> RunResult {
    let mut result = RunResult { cni_version: req.conf.cni_version.clone(), interfaces: host_side, ..Default::default() };
    let index = result.push_interface(crate::spec::Interface {
        name: link.name.clone(),
        mac: mac_string(link.mac),
        sandbox: ns.path().display().to_string(),
        ..Default::default()
    });
    result.ips = configured.ips.into_iter().map(|ip| crate::spec::IpConfig { interface: Some(index), ..ip }).collect();
    result.routes = configured.routes;
    result.dns = if configured.dns.is_empty() { req.conf.dns.clone().unwrap_or_default() } else { configured.dns };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_and_short() {
        let a = host_veth_name("c1", "eth0");
        assert_eq!(a, host_veth_name("c1", "eth0"));
        assert_ne!(a, host_veth_name("c1", "eth1"));
        assert_ne!(a, host_veth_name("c2", "eth0"));
        assert!(a.len() <= 15);
    }

    #[test]
    fn host_veth_names_never_change() {
        // Computed by the hand-written FNV-1a this replaced: veths on running hosts have them.
        assert_eq!(host_veth_name("c1", "eth0"), "veth61fd7022");
        assert_eq!(host_veth_name("5f3c2a9e1b7d", "net1"), "veth212e2743");
    }
}
