//! `berth-none`: Docker's `--network none`. The container keeps its own namespace with only
//! `lo`, brought up (what the reference `loopback` plugin does).

use berth_cni::error::{CniError, CniResult, Code};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{Interface, IpConfig, RunResult};

pub struct NonePlugin;

const LOOPBACK: &str = "lo";

impl Plugin for NonePlugin {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let ns = NetNs::open(req.netns_path()?)?;
        let mut nl = Netlink::open_in(&ns)?;
        let lo = nl.link_by_name(LOOPBACK)?.ok_or_else(|| CniError::kernel("no loopback device in the container", "lo missing"))?;
        nl.set_up(lo.index)?;
        let mut result = RunResult::default();
        let index = result.push_interface(Interface {
            name: LOOPBACK.into(),
            mac: "00:00:00:00:00:00".into(),
            sandbox: ns.path().display().to_string(),
            ..Default::default()
        });
        for (_, addr) in nl.addresses(Some(lo.index))? {
            result.ips.push(IpConfig { interface: Some(index), address: addr, gateway: None });
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> CniResult<()> {
        // The namespace may be gone already; then so is its loopback.
        let Some(path) = req.netns.as_ref() else { return Ok(()) };
        let Ok(ns) = NetNs::open(path) else { return Ok(()) };
        let mut nl = Netlink::open_in(&ns)?;
        if let Some(lo) = nl.link_by_name(LOOPBACK)? {
            nl.set_down(lo.index)?;
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> CniResult<()> {
        let ns = NetNs::open(req.netns_path()?)?;
        let mut nl = Netlink::open_in(&ns)?;
        match nl.link_by_name(LOOPBACK)? {
            Some(lo) if lo.up => Ok(()),
            _ => Err(CniError::new(Code::Kernel, "lo is not up in the container")),
        }
    }
}
