//! berth-bridge: attaches a container to a Linux bridge in the host namespace through a veth
//! pair, with addresses and routes from the IPAM plugin, and its firewall side (masquerade,
//! the `portMappings` capability, isolation between networks) through `plugins::firewall`.

mod config;
mod overlay;

pub use config::{BridgeConf, VxlanConf};
pub use overlay::remove_vxlan_port;

use berth_cni::iface::{self, VethSpec};
use berth_cni::ipam::Ipam;
use berth_cni::rollback::Rollback;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::PortMapping;
use berth_cni::spec::{Interface, Route, RunResult};
use berth_cni::{CniError, CniResult, Code};
use berth_firewall as firewall;
use berth_netlink::{Link, Netlink, PortFlag};
use berth_netns::sysctl;
use berth_netns::NetNs;
use berth_util::names::{label, records};
use ipnet::IpNet;
use std::net::IpAddr;

pub struct BridgePlugin;

/// berth's own IPAM plugins run in-process; any other `ipam.type` is exec'd from CNI_PATH.
const IPAM: Ipam = Ipam::new(berth_ipam::BUILTINS);

/// The host end's name (shared with berth-ovs, which names its OVS port after it).
pub use berth_cni::iface::host_veth_name;

impl Plugin for BridgePlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let mut conf = BridgeConf::parse(req)?;
        let ns = NetNs::open(req.netns_path()?)?;
        let mut container = Netlink::open_in(&ns)?;
        iface::require_unused_name(&mut container, req)?;
        let mut host = Netlink::open()?;
        let underlay = overlay::underlay(&mut host, &conf)?;
        conf.mtu = overlay::effective_mtu(&conf, underlay.as_ref());
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
        // Leave nothing half-made: what `attach` made goes again, in reverse order, if a
        // later step fails.
        let mut undo = Rollback::new();
        if let Some(vxlan) = &conf.vxlan {
            overlay::ensure_port(&mut host, vxlan, &bridge, underlay.as_ref(), conf.mtu, &mut undo)?;
        }
        let result = attach(req, &conf, &ns, &mut host, &mut container, &bridge, &mut undo)?;
        undo.commit();
        Ok(result)
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        let conf = BridgeConf::parse(req)?;
        // The reverse of ADD: the firewall entries, the addresses, the veth. The addresses go
        // while the veth is there: a DHCP lease (berth-dhcp, the reference dhcp) is released
        // from it, as the reference plugins order DEL; the veth goes even when that fails, and
        // the release's error is the one reported. A step that fails leaves the steps after it
        // for the runtime's retry, each of them a success when there is nothing left to undo.
        // Without prevResult the firewall finds the container's entries itself (its index).
        let addresses: Vec<IpAddr> =
            req.conf.prev_result()?.map(|prev| prev.ips.iter().map(|ip| ip.address.addr()).collect()).unwrap_or_default();
        let port_mappings = port_mappings(req)?;
        let fw = firewall::backend(conf.firewall_backend)?;
        fw.del(&firewall_attachment(req, &conf, &addresses, &port_mappings))?;
        // With nftables, `fw` still holds its nfnetlink socket: the process that deletes the
        // link inherits it, so the grace period its release waits for is not ours either.
        let released = if conf.ipam_configured(req) { IPAM.del(req) } else { Ok(()) };
        iface::remove_veth(req)?;
        // The network's last container takes the VXLAN port with it.
        overlay::remove_if_unused(&conf)?;
        released
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = BridgeConf::parse(req)?;
        let prev = iface::prev_result(req)?;
        if conf.ipam_configured(req) {
            IPAM.check(req)?;
        }
        check_attachment(req, &conf, &prev)?;
        let addresses: Vec<IpAddr> = prev.ips.iter().map(|ip| ip.address.addr()).collect();
        let port_mappings = port_mappings(req)?;
        let fw = firewall::backend(conf.firewall_backend)?;
        Ok(fw.check(&firewall_attachment(req, &conf, &addresses, &port_mappings))?)
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
    /// network that is not in `cni.dev/valid-attachments`, and the veths of ADDs killed before
    /// they named their owner. (An attachment whose ADD is under way is not valid yet: a
    /// runtime does not collect a network's garbage while it attaches to it.)
    fn gc(&self, req: &Request) -> CniResult<()> {
        let conf = BridgeConf::parse(req)?;
        let keep: Vec<(String, String)> = req.conf.valid_attachments()?.into_iter().map(|v| (v.container_id, v.ifname)).collect();
        if conf.ipam_configured(req) {
            IPAM.forward(req)?;
        }
        firewall::backend(conf.firewall_backend)?.gc(&req.conf.name, &keep)?;
        let mut host = Netlink::open()?;
        let Some(bridge) = host.link_by_name(&conf.bridge)? else { return Ok(()) };
        let kept_names: Vec<String> = keep.iter().map(|(id, ifname)| host_veth_name(id, ifname)).collect();
        for port in host.links_detailed()? {
            if port.link.master != Some(bridge.index) || port.link.kind.as_deref() != Some("veth") {
                continue;
            }
            let doomed = match port.alias.as_deref().and_then(parse_veth_alias) {
                Some((recorded, ifname)) => !keep.iter().any(|(id, name)| records(&recorded, id, ID_LABEL_MAX) && *name == ifname),
                // No owner yet: an ADD killed between the veth's creation and its alias (the
                // creation is the slow step, so a kill often lands there). Its name says it
                // is berth's, and it is none of the kept attachments'.
                None => is_host_veth_name(&port.link.name) && !kept_names.contains(&port.link.name),
            };
            if doomed {
                host.delete_link(port.link.index)?;
            }
        }
        Ok(())
    }
}

/// Whether `name` has the form of [`host_veth_name`]'s names: `veth` and eight hex digits.
fn is_host_veth_name(name: &str) -> bool {
    name.strip_prefix("veth").is_some_and(|hash| hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Puts back one attachment's firewall entries as ADD made them (after `nft flush ruleset`,
/// a firewalld reload, a restart of the firewall service), from the same configuration,
/// prevResult and capability arguments. What is still there stays: adding an entry that
/// exists changes nothing, so running it twice changes nothing either.
pub fn restore_firewall(req: &Request) -> CniResult<()> {
    let conf = BridgeConf::parse(req)?;
    if conf.firewall_backend == firewall::FirewallBackend::None {
        return Ok(());
    }
    let addresses: Vec<IpAddr> =
        req.conf.prev_result()?.map(|prev| prev.ips.iter().map(|ip| ip.address.addr()).collect()).unwrap_or_default();
    let port_mappings = port_mappings(req)?;
    firewall::backend(conf.firewall_backend)?.add(&firewall_attachment(req, &conf, &addresses, &port_mappings))?;
    Ok(())
}

/// The host end's alias names its owner, so GC can tell berth's veths and whose they are. A
/// container ID too long for the alias (IFLA_IFALIAS holds 255 bytes; CNI puts no limit on
/// IDs) is recorded as its label, which [`records`] matches.
fn veth_alias(container_id: &str, ifname: &str) -> String {
    /// IFALIASZ less the terminating NUL.
    const MAX_ALIAS_LEN: usize = 255;
    let whole = format!("berth-bridge id={container_id} if={ifname}");
    if whole.len() <= MAX_ALIAS_LEN {
        return whole;
    }
    format!("berth-bridge id={} if={ifname}", label(container_id, ID_LABEL_MAX))
}

/// The longest container-ID label of an alias: with the rest, at most 163 bytes.
const ID_LABEL_MAX: usize = 128;

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
        no_masquerade: &conf.no_masquerade,
        isolate: conf.isolate_networks,
        port_mappings,
    }
}

impl BridgeConf {
    fn ipam_configured(&self, req: &Request) -> bool {
        req.conf.ipam.as_ref().is_some_and(|i| !i.plugin_type.is_empty())
    }
}

/// The veth, IPAM, the container's end, the host's side, the firewall entries: each undone
/// through `undo` if a later one fails.
fn attach<'a>(
    req: &'a Request,
    conf: &BridgeConf,
    ns: &NetNs,
    host: &mut Netlink,
    container: &mut Netlink,
    bridge: &Link,
    undo: &mut Rollback<'a>,
) -> CniResult<RunResult> {
    let spec = VethSpec { container_mac: conf.container_mac, mtu: conf.mtu.or(Some(bridge.mtu)), master: Some(bridge.index) };
    let pair = iface::create_veth(req, ns, host, container, &spec, undo)?;
    let (veth, link) = (pair.host, pair.container);
    configure_port(req, conf, host, &veth)?;
    // IPAM once the container's interface exists and its port is up, as in the reference
    // plugin: a DHCP client (berth-dhcp, the reference dhcp) leases on that interface. Without
    // IPAM the bridge is layer 2 only.
    let allocated = if conf.ipam_configured(req) { IPAM.add_undoable(req, undo)? } else { RunResult::default() };
    let configured = with_default_routes(conf, allocated);
    iface::configure(ns, container, &link, &configured, conf.enable_dad)?;

    if conf.is_gateway {
        set_gateway_addresses(host, conf, bridge, &configured)?;
    }
    let addresses: Vec<IpAddr> = configured.ips.iter().map(|ip| ip.address.addr()).collect();
    if !addresses.is_empty() {
        let port_mappings = port_mappings(req)?;
        firewall::backend(conf.firewall_backend)?.add(&firewall_attachment(req, conf, &addresses, &port_mappings))?;
    }

    let host_side = vec![
        Interface { name: bridge.name.clone(), mac: iface::mac_string(bridge.mac), ..Default::default() },
        Interface { name: veth.name.clone(), mac: iface::mac_string(veth.mac), ..Default::default() },
    ];
    Ok(iface::add_result(req, ns, &link, host_side, configured))
}

/// The host end as a port of the bridge: hairpin, isolation, its owner in its alias, up.
fn configure_port(req: &Request, conf: &BridgeConf, host: &mut Netlink, veth: &Link) -> CniResult<()> {
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
    Ok(())
}

/// With `isDefaultGateway`, a default route through each subnet's gateway, unless IPAM gave
/// one of that family already.
fn with_default_routes(conf: &BridgeConf, allocated: RunResult) -> RunResult {
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
    configured
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
                    format!(
                        "bridge {} already has {other} in that subnet, not {gw_net} (set forceAddress to replace it)",
                        bridge.name
                    ),
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
    let link = iface::check_container_interface(req, prev, "veth")?.link;
    let mut host = Netlink::open()?;
    let bridge = host.link_by_name(&conf.bridge)?.ok_or_else(|| mismatch(format!("bridge {} is missing", conf.bridge)))?;
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

/// The plugin called in-process, as a library caller does (default options: nothing forks),
/// in throwaway namespaces. Needs root.
#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::skel::{Command, Options};
    use berth_cni::spec::{NetConf, Version};
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// An IPAM plugin whose ADD works and whose DEL fails ("try again later").
    const FAILING_DEL_IPAM: &str = r#"#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","ips":[{"address":"10.99.0.2/24","gateway":"10.99.0.1"}]}' ;;
DEL) echo '{"cniVersion":"1.0.0","code":11,"msg":"the address store is busy"}'; exit 1 ;;
esac
"#;

    /// Named namespaces and a directory, removed on drop, panics included.
    struct Scratch {
        namespaces: Vec<String>,
        dir: PathBuf,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            for name in &self.namespaces {
                let _ = NetNs::delete_named(name);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn request(command: Command, container: &NetNs, cni_path: &std::path::Path) -> Request {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "undo-order", "type": "berth-bridge", "bridge": "brundo0",
            "ipam": {"type": "failing-del-ipam"},
        });
        let stdin = conf.to_string().into_bytes();
        Request {
            command,
            container_id: "c1".into(),
            netns: Some(container.path().to_path_buf()),
            ifname: "eth0".into(),
            args: vec![],
            cni_path: vec![cni_path.to_path_buf()],
            conf: NetConf::from_slice(&stdin).expect("a valid configuration"),
            stdin,
            version: Version::V1_0_0,
            options: Options::default(),
        }
    }

    #[test]
    fn host_veth_names_are_recognised() {
        assert!(is_host_veth_name(&host_veth_name("c1", "eth0")));
        for other in ["veth", "veth1234567", "veth123456789", "vethxyz12345", "eth0", "bwb1234abcd"] {
            assert!(!is_host_veth_name(other), "{other}");
        }
    }

    #[test]
    fn del_removes_the_veth_even_when_the_address_release_fails() {
        let tag = std::process::id();
        let scratch = Scratch {
            namespaces: vec![format!("berth-bridge-test-host-{tag}"), format!("berth-bridge-test-ctr-{tag}")],
            dir: std::env::temp_dir().join(format!("berth-bridge-test-{tag}")),
        };
        let host = NetNs::create_named(&scratch.namespaces[0]).expect("needs root: creates network namespaces");
        let container = NetNs::create_named(&scratch.namespaces[1]).expect("create the container's namespace");
        std::fs::create_dir_all(&scratch.dir).expect("scratch directory");
        let ipam = scratch.dir.join("failing-del-ipam");
        std::fs::write(&ipam, FAILING_DEL_IPAM).expect("write the IPAM plugin");
        std::fs::set_permissions(&ipam, std::fs::Permissions::from_mode(0o755)).expect("chmod the IPAM plugin");
        // This thread is the plugin's "host" from here on.
        let _inside = host.enter().expect("enter the host namespace");

        BridgePlugin.add(&request(Command::Add, &container, &scratch.dir)).expect("ADD");
        let veth = host_veth_name("c1", "eth0");
        assert!(Netlink::open().unwrap().link_by_name(&veth).unwrap().is_some(), "ADD made {veth}");

        let err = BridgePlugin.del(&request(Command::Del, &container, &scratch.dir)).expect_err("IPAM's DEL fails");
        assert_eq!(err.code, 11, "the IPAM plugin's error reaches the runtime: {err}");
        assert!(Netlink::open().unwrap().link_by_name(&veth).unwrap().is_none(), "the veth went all the same");
        assert!(Netlink::open_in(&container).unwrap().link_by_name("eth0").unwrap().is_none());
    }
}
