//! The container end of an attachment, whatever made the link (veth, macvlan, ...): its MAC
//! from the configuration, addresses and routes from the IPAM result, and the CHECK of all
//! that against a prevResult (the reference plugins' `ipam.ConfigureIface`).

use crate::error::{CniError, CniResult, Code};
use berth_netlink::{Link, MacAddr, Netlink, RouteEntry};
use berth_netns::NetNs;
use crate::skel::Request;
use crate::spec::RunResult;
use berth_netns::sysctl;
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
    let conf = |key: &str| format!("net/ipv6/conf/{}/{key}", link.name);
    ns.run(|| -> Result<(), sysctl::SysctlError> {
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
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a: tiny, stable across Rust releases (DefaultHasher is not promised to be).
    let mut hash: u32 = 0x811c_9dc5;
    for byte in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("veth{hash:08x}")
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
}
