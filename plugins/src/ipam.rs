//! Delegation to the IPAM plugin named in `ipam.type`: same environment, same stdin.

use crate::error::{CniError, CniResult};
use crate::exec::{exec_plugin, find_plugin, CallEnv};
use crate::skel::{Command, Request};
use crate::spec::RunResult;

fn call(req: &Request, command: Command) -> CniResult<Vec<u8>> {
    let ipam = req.conf.ipam.as_ref().ok_or_else(|| CniError::invalid_config("\"ipam\" is required"))?;
    let plugin = find_plugin(&ipam.plugin_type, &req.cni_path)?;
    let args: Vec<String> = req.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let env = CallEnv {
        command,
        container_id: &req.container_id,
        netns: req.netns.as_deref(),
        ifname: &req.ifname,
        args: &args.join(";"),
        cni_path: &req.cni_path,
    };
    exec_plugin(&plugin, &env, &req.stdin, None)
        .map_err(|e| e.context(format!("IPAM plugin {} {}", ipam.plugin_type, command.as_str())))
}

/// Allocates addresses for this container and interface.
pub fn add(req: &Request) -> CniResult<RunResult> {
    let out = call(req, Command::Add)?;
    let result = RunResult::from_slice(&out)?;
    if result.ips.is_empty() {
        return Err(CniError::invalid_config(format!(
            "IPAM plugin {} returned no address",
            req.conf.ipam.as_ref().map(|i| i.plugin_type.as_str()).unwrap_or_default()
        )));
    }
    Ok(result)
}

/// Releases this container's addresses; succeeds when there is nothing to release.
pub fn del(req: &Request) -> CniResult<()> {
    call(req, Command::Del).map(drop)
}

pub fn check(req: &Request) -> CniResult<()> {
    call(req, Command::Check).map(drop)
}

/// Runs STATUS or GC on the IPAM plugin too, as the spec asks of delegating plugins.
pub fn forward(req: &Request) -> CniResult<()> {
    call(req, req.command).map(drop)
}

/// Releases the allocation after a failed ADD; the ADD's own error is what the runtime needs
/// to see, so a failure here is only logged.
pub fn release_after_failed_add(req: &Request) {
    if let Err(e) = del(req) {
        eprintln!("releasing the address after a failed ADD: {e}");
    }
}
