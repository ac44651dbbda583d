//! Running plugin binaries as a runtime does, in throwaway directories.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const HOST_LOCAL: &str = env!("CARGO_BIN_EXE_berth-host-local");
pub const STATIC: &str = env!("CARGO_BIN_EXE_berth-static");
pub const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";
pub const REF_STATIC: &str = "/usr/lib/cni/static";

/// The reference plugins, or a failure saying how to get them.
pub fn require_reference(path: &str) -> &str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the reference plugins with `apt-get install -y containernetworking-plugins`"
    );
    path
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("berth-ipam-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One invocation: verb, container, interface, CNI_ARGS.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub command: &'a str,
    pub id: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, id: &'a str) -> Call<'a> {
        Call { command, id, ifname: "eth0", args: "" }
    }

    pub fn args(self, args: &'a str) -> Call<'a> {
        Call { args, ..self }
    }

    pub fn ifname(self, ifname: &'a str) -> Call<'a> {
        Call { ifname, ..self }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
        }
    }

    /// The result, asserting success.
    pub fn result(&self) -> Value {
        assert!(self.ok, "plugin failed: {} {}", self.stdout, self.stderr);
        self.json()
    }

    /// The error code, asserting failure.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "plugin succeeded: {}", self.stdout);
        self.json()["code"].as_u64().unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }

    pub fn msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or_default().to_string()
    }

    /// The addresses of an ADD result, as strings.
    pub fn addresses(&self) -> Vec<String> {
        let v = self.result();
        v["ips"].as_array().map(|a| a.iter().map(|ip| ip["address"].as_str().unwrap().to_string()).collect()).unwrap_or_default()
    }
}

pub fn spawn(plugin: &str, call: Call, conf: &Value) -> Child {
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.id)
        .env("CNI_NETNS", format!("/var/run/netns/{}", call.id))
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {plugin}: {e}"));
    let bytes = serde_json::to_vec(conf).unwrap();
    // A plugin killed early may have closed stdin already.
    let _ = child.stdin.take().unwrap().write_all(&bytes);
    child
}

pub fn run(plugin: &str, call: Call, conf: &Value) -> Outcome {
    let out = spawn(plugin, call, conf).wait_with_output().unwrap();
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file of a network directory with its content, sorted by name; berth's owner indexes
/// (`.owner-*`, which the reference neither writes nor reads) left out.
pub fn store_files(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(String, String)> = entries
        .filter(|e| e.as_ref().map_or(true, |e| !e.file_name().to_string_lossy().starts_with(".owner-")))
        .map(|e| {
            let e = e.unwrap();
            let content = std::fs::read_to_string(e.path()).unwrap_or_default();
            (e.file_name().into_string().unwrap(), content)
        })
        .collect();
    files.sort();
    files
}

pub fn names(files: &[(String, String)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}
