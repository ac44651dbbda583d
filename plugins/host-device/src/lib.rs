//! `berth-host-device`: moves an interface of the host itself (a NIC, a veth, a VLAN
//! sub-interface) into the container under CNI_IFNAME, with addresses and routes from IPAM;
//! DEL gives it back to the host under its own name. The reference `host-device` plugin's
//! `device` and `hwaddr` keys, and what `pipework --direct-phys` does.
//!
//! The interface's own name is kept in its alias (IFLA_IFALIAS, which moves with it), so DEL
//! can rename it back even when the configuration named it by MAC.

use berth_cni::error::{CniError, CniResult, Code};
use berth_cni::iface;
use berth_cni::ipam::Ipam;
use berth_cni::rollback::Rollback;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{decode_plugin_conf, RunResult};
use berth_netlink::{Link, Netlink};
use berth_netns::NetNs;
use serde::Deserialize;

/// berth's own IPAM plugins run in-process; any other `ipam.type` is exec'd from CNI_PATH.
const IPAM: Ipam = Ipam::new(berth_ipam::BUILTINS);
/// Marks an interface this plugin moved, and says what it was called on the host.
const ALIAS_PREFIX: &str = "berth-host-device:";

pub struct HostDevicePlugin;

#[derive(Debug, Deserialize)]
struct RawConf {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    hwaddr: Option<String>,
    #[serde(rename = "kernelpath", default)]
    kernel_path: Option<String>,
    #[serde(rename = "pciBusID", default)]
    pci_bus_id: Option<String>,
}

/// Which host interface: by name or by MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Device {
    Name(String),
    Mac(String),
}

/// Checks a request's configuration as ADD does, before anything is touched: for the fuzz
/// targets (berth-fuzz), which must not reach the kernel.
#[doc(hidden)]
pub fn check_config(req: &Request) -> CniResult<()> {
    parse(req).map(drop)
}

fn parse(req: &Request) -> CniResult<(Device, bool)> {
    let raw: RawConf = decode_plugin_conf(&req.stdin)?;
    if raw.kernel_path.is_some() || raw.pci_bus_id.is_some() {
        return Err(CniError::invalid_config("kernelpath and pciBusID are not supported: name the device or its hwaddr"));
    }
    let device = match (raw.device.filter(|d| !d.is_empty()), raw.hwaddr.filter(|h| !h.is_empty())) {
        (Some(name), None) => Device::Name(name),
        (None, Some(mac)) => Device::Mac(mac.to_ascii_lowercase()),
        (Some(_), Some(_)) => return Err(CniError::invalid_config("device and hwaddr: give one, not both")),
        (None, None) => return Err(CniError::invalid_config("device: required (or hwaddr)")),
    };
    Ok((device, req.conf.ipam.as_ref().is_some_and(|i| !i.plugin_type.is_empty())))
}

fn find(host: &mut Netlink, device: &Device) -> CniResult<Link> {
    lookup(host, device)?.ok_or_else(|| CniError::invalid_config(format!("the host has no interface {device:?}")))
}

fn lookup(host: &mut Netlink, device: &Device) -> CniResult<Option<Link>> {
    Ok(match device {
        Device::Name(name) => host.link_by_name(name)?,
        Device::Mac(mac) => host.links()?.into_iter().find(|l| l.mac.is_some_and(|m| m.to_string() == *mac)),
    })
}

impl Plugin for HostDevicePlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let (device, with_ipam) = parse(req)?;
        let ns = NetNs::open(req.netns_path()?)?;
        let mut container = Netlink::open_in(&ns)?;
        iface::require_unused_name(&mut container, req)?;
        let mut host = Netlink::open()?;
        let link = find(&mut host, &device)?;
        let mut undo = Rollback::new();
        let allocated = if with_ipam { IPAM.add_undoable(req, &mut undo)? } else { RunResult::default() };
        let moved = move_in(req, &ns, &mut host, &mut container, &link, &mut undo)?;
        iface::configure(&ns, &mut container, &moved, &allocated, false)?;
        let moved = container.link_by_index(moved.index)?.unwrap_or(moved);
        undo.commit();
        Ok(iface::add_result(req, &ns, &moved, Vec::new(), allocated))
    }

    /// The reverse of ADD: the interface back to the host under its own name, then the
    /// addresses. Succeeds when the interface or the namespace is gone (the kernel gives a
    /// physical interface back to the host itself when a namespace goes).
    fn del(&self, req: &Request) -> CniResult<()> {
        let (device, with_ipam) = parse(req)?;
        if let Some(ns) = req.netns.as_ref().and_then(|p| NetNs::open(p).ok()) {
            give_back(req, &ns)?;
        }
        // An ADD killed before the move, or a DEL killed after it, leaves the mark on the
        // interface in the host.
        if let Some(link) = lookup(&mut Netlink::open()?, &device)? {
            unmark(&link.name)?;
        }
        if with_ipam {
            IPAM.del(req)?;
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let (_, with_ipam) = parse(req)?;
        let prev = iface::prev_result(req)?;
        let ns = NetNs::open(req.netns_path()?)?;
        let mut nl = Netlink::open_in(&ns)?;
        let link = nl.link_by_name(&req.ifname)?.ok_or_else(|| {
            CniError::new(Code::Kernel, format!("{} is missing from the container", req.ifname))
        })?;
        let sandbox = ns.path().display().to_string();
        let index = prev.interfaces.iter().position(|i| i.name == req.ifname && i.sandbox == sandbox).ok_or_else(|| {
            CniError::new(Code::Kernel, format!("prevResult has no interface {} in {sandbox}", req.ifname))
        })?;
        iface::check(&mut nl, &link, &prev, index)?;
        if with_ipam {
            IPAM.check(req)?;
        }
        Ok(())
    }

    /// Releases the addresses of this network's attachments that are not in
    /// `cni.dev/valid-attachments` (an ADD killed after IPAM, a container gone without a DEL).
    fn gc(&self, req: &Request) -> CniResult<()> {
        let (_, with_ipam) = parse(req)?;
        if with_ipam {
            IPAM.forward(req)?;
        }
        Ok(())
    }
}

/// Down, marked with its host name, into the container, renamed to CNI_IFNAME there. Each
/// step's undo brings it back as it was.
fn move_in<'a>(
    req: &'a Request,
    ns: &'a NetNs,
    host: &mut Netlink,
    container: &mut Netlink,
    link: &Link,
    undo: &mut Rollback<'a>,
) -> CniResult<Link> {
    if link.kind.as_deref() == Some("bridge") {
        return Err(CniError::invalid_config(format!("{} is a bridge: move a port, not the bridge", link.name)));
    }
    host.set_down(link.index)?;
    host.set_alias(link.index, &format!("{ALIAS_PREFIX}{}", link.name))?;
    host.move_to_netns(link.index, ns)?;
    undo.push("giving the interface back", move || give_back(req, ns));
    let moved = container
        .link_by_name(&link.name)?
        .ok_or_else(|| CniError::kernel(format!("{} did not arrive in the container", link.name), "missing after the move"))?;
    container.rename(moved.index, &req.ifname)?;
    Ok(Link { name: req.ifname.clone(), ..moved })
}

/// CNI_IFNAME in the container, when this plugin moved it there: down, its host name back,
/// into the namespace this plugin runs in, and only there without its mark: a DEL killed
/// on the way leaves the interface marked, so the next one still knows it.
fn give_back(req: &Request, ns: &NetNs) -> CniResult<()> {
    let mut container = Netlink::open_in(ns)?;
    // Under CNI_IFNAME, or still under its host name when ADD failed before the rename (or a
    // DEL was killed after it).
    let mut candidates = vec![req.ifname.clone()];
    for link in container.links_detailed()? {
        if link.alias.as_deref().is_some_and(|a| a.starts_with(ALIAS_PREFIX)) {
            candidates.push(link.link.name.clone());
        }
    }
    for name in candidates {
        let Some(link) = container.link_by_name(&name)? else { continue };
        let Some(detail) = container.link_detail(link.index)? else { continue };
        let Some(host_name) = detail.alias.as_deref().and_then(|a| a.strip_prefix(ALIAS_PREFIX)) else { continue };
        let host_name = host_name.to_string();
        container.set_down(link.index)?;
        container.rename(link.index, &host_name)?;
        container.move_to_netns(link.index, &NetNs::current()?)?;
        return unmark(&host_name);
    }
    Ok(())
}

/// Clears this plugin's mark from the host interface `name`, if it carries it.
fn unmark(name: &str) -> CniResult<()> {
    let mut host = Netlink::open()?;
    let Some(link) = host.link_by_name(name)? else { return Ok(()) };
    let marked = host.link_detail(link.index)?.and_then(|d| d.alias).is_some_and(|a| a.starts_with(ALIAS_PREFIX));
    if marked {
        host.set_alias(link.index, "")?;
    }
    Ok(())
}
