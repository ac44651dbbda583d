//! The `vxlan` option: one VXLAN port on the network's bridge, shared by all its containers,
//! made by the first ADD, its flood list brought in line with `remotes` by every ADD, and
//! removed by the DEL that leaves it the bridge's only port (or by `berth net rm`).

use crate::config::{BridgeConf, VxlanConf};
use berth_cni::rollback::Rollback;
use berth_cni::{CniError, CniResult, Code};
use berth_netlink::{Link, Netlink, VxlanSpec, FLOOD_MAC};
use std::net::IpAddr;

/// The underlay link named by `vxlan.dev`, if any; an error when it is missing.
pub(crate) fn underlay(host: &mut Netlink, conf: &BridgeConf) -> CniResult<Option<Link>> {
    let Some(dev) = conf.vxlan.as_ref().and_then(|v| v.dev.as_deref()) else { return Ok(None) };
    let link = host
        .link_by_name(dev)?
        .ok_or_else(|| CniError::new(Code::Kernel, format!("vxlan: underlay interface {dev} does not exist")))?;
    Ok(Some(link))
}

/// The MTU the bridge, its ports and the containers get: `mtu` when set, else the
/// underlay's less the encapsulation's overhead, so that full-size frames still fit in one
/// underlay packet once encapsulated.
pub(crate) fn effective_mtu(conf: &BridgeConf, underlay: Option<&Link>) -> Option<u32> {
    match &conf.vxlan {
        Some(vxlan) => Some(conf.mtu.unwrap_or_else(|| vxlan.mtu(underlay.map(|l| l.mtu)))),
        None => conf.mtu,
    }
}

/// Makes sure the VXLAN port exists on `bridge`, up, with its flood list as configured. A
/// port made here is removed again if the ADD fails later.
pub(crate) fn ensure_port<'a>(
    host: &mut Netlink,
    vxlan: &VxlanConf,
    bridge: &Link,
    underlay: Option<&Link>,
    mtu: Option<u32>,
    undo: &mut Rollback<'a>,
) -> CniResult<()> {
    let name = vxlan.device_name();
    let link = match host.link_by_name(&name)? {
        Some(link) => link,
        None => create_port(host, vxlan, &name, underlay, mtu, undo)?,
    };
    if link.kind.as_deref() != Some("vxlan") {
        return Err(CniError::new(Code::Kernel, format!("vxlan: link {name} exists and is not a VXLAN device")));
    }
    match link.master {
        Some(master) if master == bridge.index => {}
        Some(_) => {
            return Err(CniError::new(Code::Kernel, format!("vxlan: {name} (VNI {}) is a port of another bridge than {}", vxlan.vni, bridge.name)))
        }
        None => host.set_master(link.index, bridge.index)?,
    }
    if !vxlan.remotes.is_empty() {
        sync_flood_list(host, link.index, vxlan)?;
    }
    if !link.up {
        host.set_up(link.index)?;
    }
    Ok(())
}

fn create_port<'a>(
    host: &mut Netlink,
    vxlan: &VxlanConf,
    name: &str,
    underlay: Option<&Link>,
    mtu: Option<u32>,
    undo: &mut Rollback<'a>,
) -> CniResult<Link> {
    let spec = VxlanSpec { name, vni: vxlan.vni, port: vxlan.port, group: vxlan.group, dev: underlay.map(|l| l.index), mtu };
    match host.create_vxlan(&spec) {
        Ok(link) => {
            let index = link.index;
            undo.push("remove the VXLAN port", move || {
                Netlink::open()?.delete_link(index)?;
                Ok(())
            });
            Ok(link)
        }
        // EEXIST: another ADD made it meanwhile, or another device has this VNI and port.
        Err(e) if e.errno() == Some(libc::EEXIST) => match host.link_by_name(name)? {
            Some(link) => Ok(link),
            None => Err(CniError::from(e).with_details(format!("another VXLAN device already has VNI {} on port {}", vxlan.vni, vxlan.port))),
        },
        Err(e) => Err(e.into()),
    }
}

/// The all-zeros entries of the port become exactly `remotes`: missing ones are added; ones
/// no longer configured (a peer whose underlay address changed) are removed, with what was
/// learned behind them, so that unicast frames are not sent to the old address either.
fn sync_flood_list(host: &mut Netlink, index: u32, vxlan: &VxlanConf) -> CniResult<()> {
    let entries = host.fdb_entries(index)?;
    let flooded: Vec<IpAddr> = entries.iter().filter(|(mac, _)| *mac == FLOOD_MAC).map(|(_, ip)| *ip).collect();
    for remote in vxlan.remotes.iter().filter(|r| !flooded.contains(r)) {
        host.fdb_append_flood(index, *remote)?;
    }
    for (mac, stale) in entries.iter().filter(|(_, ip)| flooded.contains(ip) && !vxlan.remotes.contains(ip)) {
        host.fdb_del(index, *mac, *stale)?;
    }
    Ok(())
}

/// After a DEL: the VXLAN port goes when no container port is left on the bridge.
pub(crate) fn remove_if_unused(conf: &BridgeConf) -> CniResult<()> {
    let Some(vxlan) = &conf.vxlan else { return Ok(()) };
    let mut host = Netlink::open()?;
    let Some(bridge) = host.link_by_name(&conf.bridge)? else { return Ok(()) };
    let Some(port) = host.link_by_name(&vxlan.device_name())? else { return Ok(()) };
    let others = host.links()?.into_iter().filter(|l| l.master == Some(bridge.index) && l.index != port.index).count();
    if others == 0 && port.master == Some(bridge.index) {
        host.delete_link(port.index)?;
    }
    Ok(())
}

/// Removes the network's VXLAN port from `bridge` whatever is still attached (`berth net rm`).
/// `Ok(false)` when there was none.
pub fn remove_vxlan_port(bridge: &str, vxlan: &VxlanConf) -> CniResult<bool> {
    let mut host = Netlink::open()?;
    let Some(port) = host.link_by_name(&vxlan.device_name())? else { return Ok(false) };
    let master = port.master.map(|m| host.link_by_index(m)).transpose()?.flatten();
    if port.kind.as_deref() != Some("vxlan") || master.is_some_and(|m| m.name != bridge) {
        return Ok(false); // not this network's
    }
    Ok(host.delete_link(port.index)?)
}
