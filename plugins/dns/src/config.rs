//! berth-dns's keys, checked before anything is touched:
//! - `domainName` (default `dns.podman`, as podman's dnsname): names answer bare and under it,
//!   and it is the search domain the result gives the container;
//! - `dataDir` (default [`DEFAULT_DATA_DIR`]): one folder per network with its records and
//!   its server's control socket;
//! - `resolvConf` (default `/etc/resolv.conf`): where the server finds the resolvers it
//!   forwards other names to.
//!
//! The container's names: CNI_ARGS `K8S_POD_NAME` (podman passes the container's name there,
//! Kubernetes the pod's), then the `aliases` capability (`runtimeConfig.aliases`), either a list
//! or podman's map from network name to list.

use crate::error::{DnsError, DnsResult};
use berth_cni::skel::Request;
use serde_json::Value;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/run/berth/dns";
pub const DEFAULT_DOMAIN: &str = "dns.podman";
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConf {
    pub network: String,
    pub domain: String,
    /// This network's folder: `dataDir/NETWORK`.
    pub dir: PathBuf,
    pub resolv_conf: PathBuf,
}

impl DnsConf {
    pub fn parse(req: &Request) -> DnsResult<DnsConf> {
        let network = req.conf.name.clone();
        berth_util::names::check_identifier(&network).map_err(|e| DnsError::config("name", e.to_string()))?;
        let extra = &req.conf.extra;
        let text = |key: &str| -> DnsResult<Option<String>> {
            match extra.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(DnsError::config(key, format!("must be a non-empty string, not {other}"))),
            }
        };
        let domain = text("domainName")?.unwrap_or_else(|| DEFAULT_DOMAIN.into()).trim_end_matches('.').to_ascii_lowercase();
        check_dns_name(&domain).map_err(|reason| DnsError::config("domainName", reason))?;
        let data_dir = PathBuf::from(text("dataDir")?.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        let resolv_conf = PathBuf::from(text("resolvConf")?.unwrap_or_else(|| DEFAULT_RESOLV_CONF.into()));
        for (key, path) in [("dataDir", &data_dir), ("resolvConf", &resolv_conf)] {
            if !path.is_absolute() {
                return Err(DnsError::config(key, format!("{} is not an absolute path", path.display())));
            }
        }
        Ok(DnsConf { dir: data_dir.join(&network), network, domain, resolv_conf })
    }
}

/// The names the container answers to on this network, lower case, each once: its name from
/// `K8S_POD_NAME`, then its aliases for this network.
pub fn container_names(req: &Request, network: &str) -> DnsResult<Vec<String>> {
    let mut names = Vec::new();
    if let Some(name) = req.arg("K8S_POD_NAME").filter(|n| !n.is_empty()) {
        names.push(checked(name, "CNI_ARGS K8S_POD_NAME")?);
    }
    let aliases = match req.conf.runtime_config.get("aliases") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => aliases_for(value, network)?,
    };
    for alias in aliases {
        names.push(checked(&alias, "runtimeConfig.aliases")?);
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// `["a", "b"]`, or podman's `{"NETWORK": ["a", "b"]}` (other networks' entries ignored).
fn aliases_for(value: &Value, network: &str) -> DnsResult<Vec<String>> {
    let list = match value {
        Value::Object(by_network) => match by_network.get(network) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(list) => list,
        },
        list => list,
    };
    serde_json::from_value(list.clone())
        .map_err(|_| DnsError::config("runtimeConfig.aliases", format!("must be a list of names or a map of lists, not {value}")))
}

fn checked(name: &str, field: &str) -> DnsResult<String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    check_dns_name(&lower).map_err(|reason| DnsError::config(field, format!("{name:?}: {reason}")))?;
    Ok(lower)
}

/// A name the server can answer for: dot-separated labels of letters, digits, `-` and `_`
/// (podman's container names have them), 1 to 63 bytes each, 253 in all.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a DNS name is 1 to 253 bytes long".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label of a DNS name is 1 to 63 bytes long".into());
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("a DNS name has only letters, digits, '-', '_' and dots".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aliases_come_as_a_list_or_by_network() {
        assert_eq!(aliases_for(&json!(["a", "b"]), "n").unwrap(), ["a", "b"]);
        assert_eq!(aliases_for(&json!({"n": ["x"], "other": ["y"]}), "n").unwrap(), ["x"]);
        assert!(aliases_for(&json!({"other": ["y"]}), "n").unwrap().is_empty());
        assert!(aliases_for(&json!("web"), "n").is_err());
    }

    #[test]
    fn names_are_dns_names() {
        for ok in ["web", "my_app", "a.b-c", "x1"] {
            assert!(check_dns_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", "a b", "é", &"x".repeat(64)] {
            assert!(check_dns_name(bad).is_err(), "{bad}");
        }
    }
}
