//! berth-macvlan: gives a container a macvlan link on a host interface (the "master"), with
//! its own MAC on the master's wire, and addresses and routes from the IPAM plugin.
//!
//! With `vlan`, the parent is the 802.1q sub-interface `MASTER.VID` (pipework's `eth0.100`),
//! created when missing and removed after the last container on it goes (see [`trunk`]).

mod config;
pub mod trunk;

pub use config::MacvlanConf;

use berth_netlink::{Link, MacAddr, MacvlanSpec, Netlink};
use berth_netns::NetNs;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::RunResult;
use berth_cni::ipam::Ipam;
use berth_netns::sysctl;
use berth_cni::{CniError, CniResult, Code};

pub struct MacvlanPlugin;

/// berth's own IPAM plugins run in-process; any other `ipam.type` is exec'd from CNI_PATH.
const IPAM: Ipam = Ipam::new(berth_ipam::BUILTINS);

pub fn run() -> ! {
    berth_cni::skel::run_main(&MacvlanPlugin)
}

impl Plugin for MacvlanPlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let conf = MacvlanConf::parse(req)?;
        let mac = conf.container_mac(req)?;
        let ns = NetNs::open(req.netns_path()?)?;
        // Held to the end of the ADD, so no DEL removes the sub-interface under us.
        let _trunk_lock = conf.vlan.map(|_| trunk::lock()).transpose()?;
        let mut parent = Parent::find(&conf, &ns, true)?;
        match add_on_parent(req, &conf, &ns, &mut parent, mac) {
            Ok(result) => Ok(result),
            Err(e) => {
                if conf.vlan.is_some() {
                    if let Err(e) = trunk::release_if_unused(&mut parent.nl, &parent.ns, &parent.link.name) {
                        eprintln!("removing {} after a failed ADD: {e}", parent.link.name);
                    }
                }
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        let conf = MacvlanConf::parse(req)?;
        if conf.with_ipam {
            IPAM.del(req)?;
        }
        let container = req.netns.as_ref().and_then(|p| NetNs::open(p).ok());
        let _trunk_lock = conf.vlan.map(|_| trunk::lock()).transpose()?;
        if let Some(ns) = &container {
            let mut nl = Netlink::open_in(ns)?;
            if let Some(link) = nl.link_by_name(&req.ifname)? {
                // Gone from every list when this returns, so the sub-interface's users below
                // no longer count it. The process left waiting for the kernel to free it also
                // keeps the trunk lock until then, as a synchronous delete did.
                nl.delete_link_detached(link.index)?;
            }
        }
        let Some(vid) = conf.vlan else { return Ok(()) };
        // The namespace holding the sub-interface; with linkInContainer it went with the
        // container's namespace, if that is gone.
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

    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = MacvlanConf::parse(req)?;
        let prev = req.conf.prev_result()?.ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        if conf.with_ipam {
            IPAM.check(req)?;
        }
        let mismatch = |what: String| CniError::new(Code::Kernel, what);
        let ns = NetNs::open(req.netns_path()?)?;
        let sandbox = ns.path().display().to_string();
        let index = prev
            .interfaces
            .iter()
            .position(|i| i.name == req.ifname && i.sandbox == sandbox)
            .ok_or_else(|| mismatch(format!("prevResult has no interface {} in {sandbox}", req.ifname)))?;
        let parent = Parent::find(&conf, &ns, false)?;
        let mut container = Netlink::open_in(&ns)?;
        let link = container
            .link_by_name(&req.ifname)?
            .ok_or_else(|| mismatch(format!("{} is missing from the container", req.ifname)))?;
        let detail = container
            .link_detail(link.index)?
            .ok_or_else(|| mismatch(format!("{} is missing from the container", req.ifname)))?;
        if link.kind.as_deref() != Some("macvlan") {
            return Err(mismatch(format!("{} is a {:?} link, not a macvlan", req.ifname, link.kind)));
        }
        if detail.macvlan_mode != Some(conf.mode) {
            let found = detail.macvlan_mode.map_or("unknown", |m| m.as_str());
            return Err(mismatch(format!("{} is in macvlan mode {found}, the configuration says {}", req.ifname, conf.mode)));
        }
        let expected_nsid = if conf.link_in_container { None } else { container.nsid_of(&parent.ns)? };
        if detail.parent != Some(parent.link.index) || detail.parent_netnsid != expected_nsid {
            return Err(mismatch(format!("{} is not a macvlan of {}", req.ifname, parent.link.name)));
        }
        berth_cni::iface::check(&mut container, &link, &prev, index)
    }
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

/// IPAM, then the link; what an error leaves is cleaned up here.
fn add_on_parent(
    req: &Request,
    conf: &MacvlanConf,
    ns: &NetNs,
    parent: &mut Parent,
    mac: Option<MacAddr>,
) -> CniResult<RunResult> {
    if let Some(mtu) = conf.mtu {
        if mtu > parent.link.mtu {
            return Err(CniError::invalid_config(format!(
                "mtu: {mtu} is larger than the MTU of {} ({})",
                parent.link.name, parent.link.mtu
            )));
        }
    }
    let mut container = Netlink::open_in(ns)?;
    berth_cni::iface::require_unused_name(&mut container, req)?;
    let allocated = if conf.with_ipam { IPAM.add(req)? } else { RunResult::default() };
    // Made under a temporary name directly in the container (the final name may exist on
    // the host), then renamed there.
    let tmp_name = format!("berthmv{}", std::process::id());
    let spec = MacvlanSpec {
        name: &tmp_name,
        parent: parent.link.index,
        mode: conf.mode,
        mtu: conf.mtu,
        mac,
        netns: if conf.link_in_container { None } else { Some(ns) },
    };
    let made = parent.nl.create_macvlan(&spec).map_err(CniError::from).and_then(|()| {
        container
            .link_by_name(&tmp_name)?
            .ok_or_else(|| CniError::kernel(format!("macvlan {tmp_name} did not appear in the container"), "missing after create"))
    });
    let result = made.and_then(|link| {
        configure(req, ns, &mut container, &link, &allocated).inspect_err(|_| {
            let _ = container.delete_link(link.index);
        })
    });
    if result.is_err() && conf.with_ipam {
        IPAM.release_after_failed_add(req);
    }
    result
}

/// Names the new link, gives it the IPAM result, and builds the ADD result.
fn configure(req: &Request, ns: &NetNs, container: &mut Netlink, link: &Link, allocated: &RunResult) -> CniResult<RunResult> {
    container.rename(link.index, &req.ifname)?;
    // Tell the neighbours about the new MAC at once, as the reference plugin does; best
    // effort (no IPv6 in the namespace is fine).
    ns.run(|| {
        let _ = sysctl::set(&format!("net/ipv4/conf/{}/arp_notify", req.ifname), "1");
        let _ = sysctl::set(&format!("net/ipv6/conf/{}/ndisc_notify", req.ifname), "1");
    })?;
    let link = container
        .link_by_index(link.index)?
        .ok_or_else(|| CniError::kernel(format!("{} vanished from the container", req.ifname), "missing after rename"))?;
    berth_cni::iface::configure(ns, container, &link, allocated, false)?;

    Ok(berth_cni::iface::add_result(req, ns, &link, vec![], allocated.clone()))
}
