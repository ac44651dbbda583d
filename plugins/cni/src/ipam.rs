//! Delegation to the IPAM plugin named in `ipam.type`: same environment, same stdin.

use crate::error::{CniError, CniResult};
use crate::exec::{exec_plugin, find_plugin, CallEnv};
use crate::rollback::Rollback;
use crate::skel::{Command, Plugin, Request};
use crate::spec::RunResult;

/// IPAM plugins linked into the calling binary, by `ipam.type`: they run in-process, the
/// same code on the same store as their executables, without an exec per ADD and DEL.
pub type Builtins = &'static [(&'static str, &'static (dyn Plugin + Sync))];

/// Runs the configured IPAM plugin: a builtin when there is one of that type, else the
/// executable found in CNI_PATH.
#[derive(Clone, Copy)]
pub struct Ipam {
    builtins: Builtins,
}

impl Ipam {
    pub const fn new(builtins: Builtins) -> Ipam {
        Ipam { builtins }
    }

    /// Allocates addresses for this container and interface.
    pub fn add(&self, req: &Request) -> CniResult<RunResult> {
        let result = match self.builtin(req)? {
            Some(plugin) => plugin.add(&with_command(req, Command::Add)).map_err(|e| context(req, Command::Add, e))?,
            None => RunResult::from_slice(&exec(req, Command::Add)?)?,
        };
        if result.ips.is_empty() {
            return Err(CniError::invalid_config(format!("IPAM plugin {} returned no address", ipam_type(req))));
        }
        Ok(result)
    }

    /// Releases this container's addresses; succeeds when there is nothing to release.
    pub fn del(&self, req: &Request) -> CniResult<()> {
        self.run(req, Command::Del)
    }

    pub fn check(&self, req: &Request) -> CniResult<()> {
        self.run(req, Command::Check)
    }

    /// Runs STATUS or GC on the IPAM plugin too, as the spec asks of delegating plugins.
    pub fn forward(&self, req: &Request) -> CniResult<()> {
        self.run(req, req.command)
    }

    /// [`Ipam::add`] in an ADD: the allocation's release is pushed on `undo`, for when a
    /// later step fails.
    pub fn add_undoable<'a>(&self, req: &'a Request, undo: &mut Rollback<'a>) -> CniResult<RunResult> {
        let result = self.add(req)?;
        let ipam = *self;
        undo.push("releasing the addresses", move || ipam.del(req));
        Ok(result)
    }

    fn run(&self, req: &Request, command: Command) -> CniResult<()> {
        let Some(plugin) = self.builtin(req)? else { return exec(req, command).map(drop) };
        let req = with_command(req, command);
        match command {
            Command::Del => plugin.del(&req),
            Command::Check => plugin.check(&req),
            Command::Status => plugin.status(&req),
            Command::Gc => plugin.gc(&req),
            Command::Add | Command::Version => unreachable!("not run through Ipam::run"),
        }
        .map_err(|e| context(&req, command, e))
    }

    fn builtin(&self, req: &Request) -> CniResult<Option<&'static (dyn Plugin + Sync)>> {
        let wanted = ipam_type(req);
        if wanted.is_empty() {
            return Err(CniError::invalid_config("\"ipam\" with a \"type\" is required"));
        }
        Ok(self.builtins.iter().find(|(name, _)| *name == wanted).map(|(_, plugin)| *plugin))
    }
}

fn ipam_type(req: &Request) -> &str {
    req.conf.ipam.as_ref().map(|i| i.plugin_type.as_str()).unwrap_or_default()
}

fn with_command(req: &Request, command: Command) -> Request {
    Request { command, ..req.clone() }
}

fn context(req: &Request, command: Command, e: CniError) -> CniError {
    e.context(format!("IPAM plugin {} {}", ipam_type(req), command.as_str()))
}

fn exec(req: &Request, command: Command) -> CniResult<Vec<u8>> {
    let plugin = find_plugin(ipam_type(req), &req.cni_path)?;
    let args: Vec<String> = req.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let env = CallEnv {
        command,
        container_id: &req.container_id,
        netns: req.netns.as_deref(),
        ifname: &req.ifname,
        args: &args.join(";"),
        cni_path: &req.cni_path,
    };
    exec_plugin(&plugin, &env, &req.stdin, None).map_err(|e| context(req, command, e))
}
