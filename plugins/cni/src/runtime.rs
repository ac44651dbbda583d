//! The runtime side of CNI (what libcni does for podman or containerd): run a network's
//! plugin chain for one attachment, pass each result on as the next `prevResult`, run DEL in
//! reverse order, and keep the last result so DEL and CHECK get it later.

use crate::error::{CniError, CniResult};
use crate::exec::{exec_plugin, find_plugin, CallEnv};
use crate::skel::Command;
use crate::spec::{ConfList, RunResult, SUPPORTED};
use berth_netns::NetNs;
use berth_util::fs::write_durably;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// One container interface on one network.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerId")]
    pub container_id: String,
    #[serde(rename = "ifName")]
    pub ifname: String,
    pub netns: PathBuf,
    /// CNI_ARGS pairs.
    #[serde(rename = "cniArgs", default)]
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `mac`, `ips`, ...): each plugin gets those it
    /// declares in its `capabilities`, as `runtimeConfig`.
    #[serde(rename = "capabilityArgs", default)]
    pub capability_args: Map<String, Value>,
}

/// What is remembered between ADD and DEL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedAttachment {
    #[serde(rename = "networkName")]
    pub network: String,
    #[serde(flatten)]
    pub attachment: Attachment,
    pub result: Value,
    /// The conflist the attachment was made with, so it can be undone after the network's
    /// configuration is gone.
    #[serde(default)]
    pub conflist: Option<ConfList>,
}

pub struct Runtime {
    pub cni_path: Vec<PathBuf>,
    /// Where results are cached between ADD and DEL.
    pub cache_dir: PathBuf,
    /// Plugins run inside this namespace instead of the caller's (tests use a throwaway host).
    pub host: Option<NetNs>,
}

impl Runtime {
    pub fn add(&self, list: &ConfList, att: &Attachment) -> CniResult<RunResult> {
        let version = list.effective_version(SUPPORTED);
        let mut prev: Option<Value> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            let out = self.call(Command::Add, list, &version, plugin, att, prev.as_ref());
            match out {
                Ok(bytes) => {
                    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                        CniError::new(crate::Code::Decoding, format!("plugin {} printed no result", plugin_type(plugin)))
                            .with_details(e)
                    })?;
                    prev = Some(value);
                }
                Err(e) => {
                    // Undo what the plugins before this one did, as runtimes do on a failed ADD.
                    let done = ConfList { plugins: list.plugins[..i].to_vec(), ..list.clone() };
                    let _ = self.del_chain(&done, &version, att, prev.as_ref());
                    let _ = self.call(Command::Del, list, &version, plugin, att, prev.as_ref());
                    return Err(e.context(format!("network {} ADD", list.name)));
                }
            }
        }
        let value = prev.unwrap_or_else(|| serde_json::json!({ "cniVersion": version }));
        let cached = CachedAttachment {
            network: list.name.clone(),
            attachment: att.clone(),
            result: value.clone(),
            conflist: Some(list.clone()),
        };
        self.write_cache(&cached)?;
        RunResult::from_value(&value)
    }

    /// Idempotent: succeeds when the attachment (or its namespace) is already gone.
    pub fn del(&self, list: &ConfList, att: &Attachment) -> CniResult<()> {
        let version = list.effective_version(SUPPORTED);
        let cached = self.read_cache(&list.name, &att.container_id, &att.ifname)?;
        let prev = cached.as_ref().map(|c| c.result.clone());
        // As libcni: DEL gets the capability arguments ADD got (published ports, say), from
        // the cache when the caller has none to give.
        let mut att = att.clone();
        if att.capability_args.is_empty() {
            if let Some(cached) = &cached {
                att.capability_args = cached.attachment.capability_args.clone();
            }
        }
        self.del_chain(list, &version, &att, prev.as_ref()).map_err(|e| e.context(format!("network {} DEL", list.name)))?;
        let path = self.cache_path(&list.name, &att.container_id, &att.ifname);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::io(format!("remove {}", path.display()), e)),
            _ => Ok(()),
        }
    }

    pub fn check(&self, list: &ConfList, att: &Attachment) -> CniResult<()> {
        let version = list.effective_version(SUPPORTED);
        if list.disable_check {
            return Ok(());
        }
        let cached = self.read_cache(&list.name, &att.container_id, &att.ifname)?.ok_or_else(|| {
            CniError::new(crate::Code::UnknownContainer, format!("{} is not attached to {}", att.container_id, list.name))
        })?;
        for plugin in &list.plugins {
            self.call(Command::Check, list, &version, plugin, att, Some(&cached.result))
                .map_err(|e| e.context(format!("network {} CHECK", list.name)))?;
        }
        Ok(())
    }

    /// GC as libcni does it: first a DEL (with its cached result) of every cached attachment
    /// of this network not in `keep`, which also forgets it; then CNI 1.1 GC through the
    /// chain: each plugin removes what it holds for attachments of this network not in `keep`
    /// (`cni.dev/valid-attachments`). Plugins that speak an older version get no GC; every
    /// plugin is asked even when one fails.
    pub fn gc(&self, list: &ConfList, keep: &[(String, String)]) -> CniResult<()> {
        let mut first_error = None;
        for cached in self.cached_attachments()?.into_iter().filter(|c| c.network == list.name) {
            let att = &cached.attachment;
            if !keep.iter().any(|(id, ifname)| *id == att.container_id && *ifname == att.ifname) {
                if let Err(e) = self.del(list, att) {
                    first_error.get_or_insert(e);
                }
            }
        }
        let version = list.effective_version(SUPPORTED);
        if crate::spec::Version::parse(&version).is_ok_and(|v| v < crate::spec::Version::V1_1_0) {
            return first_error.map_or(Ok(()), Err);
        }
        let valid: Vec<Value> =
            keep.iter().map(|(id, ifname)| serde_json::json!({"containerID": id, "ifname": ifname})).collect();
        for plugin in &list.plugins {
            let mut conf = plugin_config(list, &version, plugin, &Map::new(), None)?;
            conf.insert("cni.dev/valid-attachments".into(), Value::Array(valid.clone()));
            let binary = find_plugin(plugin_type(plugin), &self.cni_path)?;
            let env =
                CallEnv { command: Command::Gc, container_id: "", netns: None, ifname: "", args: "", cni_path: &self.cni_path };
            let stdin = serde_json::to_vec(&conf).expect("JSON values serialize");
            if let Err(e) = exec_plugin(&binary, &env, &stdin, self.host.as_ref()) {
                first_error.get_or_insert(e.context(format!("network {} GC", list.name)));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn del_chain(&self, list: &ConfList, version: &str, att: &Attachment, prev: Option<&Value>) -> CniResult<()> {
        let mut first_error = None;
        for plugin in list.plugins.iter().rev() {
            // Every plugin gets its DEL even when one before it failed: leave nothing behind.
            if let Err(e) = self.call(Command::Del, list, version, plugin, att, prev) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn call(
        &self,
        command: Command,
        list: &ConfList,
        version: &str,
        plugin: &Map<String, Value>,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> CniResult<Vec<u8>> {
        let conf = plugin_config(list, version, plugin, &att.capability_args, prev)?;
        let binary = find_plugin(plugin_type(plugin), &self.cni_path)?;
        let args: Vec<String> = att.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let env = CallEnv {
            command,
            container_id: &att.container_id,
            netns: Some(&att.netns),
            ifname: &att.ifname,
            args: &args.join(";"),
            cni_path: &self.cni_path,
        };
        let stdin = serde_json::to_vec(&conf).expect("JSON values serialize");
        exec_plugin(&binary, &env, &stdin, self.host.as_ref())
    }

    /// libcni's file name, `CONTAINERID-IFNAME.json`; for a container ID that would make it
    /// longer than a file name can be (255 bytes), the ID's label instead (the file itself
    /// names the attachment in full).
    fn cache_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        const MAX_FILE_NAME: usize = 255;
        let mut name = format!("{container_id}-{ifname}.json");
        if name.len() > MAX_FILE_NAME {
            name = format!("{}-{ifname}.json", berth_util::names::label(container_id, 200));
        }
        self.cache_dir.join(network).join(name)
    }

    pub fn read_cache(&self, network: &str, container_id: &str, ifname: &str) -> CniResult<Option<CachedAttachment>> {
        let path = self.cache_path(network, container_id, ifname);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                CniError::new(crate::Code::Decoding, format!("corrupt cache file {}", path.display())).with_details(e)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("read {}", path.display()), e)),
        }
    }

    /// Every attachment in the cache, of every network, in no particular order (files that
    /// are not cache entries are skipped).
    pub fn cached_attachments(&self) -> CniResult<Vec<CachedAttachment>> {
        let networks = match std::fs::read_dir(&self.cache_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::io(format!("read {}", self.cache_dir.display()), e)),
        };
        let files = networks.flatten().filter_map(|n| std::fs::read_dir(n.path()).ok()).flatten().flatten();
        let entries = files.filter(|f| f.path().extension().is_some_and(|x| x == "json"));
        Ok(entries.filter_map(|f| serde_json::from_slice(&std::fs::read(f.path()).ok()?).ok()).collect())
    }

    fn write_cache(&self, cached: &CachedAttachment) -> CniResult<()> {
        let path = self.cache_path(&cached.network, &cached.attachment.container_id, &cached.attachment.ifname);
        // Durably: a DEL after a crash or power loss must find what ADD made.
        write_durably(&path, &serde_json::to_vec_pretty(cached).expect("JSON values serialize"))?;
        Ok(())
    }
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// One plugin's stdin, as libcni builds it from a conflist entry.
pub fn plugin_config(
    list: &ConfList,
    version: &str,
    plugin: &Map<String, Value>,
    capability_args: &Map<String, Value>,
    prev: Option<&Value>,
) -> CniResult<Map<String, Value>> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(version.into()));
    if let Some(prev) = prev {
        let converted = RunResult::from_value(prev)?.to_value(version)?;
        conf.insert("prevResult".into(), converted);
    }
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    let mut runtime_config = Map::new();
    for (cap, value) in capability_args {
        if declared.and_then(|d| d.get(cap)).and_then(Value::as_bool) == Some(true) {
            runtime_config.insert(cap.clone(), value.clone());
        }
    }
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    Ok(conf)
}
