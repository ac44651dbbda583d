//! Network configurations as runtimes hand them to plugins. Keys this crate does not know
//! (another plugin's options, `args`, vendor keys) are kept in `extra`, never rejected.

use super::result::{Dns, RunResult};
use crate::error::{CniError, CniResult, Code};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One plugin's configuration: the fields every plugin shares. A plugin reads its own
/// options from the same JSON with a struct of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub capabilities: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(rename = "runtimeConfig", default, skip_serializing_if = "Map::is_empty")]
    pub runtime_config: Map<String, Value>,
    #[serde(rename = "prevResult", default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `cni.dev/valid-attachments`: an attachment a CNI 1.1 GC must keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl ValidAttachment {
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

/// The key of a GC request's list of attachments to keep.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

impl NetConf {
    /// The attachments a GC must keep. The key is required: without it GC would remove
    /// everything, so it is refused (code 7) rather than taken as an empty list.
    pub fn valid_attachments(&self) -> CniResult<Vec<ValidAttachment>> {
        let raw = self.extra.get(VALID_ATTACHMENTS).ok_or_else(|| {
            CniError::invalid_config(format!("{VALID_ATTACHMENTS} is required for GC (an empty list removes everything)"))
        })?;
        serde_json::from_value(raw.clone())
            .map_err(|e| CniError::invalid_config(format!("{VALID_ATTACHMENTS} is malformed")).with_details(e))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of the `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

fn default_protocol() -> String {
    "tcp".into()
}

impl NetConf {
    pub fn from_slice(bytes: &[u8]) -> CniResult<NetConf> {
        serde_json::from_slice(bytes).map_err(|e| CniError::new(Code::Decoding, "cannot decode network configuration").with_details(e))
    }

    /// The result of the previous plugin in the chain, converted to the current shape.
    pub fn prev_result(&self) -> CniResult<Option<RunResult>> {
        self.prev_result.as_ref().map(RunResult::from_value).transpose()
    }

    /// A `runtimeConfig` entry, decoded; absent and null are both `None`.
    pub fn runtime<T: serde::de::DeserializeOwned>(&self, key: &str) -> CniResult<Option<T>> {
        match self.runtime_config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| CniError::invalid_config(format!("runtimeConfig.{key} is malformed")).with_details(e)),
        }
    }
}

/// Decodes a plugin's own view of the configuration, naming the field that is wrong.
pub fn decode_plugin_conf<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> CniResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() { Code::InvalidConfig } else { Code::Decoding };
        CniError::new(code, "invalid network configuration").with_details(e)
    })
}

/// A network configuration list: the chain a runtime runs for one network.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfList {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// CNI 1.1: the versions the list may be run as; the runtime picks the highest it knows.
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    pub name: String,
    #[serde(rename = "disableCheck", default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_check: bool,
    #[serde(rename = "disableGC", default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_gc: bool,
    pub plugins: Vec<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ConfList {
    pub fn from_slice(bytes: &[u8]) -> CniResult<ConfList> {
        let list: ConfList = serde_json::from_slice(bytes)
            .map_err(|e| CniError::new(Code::Decoding, "cannot decode network configuration list").with_details(e))?;
        if list.plugins.is_empty() {
            return Err(CniError::invalid_config(format!("network {:?} has no plugins", list.name)));
        }
        for (i, plugin) in list.plugins.iter().enumerate() {
            if !plugin.get("type").is_some_and(Value::is_string) {
                return Err(CniError::invalid_config(format!("plugins[{i}] of network {:?} has no \"type\"", list.name)));
            }
        }
        Ok(list)
    }

    /// The version the list runs as: the highest of `cniVersions` we support, else `cniVersion`.
    pub fn effective_version(&self, supported: &[&str]) -> String {
        use super::version::Version;
        let best = self
            .cni_versions
            .iter()
            .filter(|v| supported.contains(&v.as_str()))
            .max_by_key(|v| Version::parse(v).ok());
        match best {
            Some(v) => v.clone(),
            None if self.cni_version.is_empty() => "0.1.0".into(),
            None => self.cni_version.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_are_kept() {
        let raw = json!({
            "cniVersion": "1.0.0", "name": "n", "type": "berth-bridge",
            "bridge": "br0", "ipam": {"type": "berth-host-local", "subnet": "10.0.0.0/24"},
            "vendor.example/x": {"a": 1}
        });
        let conf: NetConf = serde_json::from_value(raw).unwrap();
        assert_eq!(conf.extra["bridge"], "br0");
        assert_eq!(conf.extra["vendor.example/x"]["a"], 1);
        assert_eq!(conf.ipam.as_ref().unwrap().extra["subnet"], "10.0.0.0/24");
        let back = serde_json::to_value(&conf).unwrap();
        assert_eq!(back["bridge"], "br0");
    }

    #[test]
    fn runtime_config_entries_decode() {
        let conf: NetConf = serde_json::from_value(json!({
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], "mac": null}
        }))
        .unwrap();
        let maps: Vec<PortMapping> = conf.runtime("portMappings").unwrap().unwrap();
        assert_eq!(maps[0].host_port, 8080);
        assert_eq!(conf.runtime::<String>("mac").unwrap(), None);
        let bad: NetConf = serde_json::from_value(json!({"runtimeConfig": {"mac": 5}})).unwrap();
        assert_eq!(bad.runtime::<String>("mac").unwrap_err().code, 7);
    }

    #[test]
    fn conflist_picks_highest_supported_version() {
        let list = ConfList::from_slice(
            br#"{"cniVersion":"0.4.0","cniVersions":["0.4.0","1.0.0","9.9.9"],"name":"n","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(list.effective_version(crate::spec::SUPPORTED), "1.0.0");
    }

    #[test]
    fn conflist_without_plugin_type_is_invalid() {
        let err = ConfList::from_slice(br#"{"name":"n","plugins":[{"bridge":"x"}]}"#).unwrap_err();
        assert_eq!(err.code, 7);
    }

    #[test]
    fn malformed_json_is_a_decoding_error() {
        assert_eq!(NetConf::from_slice(b"{").unwrap_err().code, 6);
    }
}
