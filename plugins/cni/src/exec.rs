//! Running a plugin binary the way a runtime does: find it in CNI_PATH, give it the CNI_*
//! variables and a configuration on stdin, read its result or its error from stdout.

use crate::error::{CniError, CniResult, Code};
use berth_netns::NetNs;
use crate::skel::Command;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The CNI_* variables of one call.
#[derive(Debug, Clone)]
pub struct CallEnv<'a> {
    pub command: Command,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// CNI_ARGS as one string, `K=V;K2=V2`.
    pub args: &'a str,
    pub cni_path: &'a [PathBuf],
}

/// The first executable named `plugin_type` in the search path.
pub fn find_plugin(plugin_type: &str, cni_path: &[PathBuf]) -> CniResult<PathBuf> {
    if plugin_type.is_empty() || plugin_type.contains('/') {
        return Err(CniError::invalid_config(format!("invalid plugin type {plugin_type:?}")));
    }
    cni_path
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::invalid_config(format!("failed to find plugin {plugin_type:?} in path {cni_path:?}"))
        })
}

/// Runs `plugin` with `env` and `stdin`; on success returns its stdout. A failing plugin's
/// error JSON is passed on unchanged (its code included), so the runtime sees the real cause.
/// With `inside`, the plugin process runs in that network namespace (a test "host").
pub fn exec_plugin(plugin: &Path, env: &CallEnv, stdin: &[u8], inside: Option<&NetNs>) -> CniResult<Vec<u8>> {
    let mut cmd = std::process::Command::new(plugin);
    // Variables left over from our own invocation must not leak into the child's.
    for key in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"] {
        cmd.env_remove(key);
    }
    cmd.env("CNI_COMMAND", env.command.as_str())
        .env("CNI_ARGS", env.args)
        .env("CNI_PATH", std::env::join_paths(env.cni_path).map_err(|e| CniError::invalid_env("CNI_PATH").with_details(e))?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // STATUS and GC concern no container: they get no container variables.
    if !env.container_id.is_empty() {
        cmd.env("CNI_CONTAINERID", env.container_id);
    }
    if !env.ifname.is_empty() {
        cmd.env("CNI_IFNAME", env.ifname);
    }
    // An empty path is a container without a namespace any more: DEL may leave it out.
    if let Some(netns) = env.netns.filter(|p| !p.as_os_str().is_empty()) {
        cmd.env("CNI_NETNS", netns);
    }
    if let Some(ns) = inside {
        ns.prepare_command(&mut cmd)?;
    }
    // A delegated plugin (the IPAM plugin) must not go on after its caller was killed: its
    // ADD would allocate after the runtime's DEL has released.
    berth_util::tool::die_with_parent(&mut cmd);
    let name = plugin.display();
    let mut child = cmd.spawn().map_err(|e| CniError::io(format!("cannot run plugin {name}"), e))?;
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // A plugin that exits early closes its stdin; its exit status tells the story then.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    let out = child.wait_with_output().map_err(|e| CniError::io(format!("waiting for plugin {name}"), e))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    if let Ok(err) = serde_json::from_slice::<CniError>(&out.stdout) {
        return Err(err);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    Err(CniError::new(Code::Delegate, format!("plugin {name} failed ({})", out.status))
        .with_details(format!("{}{}", stdout.trim(), stderr.trim())))
}

/// Asks a plugin which versions it supports.
pub fn plugin_versions(plugin: &Path) -> CniResult<Vec<String>> {
    let env = CallEnv { command: Command::Version, container_id: "", netns: None, ifname: "", args: "", cni_path: &[] };
    let out = exec_plugin(plugin, &env, br#"{"cniVersion":"1.1.0"}"#, None)?;
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "supportedVersions")]
        supported_versions: Vec<String>,
    }
    let info: Info = serde_json::from_slice(&out)
        .map_err(|e| CniError::new(Code::Decoding, format!("cannot decode VERSION of {}", plugin.display())).with_details(e))?;
    Ok(info.supported_versions)
}
