//! berth-ovs: attaches a container to an Open vSwitch bridge through a veth pair (the host
//! end a port of the bridge, on an access VLAN or a trunk), with addresses and routes from
//! the IPAM plugin. ovs-cni's configuration keys.
//!
//! It speaks OVSDB (RFC 7047) to ovsdb-server over its unix socket ([`ovsdb`]); the
//! transactions are in [`vswitch`]. ADD returns once ovs-vswitchd has applied the change
//! (`cur_cfg` caught up with the transaction's `next_cfg`), so the port is in the datapath.

mod config;
pub mod ovsdb;
pub mod vswitch;

pub use config::{OvsConf, DEFAULT_OVSDB_SOCKET};

use berth_cni::iface::{self, host_veth_name};
use berth_cni::ipam::Ipam;
use berth_netlink::{Link, MacAddr, Netlink, VethPeer};
use berth_netns::NetNs;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{Interface, RunResult};
use berth_cni::{CniError, CniResult, Code};
use ovsdb::OvsdbError;
use vswitch::{NewPort, Vswitch, APPLY_TIMEOUT, OWNER};

pub struct OvsPlugin;

/// berth's own IPAM plugins run in-process; any other `ipam.type` is exec'd from CNI_PATH.
const IPAM: Ipam = Ipam::new(berth_ipam::BUILTINS);

pub fn run() -> ! {
    berth_cni::skel::run_main(&OvsPlugin)
}

/// An OVSDB failure as the runtime sees it: what was being done, and why.
fn ovs_error(what: impl std::fmt::Display, conf: &OvsConf) -> impl FnOnce(OvsdbError) -> CniError + '_ {
    let what = what.to_string();
    move |e| CniError::kernel(format!("{what} (ovsdb {})", conf.ovsdb_socket), e)
}

fn connect(conf: &OvsConf) -> CniResult<Vswitch> {
    Vswitch::connect(&conf.ovsdb_socket).map_err(ovs_error("connect to Open vSwitch", conf))
}

impl Plugin for OvsPlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let conf = OvsConf::parse(req)?;
        let mac = conf.container_mac(req)?;
        let ns = NetNs::open(req.netns_path()?)?;
        let mut container = Netlink::open_in(&ns)?;
        iface::require_unused_name(&mut container, req)?;
        let mut ovs = connect(&conf)?;
        ensure_bridge(&mut ovs, &conf)?;
        let allocated = if conf.with_ipam { IPAM.add(req)? } else { RunResult::default() };
        let mut host = Netlink::open()?;
        match attach(req, &conf, &ns, &mut ovs, &mut host, &mut container, mac, allocated) {
            Ok(result) => Ok(result),
            Err(e) => {
                // Leave nothing half-made: the port, the veth, the address.
                let name = host_veth_name(&req.container_id, &req.ifname);
                if let Err(e) = remove_port(&mut ovs, &name, false) {
                    eprintln!("removing port {name} after a failed ADD: {e}");
                }
                if let Ok(Some(veth)) = host.link_by_name(&name) {
                    let _ = host.delete_link(veth.index);
                }
                if conf.with_ipam {
                    IPAM.release_after_failed_add(req);
                }
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        let conf = OvsConf::parse(req)?;
        if conf.with_ipam {
            IPAM.del(req)?;
        }
        let name = host_veth_name(&req.container_id, &req.ifname);
        // Both are tried whatever the other did; the port's error is the one reported.
        let port = connect(&conf)
            .and_then(|mut ovs| remove_port(&mut ovs, &name, true).map_err(ovs_error(format!("remove port {name}"), &conf)));
        let veth = remove_veth(req, &name);
        port.and(veth)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = OvsConf::parse(req)?;
        let prev = req.conf.prev_result()?.ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        if conf.with_ipam {
            IPAM.check(req)?;
        }
        check_attachment(req, &conf, &prev)
    }
}

/// The bridge exists, or is created when the configuration asks for it.
fn ensure_bridge(ovs: &mut Vswitch, conf: &OvsConf) -> CniResult<()> {
    if ovs.bridge_exists(&conf.bridge).map_err(ovs_error(format!("look up bridge {}", conf.bridge), conf))? {
        return Ok(());
    }
    if !conf.create_bridge {
        return Err(CniError::invalid_config(format!(
            "bridge: there is no Open vSwitch bridge {} (create it with `ovs-vsctl add-br {}`, or set \"createBridge\": true)",
            conf.bridge, conf.bridge
        )));
    }
    // No wait of its own: the port's, later, covers this change too.
    ovs.create_bridge(&conf.bridge).map_err(ovs_error(format!("create bridge {}", conf.bridge), conf))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn attach(
    req: &Request,
    conf: &OvsConf,
    ns: &NetNs,
    ovs: &mut Vswitch,
    host: &mut Netlink,
    container: &mut Netlink,
    mac: Option<MacAddr>,
    allocated: RunResult,
) -> CniResult<RunResult> {
    let veth_name = host_veth_name(&req.container_id, &req.ifname);
    if let Some(stale) = host.link_by_name(&veth_name)? {
        // The container has no such interface, so this is left by an ADD killed half-way.
        host.delete_link(stale.index)?;
    }
    let peer = VethPeer { name: &req.ifname, netns: Some(ns), mac };
    let veth = host.create_veth(&veth_name, &peer, conf.mtu, None)?;
    host.set_up(veth.index)?;
    add_port(req, conf, ovs, &veth_name)?;

    let link = container
        .link_by_name(&req.ifname)?
        .ok_or_else(|| CniError::kernel(format!("{} did not appear in the container", req.ifname), "missing after create"))?;
    iface::configure(ns, container, &link, &allocated, false)?;
    Ok(result(req, ns, &veth, &link, allocated))
}

/// The port for the host end, once ovs-vswitchd has it in the datapath.
fn add_port(req: &Request, conf: &OvsConf, ovs: &mut Vswitch, name: &str) -> CniResult<()> {
    let external_ids = [("owner", OWNER), ("container-id", req.container_id.as_str()), ("ifname", req.ifname.as_str())];
    let port = NewPort { bridge: &conf.bridge, name, vlans: &conf.vlans, external_ids: &external_ids };
    let what = || format!("add port {name} to Open vSwitch bridge {}", conf.bridge);
    let cfg = match ovs.add_port(&port) {
        Ok(cfg) => cfg,
        // A port of that name left by an ADD killed half-way: replace it, once.
        Err(e) if e.ovsdb_error() == Some("constraint violation") => {
            remove_port(ovs, name, false).map_err(ovs_error(what(), conf))?;
            ovs.add_port(&port).map_err(ovs_error(what(), conf))?
        }
        Err(OvsdbError::NoBridge { bridge }) => {
            return Err(CniError::new(Code::Kernel, format!("Open vSwitch bridge {bridge} disappeared during ADD")))
        }
        Err(e) => return Err(ovs_error(what(), conf)(e)),
    };
    let state = ovs.wait_applied(cfg, APPLY_TIMEOUT, Some(name)).map_err(ovs_error(what(), conf))?;
    match state {
        Some(s) if s.error.is_none() && s.ofport.is_some_and(|p| p > 0) => Ok(()),
        Some(s) => Err(CniError::new(Code::Kernel, what()).with_details(format!(
            "ovs-vswitchd could not add the interface: {}",
            s.error.unwrap_or_else(|| format!("ofport {:?}", s.ofport))
        ))),
        None => Err(CniError::new(Code::Kernel, what()).with_details("the interface is gone from the database")),
    }
}

/// Removes berth-ovs's port `name` from its bridge, if it is there. With `wait`, until
/// ovs-vswitchd has applied it; a vswitchd that does not is only logged (the database no
/// longer has the port, which is what DEL promises).
fn remove_port(ovs: &mut Vswitch, name: &str, wait: bool) -> Result<(), OvsdbError> {
    let Some(port) = ovs.port(name)? else { return Ok(()) };
    if !port.owned_by_berth() {
        eprintln!("leaving port {name}: it was not made by berth-ovs (external_ids {:?})", port.external_ids);
        return Ok(());
    }
    let cfg = ovs.del_port(&port.uuid)?;
    if wait {
        match ovs.wait_applied(cfg, APPLY_TIMEOUT, None) {
            Err(e @ OvsdbError::NotApplied { .. }) => eprintln!("port {name} removed from the database: {e}"),
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Deleting either end of a veth removes both: the container's end when its namespace
/// still exists, else the host end, if left behind.
fn remove_veth(req: &Request, host_name: &str) -> CniResult<()> {
    if let Some(ns) = req.netns.as_ref().and_then(|p| NetNs::open(p).ok()) {
        let mut nl = Netlink::open_in(&ns)?;
        if let Some(link) = nl.link_by_name(&req.ifname)? {
            if link.kind.as_deref() == Some("veth") {
                nl.delete_link(link.index)?;
                return Ok(());
            }
        }
    }
    let mut host = Netlink::open()?;
    if let Some(veth) = host.link_by_name(host_name)? {
        host.delete_link(veth.index)?;
    }
    Ok(())
}

/// As ovs-cni reports it: the host end, then the container's interface with the addresses.
fn result(req: &Request, ns: &NetNs, veth: &Link, link: &Link, configured: RunResult) -> RunResult {
    let host_side = vec![Interface { name: veth.name.clone(), mac: iface::mac_string(veth.mac), ..Default::default() }];
    iface::add_result(req, ns, &link, host_side, configured)
}

/// CHECK: what prevResult says is in the container must be there, on a veth whose host end
/// is a port of the configured bridge with the configured VLANs, in the datapath.
fn check_attachment(req: &Request, conf: &OvsConf, prev: &RunResult) -> CniResult<()> {
    let mismatch = |what: String| CniError::new(Code::Kernel, what);
    let ns = NetNs::open(req.netns_path()?)?;
    let mut container = Netlink::open_in(&ns)?;
    let link =
        container.link_by_name(&req.ifname)?.ok_or_else(|| mismatch(format!("{} is missing from the container", req.ifname)))?;
    if link.kind.as_deref() != Some("veth") {
        return Err(mismatch(format!("{} is a {:?} link, not a veth", req.ifname, link.kind)));
    }
    let sandbox = ns.path().display().to_string();
    let expected = prev
        .interfaces
        .iter()
        .position(|i| i.name == req.ifname && i.sandbox == sandbox)
        .ok_or_else(|| mismatch(format!("prevResult has no interface {} in {sandbox}", req.ifname)))?;
    iface::check(&mut container, &link, prev, expected)?;

    let name = host_veth_name(&req.container_id, &req.ifname);
    let mut host = Netlink::open()?;
    let peer = link.peer_index.map(|i| host.link_by_index(i)).transpose()?.flatten();
    if peer.as_ref().map(|p| p.name.as_str()) != Some(name.as_str()) {
        return Err(mismatch(format!("the host end {name} of {} is missing", req.ifname)));
    }
    let mut ovs = connect(conf)?;
    let view = ovs.view(&name, &conf.bridge).map_err(ovs_error(format!("look up port {name}"), conf))?;
    let port = view.port.ok_or_else(|| mismatch(format!("Open vSwitch has no port {name}")))?;
    let ports = view.bridge_ports.ok_or_else(|| mismatch(format!("there is no Open vSwitch bridge {}", conf.bridge)))?;
    if !ports.contains(&port.uuid) {
        return Err(mismatch(format!("port {name} is not on Open vSwitch bridge {}", conf.bridge)));
    }
    if port.vlans() != conf.vlans || port.vlan_mode.as_deref() != Some(conf.vlans.vlan_mode()) {
        return Err(mismatch(format!(
            "port {name} has vlan_mode {}, tag {}, trunks {:?}; the configuration says vlan_mode {}, tag {}, trunks {:?}",
            port.vlan_mode.as_deref().unwrap_or("(none)"),
            port.tag.map_or("(none)".into(), |t| t.to_string()),
            port.trunks,
            conf.vlans.vlan_mode(),
            conf.vlans.tag.map_or("(none)".into(), |t| t.to_string()),
            conf.vlans.trunks,
        )));
    }
    match view.interface {
        Some(s) if s.error.is_none() && s.ofport.is_some_and(|p| p > 0) => Ok(()),
        Some(s) => Err(mismatch(format!(
            "ovs-vswitchd does not have {name} in the datapath: {}",
            s.error.unwrap_or_else(|| format!("ofport {:?}", s.ofport))
        ))),
        None => Err(mismatch(format!("Open vSwitch has no interface {name}"))),
    }
}
