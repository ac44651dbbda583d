//! `berth-bandwidth`: a chained plugin, after berth-bridge, berth-ovs or the reference bridge,
//! that shapes a container's traffic as the reference `bandwidth` plugin does, with the same
//! keys. It finds the host end of the container's veth in `prevResult`; what the container
//! receives is shaped by a token bucket (tbf) on that host end's egress; what it sends arrives
//! on the host end's ingress, where no qdisc can queue, so a filter redirects it to an ifb
//! device whose egress carries the second token bucket. All of it over netlink.

mod config;
mod owner;

pub use config::{Limit, Shaping};
pub use owner::ifb_name;

use berth_cni::iface;
use berth_cni::rollback::Rollback;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{Interface, RunResult};
use berth_cni::{CniError, CniResult, Code};
use berth_netlink::{Link, Netlink, TokenBucket, TBF_HANDLE};
use berth_netns::NetNs;
use owner::{ifb_in_place, is_ifb_name, IfbName, Owner, RecordedOwner};

pub struct BandwidthPlugin;

/// How long a packet may wait in a token bucket's queue before it is dropped: the reference
/// plugin's choice, which sets the queue's size in bytes (`limit`).
const LATENCY_MS: u64 = 25;

impl Plugin for BandwidthPlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let shaping = Shaping::parse(req)?;
        let mut result = req.conf.prev_result()?.ok_or_else(|| {
            CniError::invalid_config("prevResult is required: chain berth-bandwidth after the plugin that creates the veth")
        })?;
        if shaping.is_empty() {
            return Ok(result);
        }
        let mut host = Netlink::open()?;
        let veth = host_veth(req, &result, &mut host)?.ok_or_else(|| {
            CniError::invalid_config("prevResult.interfaces names no host end of a veth (a host-side interface without sandbox)")
        })?;
        shaping.check_burst_fits(veth.mtu)?;
        // A failure leaves nothing this ADD made; what an earlier ADD made stays.
        let mut undo = Rollback::new();
        shape_ingress(&mut host, &veth, shaping.ingress, &mut undo)?;
        let ifb = shape_egress(req, &mut host, &veth, shaping.egress, &mut undo)?;
        undo.commit();
        if let Some(ifb) = ifb {
            result.push_interface(Interface { name: ifb.name, mac: iface::mac_string(ifb.mac), ..Default::default() });
        }
        Ok(result)
    }

    /// Removes the ifb and the host end's qdiscs; succeeds when they are gone already, and
    /// without prevResult (the ifb is found by its name; the veth's qdiscs go with the veth).
    /// A link of that name that is not this attachment's ifb stays.
    fn del(&self, req: &Request) -> CniResult<()> {
        let mut host = Netlink::open()?;
        let ifb = ifb_in_place(&mut host, &Owner::of(req))?.ours();
        if let Some(prev) = req.conf.prev_result()? {
            if let Some(veth) = host_veth(req, &prev, &mut host)? {
                host.delete_root_qdisc(veth.index, "tbf", TBF_HANDLE)?;
                remove_redirect(&mut host, &veth, ifb.as_ref())?;
            }
        }
        let Some(ifb) = ifb else { return Ok(()) };
        if req.options.return_before_kernel_frees_links {
            host.delete_link_detached(ifb.index)?;
        } else {
            host.delete_link(ifb.index)?;
        }
        Ok(())
    }

    /// The host end carries a tbf of the ingress rate and redirects to an ifb carrying one of
    /// the egress rate, as configured.
    fn check(&self, req: &Request) -> CniResult<()> {
        let shaping = Shaping::parse(req)?;
        let prev = iface::prev_result(req)?;
        let mut host = Netlink::open()?;
        let veth = host_veth(req, &prev, &mut host)?
            .ok_or_else(|| CniError::invalid_config("prevResult.interfaces names no host end of a veth"))?;
        if let Some(limit) = shaping.ingress {
            expect_bucket(&mut host, &veth, limit, "ingress")?;
        }
        if let Some(limit) = shaping.egress {
            let owner = Owner::of(req);
            let name = owner.ifb_name();
            let ifb = match ifb_in_place(&mut host, &owner)? {
                IfbName::Ours(ifb) => ifb,
                IfbName::Free => return Err(CniError::new(Code::Kernel, format!("the ifb {name} is gone"))),
                IfbName::Taken(why) => return Err(CniError::new(Code::Kernel, why)),
            };
            expect_bucket(&mut host, &ifb, limit, "egress")?;
            if !host.ingress_redirects(veth.index)?.contains(&ifb.index) {
                return Err(CniError::new(Code::Kernel, format!("{} no longer redirects its ingress to {name}", veth.name)));
            }
        }
        Ok(())
    }

    /// Removes the ifbs of this network's attachments that are not in
    /// `cni.dev/valid-attachments` (the qdiscs on their veths went with the veths), and the
    /// ifbs of ADDs killed before they named their owner.
    fn gc(&self, req: &Request) -> CniResult<()> {
        let keep = req.conf.valid_attachments()?;
        let mut host = Netlink::open()?;
        let mut unowned = Vec::new();
        for link in host.links_detailed()?.into_iter().filter(|l| l.link.kind.as_deref() == Some("ifb")) {
            match link.alias.as_deref().and_then(RecordedOwner::parse) {
                Some(owner) => {
                    let kept = keep.iter().any(|a| owner.is_attachment(&a.container_id, &a.ifname));
                    if owner.is_of_network(&req.conf.name) && !kept {
                        host.delete_link(link.link.index)?;
                    }
                }
                None if is_ifb_name(&link.link.name) => unowned.push(link.link),
                None => {}
            }
        }
        remove_unused_ifbs(&mut host, unowned)
    }
}

/// Removes the ifbs among `unowned` (ours by their name, without an alias) that no link
/// redirects to: an ADD killed between the ifb's creation and its alias made them (the
/// creation is the slow step, so a kill often lands there). They shape nothing, and their
/// network is unknown: GC of any network removes them. (An ADD under way is not valid yet:
/// a runtime does not collect garbage while it attaches.)
fn remove_unused_ifbs(host: &mut Netlink, unowned: Vec<Link>) -> CniResult<()> {
    if unowned.is_empty() {
        return Ok(());
    }
    let mut used = Vec::new();
    for link in host.links()? {
        used.extend(host.ingress_redirects(link.index)?);
    }
    for ifb in unowned.into_iter().filter(|ifb| !used.contains(&ifb.index)) {
        host.delete_link(ifb.index)?;
    }
    Ok(())
}

/// The host end of the container's veth: a host-side interface of `prev` (one without a
/// sandbox) that is a veth here. With several, the one whose peer is the container's
/// interface. `None` when prevResult names none that still exists.
fn host_veth(req: &Request, prev: &RunResult, host: &mut Netlink) -> CniResult<Option<Link>> {
    let mut veths = Vec::new();
    for iface in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
        if let Some(link) = host.link_by_name(&iface.name)?.filter(|l| l.kind.as_deref() == Some("veth")) {
            veths.push(link);
        }
    }
    if veths.len() <= 1 {
        return Ok(veths.pop());
    }
    let peer = container_peer_index(req)?;
    Ok(veths.into_iter().find(|v| Some(v.index) == peer))
}

/// The host-side index of the container interface's veth peer, seen from the container.
fn container_peer_index(req: &Request) -> CniResult<Option<u32>> {
    let Some(ns) = req.netns.as_ref().and_then(|p| NetNs::open(p).ok()) else { return Ok(None) };
    let mut nl = Netlink::open_in(&ns)?;
    Ok(nl.link_by_name(&req.ifname)?.and_then(|l| l.peer_index))
}

/// A direction's limit as tbf takes it: bytes, with a queue of [`LATENCY_MS`] at the rate
/// plus the burst.
pub fn token_bucket(limit: Limit) -> TokenBucket {
    let rate = limit.rate / 8;
    let burst = u32::try_from(limit.burst / 8).unwrap_or(u32::MAX);
    let queued = rate.saturating_mul(LATENCY_MS) / 1000 + u64::from(burst);
    TokenBucket { rate, burst, limit: u32::try_from(queued).unwrap_or(u32::MAX) }
}

/// What the container receives: a tbf as the host end's root qdisc, or none of ours.
fn shape_ingress<'a>(host: &mut Netlink, veth: &Link, limit: Option<Limit>, undo: &mut Rollback<'a>) -> CniResult<()> {
    let Some(limit) = limit else {
        // A new ADD without an ingress limit: an earlier one's goes.
        host.delete_root_qdisc(veth.index, "tbf", TBF_HANDLE)?;
        return Ok(());
    };
    let existed = host.qdiscs(veth.index)?.iter().any(|q| q.is_root() && q.kind == "tbf" && q.handle == TBF_HANDLE);
    host.set_root_tbf(veth.index, &token_bucket(limit))?;
    if !existed {
        let index = veth.index;
        undo.push("the host end's tbf", move || Ok(Netlink::open()?.delete_root_qdisc(index, "tbf", TBF_HANDLE).map(drop)?));
    }
    Ok(())
}

/// What the container sends: the host end's ingress redirected to an ifb carrying a tbf.
/// Returns the ifb.
fn shape_egress<'a>(
    req: &Request,
    host: &mut Netlink,
    veth: &Link,
    limit: Option<Limit>,
    undo: &mut Rollback<'a>,
) -> CniResult<Option<Link>> {
    let owner = Owner::of(req);
    let in_place = ifb_in_place(host, &owner)?;
    let Some(limit) = limit else {
        // A new ADD without an egress limit: an earlier one's ifb goes (another's link stays).
        let earlier = in_place.ours();
        remove_redirect(host, veth, earlier.as_ref())?;
        if let Some(ifb) = earlier {
            host.delete_link(ifb.index)?;
        }
        return Ok(None);
    };
    let ifb = match in_place {
        IfbName::Taken(why) => return Err(CniError::new(Code::Kernel, why)),
        IfbName::Ours(ifb) => {
            // One an ADD killed before its alias left has none: GC must know whose it is.
            host.set_alias(ifb.index, &owner.alias())?;
            ifb
        }
        IfbName::Free => {
            let ifb = host.create_ifb(&owner.ifb_name(), Some(veth.mtu), &owner.alias())?;
            let index = ifb.index;
            undo.push("the ifb", move || Ok(Netlink::open()?.delete_link(index).map(drop)?));
            ifb
        }
    };
    host.set_root_tbf(ifb.index, &token_bucket(limit))?;
    if host.ingress_redirects(veth.index)? != [ifb.index] {
        // Nothing, or a redirect to an ifb an earlier ADD left: start the ingress side anew.
        host.delete_ingress_qdisc(veth.index)?;
        host.add_ingress_qdisc(veth.index)?;
        let index = veth.index;
        undo.push("the host end's ingress qdisc", move || Ok(Netlink::open()?.delete_ingress_qdisc(index).map(drop)?));
        host.redirect_ingress(veth.index, ifb.index)?;
    }
    Ok(Some(ifb))
}

/// Removes the host end's ingress qdisc when its filters redirect to `ifb` only (or to a link
/// that is gone), leaving any other's alone.
fn remove_redirect(host: &mut Netlink, veth: &Link, ifb: Option<&Link>) -> CniResult<()> {
    let targets = host.ingress_redirects(veth.index)?;
    let mut ours = !targets.is_empty();
    for target in &targets {
        let is_ifb = ifb.is_some_and(|i| i.index == *target);
        ours &= is_ifb || host.link_by_index(*target)?.is_none();
    }
    if ours {
        host.delete_ingress_qdisc(veth.index)?;
    }
    Ok(())
}

/// `link`'s root qdisc is a tbf with `limit`'s rate and burst (to the kernel's tick).
fn expect_bucket(host: &mut Netlink, link: &Link, limit: Limit, direction: &str) -> CniResult<()> {
    let want = token_bucket(limit);
    let qdiscs = host.qdiscs(link.index)?;
    let Some(have) = qdiscs.iter().find(|q| q.is_root() && q.kind == "tbf").and_then(|q| q.token_bucket) else {
        return Err(CniError::new(Code::Kernel, format!("{} carries no tbf for the {direction} limit", link.name)));
    };
    // The kernel keeps the burst as a time in whole ticks: allow a tick's worth of bytes.
    let slack = (want.rate / 1_000_000).max(1) as u32 + want.burst / 1000;
    if have.rate != want.rate || have.burst.abs_diff(want.burst) > slack {
        return Err(CniError::new(
            Code::Kernel,
            format!(
                "the {direction} tbf on {} shapes to {} bytes/s, burst {} bytes; configured {} bytes/s, burst {} bytes",
                link.name, have.rate, have.burst, want.rate, want.burst
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_in_bytes_with_a_queue_of_25_ms() {
        let b = token_bucket(Limit { rate: 8_000_000, burst: 262_144 });
        assert_eq!(b, TokenBucket { rate: 1_000_000, burst: 32_768, limit: 25_000 + 32_768 });
    }
}
