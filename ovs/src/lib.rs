//! berth-ovs: attaches a container to an Open vSwitch bridge through a veth pair (the host
//! end a port of the bridge, on an access VLAN or a trunk), with addresses and routes from
//! the IPAM plugin, and joins the bridge to other hosts' through GRE or VXLAN tunnel ports
//! ([`tunnel`]). ovs-cni's configuration keys, and berth's `tunnels`.
//!
//! It speaks OVSDB (RFC 7047) to ovsdb-server over its unix socket ([`ovsdb`]); the
//! transactions are in [`vswitch`]. ADD returns once ovs-vswitchd has applied the change
//! (`cur_cfg` caught up with the transaction's `next_cfg`), so the port is in the datapath.

mod config;
pub mod error;
pub mod ovsdb;
pub mod tunnel;
pub mod vswitch;

pub use config::{OvsConf, DEFAULT_OVSDB_SOCKET};
pub use error::OvsError;
pub use tunnel::remove_tunnels;

use berth_cni::iface::{self, VethSpec};
use berth_cni::ipam::Ipam;
use berth_cni::rollback::Rollback;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{Interface, RunResult};
use berth_cni::{CniError, CniResult, Code};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use error::doing;
use ovsdb::OvsdbError;
use vswitch::{NewPort, Vswitch, APPLY_TIMEOUT, OWNER};

pub struct OvsPlugin;

/// berth's own IPAM plugins run in-process; any other `ipam.type` is exec'd from CNI_PATH.
const IPAM: Ipam = Ipam::new(berth_ipam::BUILTINS);

fn connect(conf: &OvsConf) -> CniResult<Vswitch> {
    Ok(Vswitch::connect(&conf.ovsdb_socket).map_err(doing("connect to Open vSwitch", &conf.ovsdb_socket))?)
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
        let mut host = Netlink::open()?;
        // Leave nothing half-made: the tunnels this ADD made, the veth, the port and the
        // addresses go again, in reverse order, if a later step fails.
        let mut undo = Rollback::new();
        tunnel::ensure(&mut ovs, &conf, &mut undo)?;
        let spec = VethSpec { container_mac: mac, mtu: conf.veth_mtu(), master: None };
        let veth = iface::create_veth(req, &ns, &mut host, &mut container, &spec, &mut undo)?;
        host.set_up(veth.host.index)?;
        add_port(req, &conf, &mut ovs, &veth.host.name, &mut undo)?;
        // ovs-vswitchd has applied the tunnels too by now: one it could not set up fails here.
        tunnel::check(&mut ovs, &conf)?;
        // IPAM once the container's interface is on the switch, as in the reference plugin: a
        // DHCP client (berth-dhcp, the reference dhcp) leases on that interface.
        let allocated = if conf.with_ipam { IPAM.add_undoable(req, &mut undo)? } else { RunResult::default() };
        iface::configure(&ns, &mut container, &veth.container, &allocated, false)?;
        let result = result(req, &ns, &veth, allocated);
        undo.commit();
        Ok(result)
    }

    /// The reverse of ADD: the addresses, while the interface is there (a DHCP lease is
    /// released from it, as the reference plugins order DEL), then the port and the veth,
    /// which go even when the release fails; its error is the one reported then.
    fn del(&self, req: &Request) -> CniResult<()> {
        let conf = OvsConf::parse(req)?;
        let released = if conf.with_ipam { IPAM.del(req) } else { Ok(()) };
        let name = iface::host_end_name(req)?;
        // Both are tried whatever the other did; the port's error is the one reported. The
        // network's last container port takes its tunnels with it.
        let port = connect(&conf).and_then(|mut ovs| {
            remove_port(&mut ovs, &name, true).map_err(doing(format!("remove port {name}"), &conf.ovsdb_socket))?;
            let tunnels = format!("remove the tunnels of network {}", conf.network);
            Ok(tunnel::remove_if_unused(&mut ovs, &conf).map_err(doing(tunnels, &conf.ovsdb_socket))?)
        });
        let veth = iface::remove_veth(req);
        port.and(veth)?;
        released
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = OvsConf::parse(req)?;
        let prev = iface::prev_result(req)?;
        if conf.with_ipam {
            IPAM.check(req)?;
        }
        check_attachment(req, &conf, &prev)?;
        tunnel::check(&mut connect(&conf)?, &conf)
    }

    /// Removes this network's container ports whose attachments are not in
    /// `cni.dev/valid-attachments`, with their veths (gone already when their containers
    /// are: Open vSwitch keeps the port all the same), then releases their addresses.
    fn gc(&self, req: &Request) -> CniResult<()> {
        let conf = OvsConf::parse(req)?;
        let keep = req.conf.valid_attachments()?;
        let mut ovs = connect(&conf)?;
        let socket = &conf.ovsdb_socket;
        let ours = [("owner", OWNER), ("network", conf.network.as_str())];
        let ports = ovs.ports_with(&ours).map_err(doing(format!("list the ports of network {}", conf.network), socket))?;
        let mut host = Netlink::open()?;
        for port in ports {
            // Tunnel ports name no container.
            let (Some(id), Some(ifname)) = (port.external_ids.get("container-id"), port.external_ids.get("ifname")) else {
                continue;
            };
            if keep.iter().any(|a| a.container_id == *id && a.ifname == *ifname) {
                continue;
            }
            remove_port(&mut ovs, &port.name, true).map_err(doing(format!("remove port {}", port.name), socket))?;
            if let Some(veth) = host.link_by_name(&port.name)?.filter(|l| l.kind.as_deref() == Some("veth")) {
                host.delete_link(veth.index)?;
            }
        }
        let tunnels = format!("remove the tunnels of network {}", conf.network);
        tunnel::remove_if_unused(&mut ovs, &conf).map_err(doing(tunnels, socket))?;
        if conf.with_ipam {
            IPAM.forward(req)?;
        }
        Ok(())
    }
}

/// The bridge exists, or is created when the configuration asks for it.
fn ensure_bridge(ovs: &mut Vswitch, conf: &OvsConf) -> CniResult<()> {
    if ovs.bridge_exists(&conf.bridge).map_err(doing(format!("look up bridge {}", conf.bridge), &conf.ovsdb_socket))? {
        return Ok(());
    }
    if !conf.create_bridge {
        return Err(CniError::invalid_config(format!(
            "bridge: there is no Open vSwitch bridge {} (create it with `ovs-vsctl add-br {}`, or set \"createBridge\": true)",
            conf.bridge, conf.bridge
        )));
    }
    // No wait of its own: the port's, later, covers this change too.
    ovs.create_bridge(&conf.bridge).map_err(doing(format!("create bridge {}", conf.bridge), &conf.ovsdb_socket))?;
    Ok(())
}

/// The port for the host end, once ovs-vswitchd has it in the datapath. Its removal is pushed
/// on `undo`.
fn add_port<'a>(req: &Request, conf: &'a OvsConf, ovs: &mut Vswitch, name: &str, undo: &mut Rollback<'a>) -> CniResult<()> {
    let external_ids = [
        ("owner", OWNER),
        ("network", conf.network.as_str()),
        ("container-id", req.container_id.as_str()),
        ("ifname", req.ifname.as_str()),
    ];
    let port =
        NewPort { bridge: &conf.bridge, name, iface_type: "", options: &[], vlans: &conf.vlans, external_ids: &external_ids };
    let what = || format!("add port {name} to Open vSwitch bridge {}", conf.bridge);
    let socket = &conf.ovsdb_socket;
    // Pushed first: a port whose transaction committed but that vswitchd did not apply must
    // go too. On a connection of its own, as the ADD's may be what failed.
    let owned_name = name.to_string();
    undo.push("removing the Open vSwitch port", move || {
        let mut ovs = connect(conf)?;
        remove_port(&mut ovs, &owned_name, false).map_err(doing(format!("remove port {owned_name}"), &conf.ovsdb_socket))?;
        Ok(())
    });
    let cfg = match ovs.add_port(&port) {
        Ok(cfg) => cfg,
        // A port of that name left by an ADD killed half-way: replace it, once.
        Err(e) if e.ovsdb_error() == Some("constraint violation") => {
            remove_port(ovs, name, false).map_err(doing(what(), socket))?;
            ovs.add_port(&port).map_err(doing(what(), socket))?
        }
        // ensure_bridge saw it: say so, rather than only that there is no such bridge.
        Err(e @ OvsdbError::NoBridge { .. }) => {
            return Err(doing(format!("{}: it disappeared during ADD", what()), socket)(e).into())
        }
        Err(e) => return Err(doing(what(), socket)(e).into()),
    };
    let state = ovs.wait_applied(cfg, APPLY_TIMEOUT, Some(name)).map_err(doing(what(), socket))?;
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

/// As ovs-cni reports it: the host end, then the container's interface with the addresses.
fn result(req: &Request, ns: &NetNs, veth: &iface::Veth, configured: RunResult) -> RunResult {
    let host = &veth.host;
    let host_side = vec![Interface { name: host.name.clone(), mac: iface::mac_string(host.mac), ..Default::default() }];
    iface::add_result(req, ns, &veth.container, host_side, configured)
}

/// CHECK: what prevResult says is in the container must be there, on a veth whose host end
/// is a port of the configured bridge with the configured VLANs, in the datapath.
fn check_attachment(req: &Request, conf: &OvsConf, prev: &RunResult) -> CniResult<()> {
    let mismatch = |what: String| CniError::new(Code::Kernel, what);
    let link = iface::check_container_interface(req, prev, "veth")?.link;

    let name = iface::host_end_name(req)?;
    let mut host = Netlink::open()?;
    let peer = link.peer_index.map(|i| host.link_by_index(i)).transpose()?.flatten();
    if peer.as_ref().map(|p| p.name.as_str()) != Some(name.as_str()) {
        return Err(mismatch(format!("the host end {name} of {} is missing", req.ifname)));
    }
    let mut ovs = connect(conf)?;
    let view = ovs.view(&name, &conf.bridge).map_err(doing(format!("look up port {name}"), &conf.ovsdb_socket))?;
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
