//! berth-bridge: attaches a container to a Linux bridge in the host namespace through a veth
//! pair, with addresses and routes from the IPAM plugin, and its firewall side (masquerade,
//! the `portMappings` capability, isolation between networks) through `plugins::firewall`.

mod config;

pub use config::BridgeConf;

use berth_netlink::{Link, Netlink, PortFlag, VethPeer};
use berth_netns::NetNs;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{Interface, Route, RunResult};
use berth_cni::iface;
use berth_cni::ipam::Ipam;
use berth_firewall as firewall;
use berth_cni::spec::PortMapping;
use berth_netns::sysctl;
use berth_cni::{CniError, CniResult, Code};
use ipnet::IpNet;
use std::net::IpAddr;

pub struct BridgePlugin;

/// berth's own IPAM plugins run in-process; any other `ipam.type` is exec'd from CNI_PATH.
const IPAM: Ipam = Ipam::new(berth_ipam::BUILTINS);

pub fn run() -> ! {
    berth_cni::skel::run_main(&BridgePlugin)
}

/// The host end's name (shared with berth-ovs, which names its OVS port after it).
pub use berth_cni::iface::host_veth_name;

impl Plugin for BridgePlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let conf = BridgeConf::parse(req)?;
        let ns = NetNs::open(req.netns_path()?)?;
        let mut container = Netlink::open_in(&ns)?;
        iface::require_unused_name(&mut container, req)?;
        let mut host = Netlink::open()?;
        let bridge = host.ensure_bridge(&conf.bridge, conf.mtu)?;
        if conf.promisc_mode && !bridge.promisc {
            host.set_promisc(bridge.index, true)?;
        }
        if let Some(mac) = bridge.mac {
            // A bridge whose MAC was never set takes its lowest port's, which changes when that
            // container leaves, and its neighbours lose the gateway until their ARP entries
            // expire. Setting it (to what it is) pins it, as the reference plugin does.
            host.set_mac(bridge.index, mac)?;
        }
        // Without IPAM the bridge is layer 2 only, as in the reference plugin.
        let with_ipam = conf.ipam_configured(req);
        let allocated = if with_ipam { IPAM.add(req)? } else { RunResult::default() };
        match attach(req, &conf, &ns, &mut host, &mut container, &bridge, allocated) {
            Ok(result) => Ok(result),
            Err(e) => {
                // Leave nothing half-made: the veth (if any) and the address go.
                if let Ok(Some(veth)) = host.link_by_name(&host_veth_name(&req.container_id, &req.ifname)) {
                    let _ = host.delete_link(veth.index);
                }
                if with_ipam {
                    IPAM.release_after_failed_add(req);
                }
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        let conf = BridgeConf::parse(req)?;
        if conf.ipam_configured(req) {
            IPAM.del(req)?;
        }
        // Without prevResult the firewall finds the container's entries by their owner tag.
        let addresses: Vec<IpAddr> =
            req.conf.prev_result()?.map(|prev| prev.ips.iter().map(|ip| ip.address.addr()).collect()).unwrap_or_default();
        let port_mappings = port_mappings(req)?;
        let fw = firewall::backend(&conf.firewall_backend)?;
        fw.del(&firewall_attachment(req, &conf, &addresses, &port_mappings))?;
        // With nftables, `fw` still holds its nfnetlink socket: the process that deletes the
        // link inherits it, so the grace period its release waits for is not ours either.
        delete_interface(req)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = BridgeConf::parse(req)?;
        let prev = req
            .conf
            .prev_result()?
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        if conf.ipam_configured(req) {
            IPAM.check(req)?;
        }
        check_attachment(req, &conf, &prev)?;
        let addresses: Vec<IpAddr> = prev.ips.iter().map(|ip| ip.address.addr()).collect();
        let port_mappings = port_mappings(req)?;
        firewall::backend(&conf.firewall_backend)?.check(&firewall_attachment(req, &conf, &addresses, &port_mappings))
    }

    /// Ready for ADDs when the IPAM plugin is (e.g. its ranges are not exhausted).
    fn status(&self, req: &Request) -> CniResult<()> {
        let conf = BridgeConf::parse(req)?;
        if conf.ipam_configured(req) {
            IPAM.forward(req)?;
        }
        Ok(())
    }

    /// Releases addresses, removes the veths and firewall entries of every attachment of this
    /// network that is not in `cni.dev/valid-attachments`.
    fn gc(&self, req: &Request) -> CniResult<()> {
        let conf = BridgeConf::parse(req)?;
        let keep = valid_attachments(req)?;
        if conf.ipam_configured(req) {
            IPAM.forward(req)?;
        }
        firewall::backend(&conf.firewall_backend)?.gc(&req.conf.name, &keep)?;
        let mut host = Netlink::open()?;
        let Some(bridge) = host.link_by_name(&conf.bridge)? else { return Ok(()) };
        for port in host.links_detailed()? {
            let owner = port.alias.as_deref().and_then(parse_veth_alias);
            let Some((container_id, ifname)) = owner else { continue };
            let kept = keep.iter().any(|(id, name)| *id == container_id && *name == ifname);
            if port.link.master == Some(bridge.index) && !kept {
                host.delete_link(port.link.index)?;
            }
        }
        Ok(())
    }
}

/// Deletes the container's interface; either end of a veth takes the other with it. Uses the
/// container's end when its namespace still exists, else looks for a host end left behind.
/// Returns once both ends are gone, not once the kernel has freed them
/// ([`Netlink::delete_link_detached`]).
fn delete_interface(req: &Request) -> CniResult<()> {
    if let Some(ns) = req.netns.as_ref().and_then(|p| NetNs::open(p).ok()) {
        let mut nl = Netlink::open_in(&ns)?;
        if let Some(link) = nl.link_by_name(&req.ifname)? {
            nl.delete_link_detached(link.index)?;
            return Ok(());
        }
    }
    let mut host = Netlink::open()?;
    if let Some(veth) = host.link_by_name(&host_veth_name(&req.container_id, &req.ifname))? {
        host.delete_link_detached(veth.index)?;
    }
    Ok(())
}

/// The host end's alias names its owner, so GC can tell berth's veths and whose they are.
fn veth_alias(container_id: &str, ifname: &str) -> String {
    format!("berth-bridge id={container_id} if={ifname}")
}

fn parse_veth_alias(alias: &str) -> Option<(String, String)> {
    let rest = alias.strip_prefix("berth-bridge id=")?;
    let (id, ifname) = rest.rsplit_once(" if=")?;
    Some((id.to_string(), ifname.to_string()))
}

/// The `portMappings` capability.
fn port_mappings(req: &Request) -> CniResult<Vec<PortMapping>> {
    Ok(req.conf.runtime::<Vec<PortMapping>>("portMappings")?.unwrap_or_default())
}

fn firewall_attachment<'a>(
    req: &'a Request,
    conf: &'a BridgeConf,
    addresses: &'a [IpAddr],
    port_mappings: &'a [PortMapping],
) -> firewall::Attachment<'a> {
    firewall::Attachment {
        network: &req.conf.name,
        container_id: &req.container_id,
        ifname: &req.ifname,
        bridge: &conf.bridge,
        addresses,
        masquerade: conf.ip_masq,
        isolate: conf.isolate_networks,
        port_mappings,
    }
}

/// CNI 1.1 GC's `cni.dev/valid-attachments`, as (container ID, ifname).
fn valid_attachments(req: &Request) -> CniResult<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Valid {
        #[serde(rename = "containerID")]
        container_id: String,
        ifname: String,
    }
    let raw = req
        .conf
        .extra
        .get("cni.dev/valid-attachments")
        .ok_or_else(|| CniError::invalid_config("GC needs cni.dev/valid-attachments (an empty list removes everything)"))?;
    let list: Vec<Valid> = serde_json::from_value(raw.clone())
        .map_err(|e| CniError::invalid_config("cni.dev/valid-attachments is malformed").with_details(e))?;
    Ok(list.into_iter().map(|v| (v.container_id, v.ifname)).collect())
}

impl BridgeConf {
    fn ipam_configured(&self, req: &Request) -> bool {
        req.conf.ipam.as_ref().is_some_and(|i| !i.plugin_type.is_empty())
    }
}

fn attach(
    req: &Request,
    conf: &BridgeConf,
    ns: &NetNs,
    host: &mut Netlink,
    container: &mut Netlink,
    bridge: &Link,
    allocated: RunResult,
) -> CniResult<RunResult> {
    let veth_name = host_veth_name(&req.container_id, &req.ifname);
    if let Some(stale) = host.link_by_name(&veth_name)? {
        // The container has no such interface, so this is left by an ADD killed half-way.
        host.delete_link(stale.index)?;
    }
    let peer = VethPeer { name: &req.ifname, netns: Some(ns), mac: conf.container_mac };
    let veth = host.create_veth(&veth_name, &peer, conf.mtu.or(Some(bridge.mtu)), Some(bridge.index))?;
    if conf.hairpin_mode {
        host.set_hairpin(veth.index, true)?;
    }
    if !conf.icc {
        host.set_port_flag(veth.index, PortFlag::Isolated, true)?;
    }
    host.set_alias(veth.index, &veth_alias(&req.container_id, &req.ifname))?;
    // A bridge port needs no IPv6 of its own. Without this every port gets a link-local
    // address and an fe80::/64 route, and each ADD walks all the others' (the cost of an ADD
    // grew with the number of containers).
    // Best effort: a kernel without IPv6 has nothing to switch off.
    let _ = sysctl::set(&format!("net/ipv6/conf/{}/disable_ipv6", veth.name), "1");
    host.set_up(veth.index)?;

    let link = container
        .link_by_name(&req.ifname)?
        .ok_or_else(|| CniError::kernel(format!("{} did not appear in the container", req.ifname), "missing after create"))?;
    let mut configured = allocated;
    if conf.is_default_gateway {
        for ip in configured.ips.clone().iter().filter(|ip| ip.gateway.is_some()) {
            let any = if ip.address.addr().is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            let dst: IpNet = any.parse().expect("literal prefix");
            if !configured.routes.iter().any(|r| r.dst == dst) {
                configured.routes.push(Route::new(dst, ip.gateway));
            }
        }
    }
    iface::configure(ns, container, &link, &configured, conf.enable_dad)?;

    if conf.is_gateway {
        set_gateway_addresses(host, conf, bridge, &configured)?;
    }
    let addresses: Vec<IpAddr> = configured.ips.iter().map(|ip| ip.address.addr()).collect();
    if !addresses.is_empty() {
        let port_mappings = port_mappings(req)?;
        firewall::backend(&conf.firewall_backend)?.add(&firewall_attachment(req, conf, &addresses, &port_mappings))?;
    }

    let host_side = vec![
        Interface { name: bridge.name.clone(), mac: iface::mac_string(bridge.mac), ..Default::default() },
        Interface { name: veth.name.clone(), mac: iface::mac_string(veth.mac), ..Default::default() },
    ];
    Ok(iface::add_result(req, ns, &link, host_side, configured))
}

/// Puts each subnet's gateway address on the bridge and turns on forwarding.
fn set_gateway_addresses(host: &mut Netlink, conf: &BridgeConf, bridge: &Link, allocated: &RunResult) -> CniResult<()> {
    let present = host.addresses(Some(bridge.index))?;
    for ip in &allocated.ips {
        let Some(gw) = ip.gateway else { continue };
        let gw_net = IpNet::new(gw, ip.address.prefix_len())
            .map_err(|e| CniError::invalid_config(format!("gateway {gw}")).with_details(e))?;
        if present.iter().any(|(_, a)| *a == gw_net) {
            continue;
        }
        for (_, other) in present.iter().filter(|(_, a)| a.trunc() == gw_net.trunc()) {
            if !conf.force_address {
                return Err(CniError::new(
                    Code::Kernel,
                    format!("bridge {} already has {other} in that subnet, not {gw_net} (set forceAddress to replace it)", bridge.name),
                ));
            }
            host.del_address(bridge.index, *other)?;
        }
        if gw.is_ipv4() {
            host.add_address(bridge.index, gw_net)?;
            sysctl::set("net/ipv4/ip_forward", "1")?;
        } else {
            // Without DAD the gateway answers at once, not a second or two later.
            if !conf.enable_dad {
                sysctl::set(&format!("net/ipv6/conf/{}/accept_dad", bridge.name), "0")?;
            }
            host.add_address(bridge.index, gw_net)?;
            sysctl::set("net/ipv6/conf/all/forwarding", "1")?;
        }
    }
    Ok(())
}

/// CHECK: what prevResult says is in the container must be there, on a veth whose peer is a
/// port of the configured bridge.
fn check_attachment(req: &Request, conf: &BridgeConf, prev: &RunResult) -> CniResult<()> {
    let mismatch = |what: String| CniError::new(Code::Kernel, what);
    let ns = NetNs::open(req.netns_path()?)?;
    let mut container = Netlink::open_in(&ns)?;
    let link = container
        .link_by_name(&req.ifname)?
        .ok_or_else(|| mismatch(format!("{} is missing from the container", req.ifname)))?;
    if link.kind.as_deref() != Some("veth") {
        return Err(mismatch(format!("{} is a {:?} link, not a veth", req.ifname, link.kind)));
    }
    let expected = prev
        .interfaces
        .iter()
        .position(|i| i.name == req.ifname && !i.sandbox.is_empty())
        .ok_or_else(|| mismatch(format!("prevResult has no container interface {}", req.ifname)))?;
    iface::check(&mut container, &link, prev, expected)?;
    let mut host = Netlink::open()?;
    let bridge = host
        .link_by_name(&conf.bridge)?
        .ok_or_else(|| mismatch(format!("bridge {} is missing", conf.bridge)))?;
    let peer = link
        .peer_index
        .map(|i| host.link_by_index(i))
        .transpose()?
        .flatten()
        .ok_or_else(|| mismatch(format!("the host end of {} is missing", req.ifname)))?;
    if peer.master != Some(bridge.index) {
        return Err(mismatch(format!("{} is not a port of bridge {}", peer.name, conf.bridge)));
    }
    Ok(())
}
