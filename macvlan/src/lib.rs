//! berth-macvlan: gives a container a macvlan link on a host interface (the "master"), with
//! its own MAC on the master's wire, and addresses and routes from the IPAM plugin.
//!
//! With `vlan`, the parent is the 802.1q sub-interface `MASTER.VID` (pipework's `eth0.100`),
//! created when missing and removed after the last container on it goes (see [`trunk`]).

mod config;
pub mod trunk;

pub use config::MacvlanConf;

use berth_cni::iface;
use berth_cni::ipam::Ipam;
use berth_cni::rollback::Rollback;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::RunResult;
use berth_cni::{CniError, CniResult, Code};
use berth_netlink::{Link, MacAddr, MacvlanSpec, Netlink};
use berth_netns::sysctl;
use berth_netns::NetNs;

pub struct MacvlanPlugin;

/// berth's own IPAM plugins run in-process; any other `ipam.type` is exec'd from CNI_PATH.
const IPAM: Ipam = Ipam::new(berth_ipam::BUILTINS);

impl Plugin for MacvlanPlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let conf = MacvlanConf::parse(req)?;
        let mac = conf.container_mac(req)?;
        let ns = NetNs::open(req.netns_path()?)?;
        // Held to the end of the ADD, so no DEL removes the sub-interface under us.
        let _trunk_lock = conf.vlan.map(|_| trunk::lock()).transpose()?;
        let mut parent = Parent::find(&conf, &ns, true)?;
        // Leave nothing half-made: the sub-interface (unless another container uses it), the
        // addresses and the macvlan go again, in reverse order, if a later step fails.
        let mut undo = Rollback::new();
        if conf.vlan.is_some() {
            let (parent_ns, sub) = (&parent.ns, parent.link.name.clone());
            undo.push("removing the VLAN sub-interface", move || {
                trunk::release_if_unused(&mut Netlink::open_in(parent_ns)?, parent_ns, &sub).map(drop)
            });
        }
        let result = add_on_parent(req, &conf, &ns, (&mut parent.nl, &parent.link), mac, &mut undo)?;
        undo.commit();
        Ok(result)
    }

    /// The reverse of ADD: the addresses, the macvlan, the sub-interface when no macvlan is
    /// left on it.
    fn del(&self, req: &Request) -> CniResult<()> {
        let conf = MacvlanConf::parse(req)?;
        let container = req.netns.as_ref().and_then(|p| NetNs::open(p).ok());
        let _trunk_lock = conf.vlan.map(|_| trunk::lock()).transpose()?;
        // Addresses first, while the macvlan is there: a DHCP lease (berth-dhcp, the reference
        // dhcp) is released from it, as the reference plugins order DEL. The macvlan goes even
        // when that fails, and the release's error is the one reported.
        let released = if conf.with_ipam { IPAM.del(req) } else { Ok(()) };
        if let Some(ns) = &container {
            // CNI_IFNAME, or the name ADD makes the macvlan under, when that ADD was killed
            // before the rename.
            for name in [req.ifname.clone(), temporary_name(&req.container_id, &req.ifname)] {
                let mut nl = Netlink::open_in(ns)?;
                if let Some(link) = nl.link_by_name(&name)? {
                    // Gone from every list when this returns, so the sub-interface's users
                    // below no longer count it. When main chose not to wait for the kernel to
                    // free it, the process left waiting keeps the trunk lock until then, as a
                    // synchronous delete does.
                    iface::delete_link(req, nl, link.index)?;
                }
            }
        }
        let trunk = release_trunk(&conf, container);
        released.and(trunk)
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = MacvlanConf::parse(req)?;
        let prev = iface::prev_result(req)?;
        if conf.with_ipam {
            IPAM.check(req)?;
        }
        let mut found = iface::check_container_interface(req, &prev, "macvlan")?;
        let parent = Parent::find(&conf, &found.ns, false)?;
        let mismatch = |what: String| CniError::new(Code::Kernel, what);
        let detail = found
            .nl
            .link_detail(found.link.index)?
            .ok_or_else(|| mismatch(format!("{} is missing from the container", req.ifname)))?;
        if detail.macvlan_mode != Some(conf.mode) {
            let found = detail.macvlan_mode.map_or("unknown", |m| m.as_str());
            return Err(mismatch(format!("{} is in macvlan mode {found}, the configuration says {}", req.ifname, conf.mode)));
        }
        let expected_nsid = if conf.link_in_container { None } else { found.nl.nsid_of(&parent.ns)? };
        if detail.parent != Some(parent.link.index) || detail.parent_netnsid != expected_nsid {
            return Err(mismatch(format!("{} is not a macvlan of {}", req.ifname, parent.link.name)));
        }
        Ok(())
    }

    /// Releases the addresses of this network's attachments that are not in
    /// `cni.dev/valid-attachments`: an ADD killed after IPAM, or a container gone without a
    /// DEL, leaves them allocated; its macvlan went with its namespace.
    fn gc(&self, req: &Request) -> CniResult<()> {
        let conf = MacvlanConf::parse(req)?;
        if conf.with_ipam {
            IPAM.forward(req)?;
        }
        Ok(())
    }
}

/// DEL in trunk mode: removes the `MASTER.VID` sub-interface when berth made it and no
/// macvlan is left on it. Its namespace is the host's, or with linkInContainer the
/// container's (`container`), and then it went with that namespace, if that is gone.
fn release_trunk(conf: &MacvlanConf, container: Option<NetNs>) -> CniResult<()> {
    let Some(vid) = conf.vlan else { return Ok(()) };
    let (parent_ns, mut nl) = if conf.link_in_container {
        let Some(ns) = container else { return Ok(()) };
        let nl = Netlink::open_in(&ns)?;
        (ns, nl)
    } else {
        (NetNs::current()?, Netlink::open()?)
    };
    let master = match &conf.master {
        Some(m) => m.clone(),
        None => match default_route_link(&mut nl)? {
            Some(link) => link.name,
            None => return Ok(()),
        },
    };
    trunk::release_if_unused(&mut nl, &parent_ns, &trunk::sub_name(&master, vid)?)?;
    Ok(())
}

/// The link macvlans are made on, and its namespace: the host's, or with linkInContainer
/// the container's.
struct Parent {
    ns: NetNs,
    nl: Netlink,
    /// The master, or in trunk mode its `MASTER.VID` sub-interface.
    link: Link,
}

impl Parent {
    /// Looks the parent up; in trunk mode the sub-interface is created when `create`.
    fn find(conf: &MacvlanConf, container: &NetNs, create: bool) -> CniResult<Parent> {
        let (ns, where_) = if conf.link_in_container {
            (NetNs::open(container.path())?, "container")
        } else {
            (NetNs::current()?, "host")
        };
        let mut nl = Netlink::open_in(&ns)?;
        let master = match &conf.master {
            Some(name) => nl.link_by_name(name)?.ok_or_else(|| {
                CniError::invalid_config(format!("master: no link {name} in the {where_} network namespace"))
            })?,
            None => default_route_link(&mut nl)?.ok_or_else(|| {
                CniError::invalid_config(format!(
                    "master: not given, and the {where_} network namespace has no default route to take it from"
                ))
            })?,
        };
        let link = match conf.vlan {
            None => master,
            Some(vid) if create => trunk::ensure(&mut nl, &master, vid)?,
            Some(vid) => {
                let name = trunk::sub_name(&master.name, vid)?;
                nl.link_by_name(&name)?
                    .ok_or_else(|| CniError::new(Code::Kernel, format!("VLAN sub-interface {name} is missing")))?
            }
        };
        Ok(Parent { ns, nl, link })
    }
}

/// The interface of the first default route, as the reference plugin picks the master.
fn default_route_link(nl: &mut Netlink) -> CniResult<Option<Link>> {
    let oif = nl.routes()?.into_iter().find(|r| r.dst.prefix_len() == 0).and_then(|r| r.oif);
    match oif {
        Some(index) => Ok(nl.link_by_index(index)?),
        None => Ok(None),
    }
}

/// The macvlan on `parent` (its namespace's socket, and the link), then IPAM; each undone
/// through `undo` if a later step fails.
fn add_on_parent<'a>(
    req: &'a Request,
    conf: &MacvlanConf,
    ns: &'a NetNs,
    (parent_nl, parent): (&mut Netlink, &Link),
    mac: Option<MacAddr>,
    undo: &mut Rollback<'a>,
) -> CniResult<RunResult> {
    if let Some(mtu) = conf.mtu {
        if mtu > parent.mtu {
            return Err(CniError::invalid_config(format!("mtu: {mtu} is larger than the MTU of {} ({})", parent.name, parent.mtu)));
        }
    }
    let mut container = Netlink::open_in(ns)?;
    iface::require_unused_name(&mut container, req)?;
    // Made under a temporary name directly in the container (the final name may exist on
    // the host), then renamed there. The name is the attachment's, so a DEL after an ADD
    // killed before the rename finds the macvlan; one such ADD's is replaced here.
    let tmp_name = temporary_name(&req.container_id, &req.ifname);
    if let Some(stale) = container.link_by_name(&tmp_name)? {
        container.delete_link(stale.index)?;
    }
    let spec = MacvlanSpec {
        name: &tmp_name,
        parent: parent.index,
        mode: conf.mode,
        mtu: conf.mtu,
        mac,
        netns: if conf.link_in_container { None } else { Some(ns) },
    };
    parent_nl.create_macvlan(&spec)?;
    let link = container
        .link_by_name(&tmp_name)?
        .ok_or_else(|| CniError::kernel(format!("macvlan {tmp_name} did not appear in the container"), "missing after create"))?;
    let index = link.index;
    undo.push("deleting the macvlan", move || Netlink::open_in(ns)?.delete_link(index).map(drop).map_err(CniError::from));
    container.rename(index, &req.ifname)?;
    // IPAM once CNI_IFNAME exists in the container, as in the reference plugin: a DHCP client
    // (berth-dhcp, the reference dhcp) leases on that interface.
    let allocated = if conf.with_ipam { IPAM.add_undoable(req, undo)? } else { RunResult::default() };
    configure(req, ns, &mut container, &link, &allocated)
}

/// The macvlan's name in the container until it is renamed CNI_IFNAME: the attachment's own
/// (container ID and CNI_IFNAME), so DEL can find it.
pub fn temporary_name(container_id: &str, ifname: &str) -> String {
    // The NUL keeps ("ab", "c") and ("a", "bc") apart.
    let hash = berth_util::hash::fnv1a32([container_id.as_bytes(), &[0], ifname.as_bytes()]);
    format!("mvtmp{hash:08x}")
}

/// Gives the new link (already named CNI_IFNAME) the IPAM result, and builds the ADD result.
fn configure(req: &Request, ns: &NetNs, container: &mut Netlink, link: &Link, allocated: &RunResult) -> CniResult<RunResult> {
    // Tell the neighbours about the new MAC at once, as the reference plugin does (IPv4's
    // arp_notify is set by iface::configure); best effort (no IPv6 in the namespace is fine).
    ns.run(|| {
        let _ = sysctl::set(&format!("net/ipv6/conf/{}/ndisc_notify", req.ifname), "1");
    })?;
    let link = container
        .link_by_index(link.index)?
        .ok_or_else(|| CniError::kernel(format!("{} vanished from the container", req.ifname), "missing after rename"))?;
    iface::configure(ns, container, &link, allocated, false)?;

    Ok(iface::add_result(req, ns, &link, vec![], allocated.clone()))
}
