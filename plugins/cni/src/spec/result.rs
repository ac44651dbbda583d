//! The ADD result. Held internally in the 1.1.0 shape (a superset of 0.3.0 .. 1.0.0) and
//! written out in whichever version the runtime asked for.

use super::version::Version;
use crate::error::{CniError, CniResult, Code};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container, empty for host-side ones.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0 only.
    #[serde(rename = "socketPath", default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// 1.1.0 only.
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// The fields below are 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

impl RunResult {
    /// Reads a result of any supported version (a plugin's stdout, a prevResult, a cache file).
    pub fn from_value(value: &Value) -> CniResult<RunResult> {
        let decode = |e: serde_json::Error| CniError::new(Code::Decoding, "cannot decode CNI result").with_details(e);
        let version = value.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        if let Ok(v) = Version::parse(version) {
            if v < Version::V0_3_0 {
                return Err(CniError::new(Code::IncompatibleVersion, format!("result version {version} is not supported")));
            }
        }
        // 0.3.x/0.4.0 "version" keys on ips are dropped by serde; everything else maps one to one.
        serde_json::from_value(value.clone()).map_err(decode)
    }

    pub fn from_slice(bytes: &[u8]) -> CniResult<RunResult> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::new(Code::Decoding, "cannot decode CNI result").with_details(e))?;
        Self::from_value(&value)
    }

    /// The result as the spec of `version` writes it.
    pub fn to_value(&self, version: &str) -> CniResult<Value> {
        let v = Version::parse(version)?;
        if v < Version::V0_3_0 {
            return Err(CniError::new(Code::IncompatibleVersion, format!("cannot convert a result to version {version}")));
        }
        let mut this = self.clone();
        this.cni_version = version.to_string();
        if v < Version::V1_1_0 {
            for iface in &mut this.interfaces {
                iface.mtu = None;
                iface.socket_path = None;
                iface.pci_id = None;
            }
            for route in &mut this.routes {
                *route = Route::new(route.dst, route.gw);
            }
        }
        let mut out = serde_json::to_value(&this).expect("results always serialize");
        if v < Version::V1_0_0 {
            // 0.3.x and 0.4.0 tag every address with its family.
            if let Some(ips) = out.get_mut("ips").and_then(Value::as_array_mut) {
                for (ip, cfg) in ips.iter_mut().zip(&this.ips) {
                    let family = if cfg.address.addr().is_ipv4() { "4" } else { "6" };
                    if let Value::Object(map) = ip {
                        let mut tagged = Map::new();
                        tagged.insert("version".into(), Value::String(family.into()));
                        tagged.extend(std::mem::take(map));
                        *map = tagged;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The index the next interface pushed onto `interfaces` will have.
    pub fn push_interface(&mut self, iface: Interface) -> usize {
        self.interfaces.push(iface);
        self.interfaces.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> RunResult {
        RunResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:00:00:02".into(),
                mtu: Some(1500),
                sandbox: "/var/run/netns/c1".into(),
                ..Default::default()
            }],
            ips: vec![
                IpConfig { interface: Some(0), address: "10.0.0.2/24".parse().unwrap(), gateway: Some("10.0.0.1".parse().unwrap()) },
                IpConfig { interface: Some(0), address: "fd00::2/64".parse().unwrap(), gateway: None },
            ],
            routes: vec![Route { mtu: Some(1400), ..Route::new("0.0.0.0/0".parse().unwrap(), Some("10.0.0.1".parse().unwrap())) }],
            dns: Dns { nameservers: vec!["10.0.0.1".into()], ..Default::default() },
        }
    }

    #[test]
    fn old_versions_tag_ips_and_drop_new_fields() {
        let out = sample().to_value("0.3.1").unwrap();
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(out["ips"][0]["version"], "4");
        assert_eq!(out["ips"][1]["version"], "6");
        assert!(out["interfaces"][0].get("mtu").is_none());
        assert!(out["routes"][0].get("mtu").is_none());
    }

    #[test]
    fn v1_drops_version_tag_and_keeps_1_1_fields_only_in_1_1() {
        let v1 = sample().to_value("1.0.0").unwrap();
        assert!(v1["ips"][0].get("version").is_none());
        assert!(v1["interfaces"][0].get("mtu").is_none());
        let v11 = sample().to_value("1.1.0").unwrap();
        assert_eq!(v11["interfaces"][0]["mtu"], 1500);
        assert_eq!(v11["routes"][0]["mtu"], 1400);
    }

    #[test]
    fn results_round_trip_through_every_version() {
        for version in super::super::SUPPORTED {
            let written = sample().to_value(version).unwrap();
            let read = RunResult::from_value(&written).unwrap();
            assert_eq!(read.ips, sample().ips, "version {version}");
            assert_eq!(read.interfaces[0].name, "eth0");
            assert_eq!(read.cni_version, *version);
        }
    }

    #[test]
    fn reads_a_0_4_0_ipam_result() {
        let raw = json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let r = RunResult::from_value(&raw).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/16");
        assert_eq!(r.ips[0].interface, None);
        assert_eq!(r.routes[0].gw, None);
    }

    #[test]
    fn garbage_is_a_decoding_error() {
        let err = RunResult::from_slice(b"{\"ips\": 3}").unwrap_err();
        assert_eq!(err.code, 6);
    }
}
