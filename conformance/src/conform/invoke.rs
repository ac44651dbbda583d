//! One raw plugin call, as a runtime makes it, with every CNI_* variable optional so the
//! error checks can leave one out; the exit status and stdout are kept as they came.

use berth_netns::NetNs;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A plugin that has not answered by then is hung (a DHCP plugin with no server, say).
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub command: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub netns: Option<&'a Path>,
    pub ifname: Option<&'a str>,
    pub cni_path: &'a [PathBuf],
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub success: bool,
    pub status: String,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Reply {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.stdout)
            .map_err(|e| format!("stdout is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.stdout)))
    }

    /// A one-line account of a failed call, for a check's reason.
    pub fn describe(&self) -> String {
        let out = String::from_utf8_lossy(&self.stdout);
        let err = self.stderr.trim();
        let err = if err.len() > 300 { &err[..300] } else { err };
        let line = format!("{} {} {}", self.status, out.trim(), err);
        // One line, so a text report keeps one check per line.
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Runs `plugin` inside `host` with `call`'s variables and `stdin`.
pub fn run(plugin: &Path, call: &Call, stdin: &[u8], host: &NetNs) -> Result<Reply, String> {
    let mut cmd = Command::new(plugin);
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()));
    let vars = [("CNI_COMMAND", call.command), ("CNI_CONTAINERID", call.container_id), ("CNI_IFNAME", call.ifname)];
    for (key, value) in vars {
        if let Some(v) = value {
            cmd.env(key, v);
        }
    }
    if let Some(netns) = call.netns {
        cmd.env("CNI_NETNS", netns);
    }
    let path = std::env::join_paths(call.cni_path).map_err(|e| format!("CNI_PATH: {e}"))?;
    cmd.env("CNI_PATH", path).env("CNI_ARGS", "");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    host.prepare_command(&mut cmd).map_err(|e| format!("enter the test host: {e}"))?;
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", plugin.display()))?;
    // A plugin that exits early closes its stdin; its exit status tells the story then.
    let _ = child.stdin.take().expect("piped").write_all(stdin);
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Read both pipes beside the wait, so a chatty plugin cannot block on a full pipe.
    let out = std::thread::spawn(move || read_all(&mut stdout));
    let err = std::thread::spawn(move || read_all(&mut stderr));
    let status = wait_with_deadline(&mut child)?;
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(Reply { success: status.success(), status: status.to_string(), stdout, stderr })
}

fn read_all(pipe: &mut impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = pipe.read_to_end(&mut buf);
    buf
}

fn wait_with_deadline(child: &mut std::process::Child) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the plugin did not answer within {DEADLINE:?}"));
            }
            Err(e) => return Err(format!("wait for the plugin: {e}")),
        }
    }
}
