//! A pipework wiring, done with berth's plugins as a runtime runs them: the host interface
//! decides the plugin (a Linux bridge: berth-bridge; an Open vSwitch bridge: berth-ovs; any
//! other interface: berth-macvlan), the address decides the IPAM (berth-static, none for
//! `0/0`, berth-dhcp for `dhcp`), and the firewall is never touched (`firewallBackend:
//! none`), as pipework never touches it. The attachment is cached like any other, so
//! `--remove` and `ls` find it.

use super::line::{Address, DhcpClient, HostInterface, MacSpec, Wiring};
use crate::error::{BerthError, BerthResult};
use crate::target::{resolve, Target};
use crate::Context;
use berth_cni::runtime::{Attachment, CachedAttachment};
use berth_cni::spec::ConfList;
use berth_netlink::{Link, Netlink, RouteEntry};
use berth_netns::NetNs;
use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::net::IpAddr;

/// Every pipework network's name starts so; the host interface follows.
pub const NETWORK_PREFIX: &str = "pipework-";

/// What the host interface is, which decides the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKind {
    LinuxBridge { exists: bool },
    OvsBridge { exists: bool },
    /// Any other interface (a NIC): a macvlan on it.
    Nic,
    /// `--direct-phys`: the interface itself moves into the guest.
    Direct,
}

pub fn wire(ctx: &Context, w: &Wiring) -> BerthResult<()> {
    let mut host = Netlink::open()?;
    let (name, link) = host_interface(&mut host, &w.host, w.remove)?;
    let target = resolve(&w.guest)?;
    if w.remove {
        return unwire(ctx, &name, w, &target);
    }
    let kind = if w.direct_phys { HostKind::Direct } else { host_kind(&name, link.as_ref(), w)? };
    let netns = target.netns.clone().ok_or_else(|| BerthError::NotFound(format!("{} is not running", w.guest)))?;
    let list = network(&name, link.as_ref(), &kind, w, &target, &ctx.state_dir.join("dhcp.sock"))?;
    let att = attachment(w, &target, netns)?;
    let runtime = ctx.runtime();
    if already_wired(ctx, &list, &att)? {
        println!("{} {} on {}: already wired", w.guest, w.container_if, name);
        return Ok(());
    }
    replace_default_route(&att, &w.address)?;
    let result = runtime.add(&list, &att)?;
    // The plugin's interface announced its addresses when it came up (arp_notify), as
    // pipework's `arping -A` does.
    let guest = NetNs::open(&att.netns)?;
    if let Address::Dhcp { client, options } = &w.address {
        if *client != DhcpClient::Berth {
            let resolv_conf = ctx.state_dir.join(format!("resolv.conf.{}-{}", att.container_id, w.container_if));
            super::dhcp_client::run(&guest, *client, options, &w.container_if, &resolv_conf).inspect_err(|_| {
                let _ = runtime.del(&list, &att);
            })?;
        }
    }
    let addresses: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
    println!("{} {} on {}: {}", w.guest, w.container_if, name, if addresses.is_empty() { "no address".into() } else { addresses.join(" ") });
    Ok(())
}

/// `--remove`: DEL with the network the wiring was made with (cached), so it is undone as it
/// was done whatever the host interface is now; nothing cached is nothing to undo.
fn unwire(ctx: &Context, host: &str, w: &Wiring, target: &Target) -> BerthResult<()> {
    let runtime = ctx.runtime();
    let network = format!("{NETWORK_PREFIX}{host}");
    let Some(cached) = runtime.read_cache(&network, &target.container_id, &w.container_if)? else {
        println!("{} {} on {host}: not wired", w.guest, w.container_if);
        return Ok(());
    };
    let Some(list) = cached.conflist else {
        return Err(BerthError::NotFound(format!("the cache of {} on {host} has no network configuration", w.guest)));
    };
    let att = Attachment { netns: target.netns.clone().unwrap_or_default(), ..cached.attachment };
    Ok(runtime.del(&list, &att)?)
}

/// The host interface by name (maybe not there yet, or gone into a guest when `removing`) or
/// by MAC (must be there, unless `removing`).
fn host_interface(host: &mut Netlink, spec: &HostInterface, removing: bool) -> BerthResult<(String, Option<Link>)> {
    match spec {
        HostInterface::Named(name) => {
            berth_util::names::check_interface_name(name)
                .map_err(|e| BerthError::InvalidArgument(format!("host interface {name:?}: {e}")))?;
            Ok((name.clone(), host.link_by_name(name)?))
        }
        HostInterface::ByMac(mac) => {
            let found = host.links()?.into_iter().find(|l| l.mac.is_some_and(|m| m.to_string() == *mac));
            match found {
                Some(link) => Ok((link.name.clone(), Some(link))),
                None if removing => Ok((format!("mac:{mac}"), None)),
                None => Err(BerthError::NotFound(format!("no host interface has the MAC {mac}"))),
            }
        }
    }
}

/// As pipework decides: an existing bridge of either kind; a missing `br*` or `ovs*` name is
/// a bridge to create; any other existing interface gets a macvlan.
fn host_kind(name: &str, link: Option<&Link>, w: &Wiring) -> BerthResult<HostKind> {
    let kind = match link.map(|l| l.kind.as_deref()) {
        Some(Some("bridge")) => HostKind::LinuxBridge { exists: true },
        Some(Some("openvswitch")) => HostKind::OvsBridge { exists: true },
        Some(_) => HostKind::Nic,
        None if name.starts_with("br") => HostKind::LinuxBridge { exists: false },
        None if name.starts_with("ovs") => HostKind::OvsBridge { exists: false },
        None => {
            return Err(BerthError::NotFound(format!(
                "host interface {name} does not exist (only a missing br* or ovs* name is created, as a bridge)"
            )))
        }
    };
    if w.vlan.is_some() && matches!(kind, HostKind::LinuxBridge { .. }) {
        return Err(BerthError::InvalidArgument(format!(
            "{name} is a Linux bridge: VLAN tags are for Open vSwitch bridges and physical interfaces (as in pipework)"
        )));
    }
    if w.local_if.is_some() && kind == HostKind::Nic {
        return Err(BerthError::InvalidArgument("-l names the host end of a veth: a macvlan on a NIC has none".into()));
    }
    Ok(kind)
}

/// The one-plugin network this wiring is: named after the host interface.
/// `dhcp_socket`: berth-dhcp's lease keeper for berth's wirings, kept with berth's state.
fn network(name: &str, link: Option<&Link>, kind: &HostKind, w: &Wiring, target: &Target, dhcp_socket: &std::path::Path) -> BerthResult<ConfList> {
    let mut plugin = match kind {
        HostKind::LinuxBridge { .. } => json!({ "type": "berth-bridge", "bridge": name, "firewallBackend": "none" }),
        HostKind::OvsBridge { exists } => ovs_plugin(name, *exists),
        HostKind::Nic => json!({ "type": "berth-macvlan", "master": name, "mode": "bridge" }),
        HostKind::Direct => json!({ "type": "berth-host-device", "device": name }),
    };
    // pipework copies the host interface's MTU to the container's (a moved interface keeps
    // its own).
    if let (Some(mtu), false) = (link.map(|l| l.mtu), kind == &HostKind::Direct) {
        plugin["mtu"] = json!(mtu);
    }
    if let Some(vlan) = w.vlan {
        plugin["vlan"] = json!(vlan);
    }
    if matches!(kind, HostKind::LinuxBridge { .. } | HostKind::OvsBridge { .. }) {
        if let Some(local) = w.local_if.clone().or_else(|| pipework_host_end(w, target)) {
            plugin["hostVethName"] = json!(local);
        }
    }
    if let Some(ipam) = ipam(&w.address, dhcp_socket) {
        plugin["ipam"] = ipam;
    }
    let raw = json!({ "cniVersion": "1.0.0", "name": format!("{NETWORK_PREFIX}{name}"), "plugins": [plugin] });
    Ok(serde_json::from_value(raw).map_err(|e| berth_cni::CniError::invalid_config("pipework network").with_details(e))?)
}

/// berth-ovs on `name`, reaching ovsdb-server where `ovs-vsctl` would: `$OVS_RUNDIR/db.sock`
/// when OVS_RUNDIR is set, else the plugin's default (/var/run/openvswitch/db.sock).
fn ovs_plugin(name: &str, exists: bool) -> Value {
    let mut plugin = json!({ "type": "berth-ovs", "bridge": name, "createBridge": !exists });
    if let Some(socket) = crate::netconf::ovsdb_socket_from_env() {
        plugin["ovsdbSocket"] = json!(socket);
    }
    plugin
}

/// pipework's name for the host end, `v<CONTAINER_IF>pl<PID>`, when the guest has a PID
/// and the name fits.
fn pipework_host_end(w: &Wiring, target: &Target) -> Option<String> {
    let netns = target.netns.as_ref()?.to_str()?;
    let pid = netns.strip_prefix("/proc/")?.strip_suffix("/ns/net")?;
    let name = format!("v{}pl{pid}", w.container_if);
    (name.len() <= berth_util::names::MAX_IFNAME_LEN).then_some(name)
}

/// berth-static for `IP/PREFIX[@GATEWAY]` (with an on-link route to a gateway outside the
/// prefix, as pipework adds), none for `0/0` and the clients run in the guest, berth-dhcp
/// for `dhcp`.
fn ipam(address: &Address, dhcp_socket: &std::path::Path) -> Option<Value> {
    match address {
        Address::None => None,
        Address::Dhcp { client: DhcpClient::Berth, .. } => {
            Some(json!({ "type": "berth-dhcp", "daemonSocketPath": dhcp_socket.display().to_string() }))
        }
        Address::Dhcp { .. } => None,
        Address::Static { address, gateway } => {
            let mut routes = Vec::new();
            if let Some(gw) = gateway {
                if !address.contains(gw) {
                    let host_route = if gw.is_ipv4() { format!("{gw}/32") } else { format!("{gw}/128") };
                    routes.push(json!({ "dst": host_route, "scope": 253 }));
                }
                let default = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                routes.push(json!({ "dst": default, "gw": gw.to_string() }));
            }
            Some(json!({ "type": "berth-static", "addresses": [{ "address": address.to_string() }], "routes": routes }))
        }
    }
}

fn attachment(w: &Wiring, target: &Target, netns: std::path::PathBuf) -> BerthResult<Attachment> {
    let mut args = Vec::new();
    if let Some(mac) = &w.mac {
        args.push(("MAC".to_string(), mac_address(mac)));
    }
    Ok(Attachment { container_id: target.container_id.clone(), ifname: w.container_if.clone(), netns, args, ..Default::default() })
}

/// A fixed MAC as given; `U:STRING` as pipework derives it: `02:` and the first five bytes of
/// the MD5 of STRING and a newline (`echo STRING | md5sum`), a stable locally administered
/// address.
pub fn mac_address(spec: &MacSpec) -> String {
    match spec {
        MacSpec::Fixed(mac) => mac.clone(),
        MacSpec::Derived(seed) => {
            let digest = Md5::digest(format!("{seed}\n").as_bytes());
            let tail: Vec<String> = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
            format!("02:{}", tail.join(":"))
        }
    }
}

/// The same line again changes nothing: the attachment is cached with the same network and
/// the container still has the interface. A different wiring of that interface is refused.
fn already_wired(ctx: &Context, list: &ConfList, att: &Attachment) -> BerthResult<bool> {
    let Some(cached) = ctx.runtime().read_cache(&list.name, &att.container_id, &att.ifname)? else {
        return Ok(false);
    };
    let present = Netlink::open_in(&NetNs::open(&att.netns)?)?.link_by_name(&att.ifname)?.is_some();
    if !present {
        return Ok(false);
    }
    if !same_wiring(&cached, list, att) {
        return Err(BerthError::InvalidArgument(format!(
            "{} is already wired differently to {}: remove it first (--remove)",
            att.ifname, cached.network
        )));
    }
    Ok(true)
}

fn same_wiring(cached: &CachedAttachment, list: &ConfList, att: &Attachment) -> bool {
    cached.conflist.as_ref().map(|c| &c.plugins) == Some(&list.plugins) && cached.attachment.args == att.args
}

/// `@GATEWAY` replaces the guest's default route of that family, as pipework does.
fn replace_default_route(att: &Attachment, address: &Address) -> BerthResult<()> {
    let Address::Static { gateway: Some(gw), .. } = address else { return Ok(()) };
    let mut guest = Netlink::open_in(&NetNs::open(&att.netns)?)?;
    let defaults: Vec<RouteEntry> = guest
        .routes()?
        .into_iter()
        .filter(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == gw.is_ipv4() && r.table.is_none_or(|t| t == 254))
        .collect();
    for route in defaults {
        guest.del_route(&route)?;
    }
    Ok(())
}

/// Every attachment `berth pipework` made and has not removed.
pub fn wired(ctx: &Context) -> BerthResult<Vec<CachedAttachment>> {
    let mut all: Vec<CachedAttachment> =
        ctx.runtime().cached_attachments()?.into_iter().filter(|c| c.network.starts_with(NETWORK_PREFIX)).collect();
    all.sort_by(|a, b| (&a.network, &a.attachment.container_id).cmp(&(&b.network, &b.attachment.container_id)));
    Ok(all)
}

/// The VLAN of a cached pipework attachment, from its conflist.
pub fn vlan_of(cached: &CachedAttachment) -> Option<u64> {
    cached.conflist.as_ref()?.plugins.first()?.get("vlan")?.as_u64()
}

/// The addresses of a cached attachment's result.
pub fn addresses_of(cached: &CachedAttachment) -> Vec<IpAddr> {
    berth_cni::spec::RunResult::from_value(&cached.result).map(|r| r.ips.iter().map(|ip| ip.address.addr()).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_pipeworks() {
        // echo web1 | md5sum: 66ee606d5019d75f83836eeb295c6b6f
        assert_eq!(mac_address(&MacSpec::Derived("web1".into())), "02:66:ee:60:6d:50");
        assert_eq!(mac_address(&MacSpec::Fixed("26:2e:71:98:60:8f".into())), "26:2e:71:98:60:8f");
    }

    #[test]
    fn a_gateway_outside_the_prefix_gets_an_on_link_route_first() {
        let ipam = ipam(&Address::Static { address: "10.1.0.5/24".parse().unwrap(), gateway: Some("10.9.0.1".parse().unwrap()) }, "/s".as_ref()).unwrap();
        assert_eq!(ipam["routes"][0]["dst"], "10.9.0.1/32");
        assert_eq!(ipam["routes"][1]["gw"], "10.9.0.1");
        let inside = ipam_routes("10.1.0.5/24", "10.1.0.1");
        assert_eq!(inside.len(), 1);
    }

    fn ipam_routes(address: &str, gw: &str) -> Vec<Value> {
        let ipam = ipam(&Address::Static { address: address.parse().unwrap(), gateway: Some(gw.parse().unwrap()) }, "/s".as_ref()).unwrap();
        ipam["routes"].as_array().unwrap().clone()
    }
}
