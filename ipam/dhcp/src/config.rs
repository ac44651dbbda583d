//! The `ipam` section: the reference `dhcp` plugin's keys (`daemonSocketPath`, `request`,
//! `provide`, `priority`) with the same meanings, plus berth's `timeout`.

use crate::error::{DhcpError, Result};
use crate::message::opt;
use berth_cni::skel::Request;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Where the keeper listens unless the configuration says otherwise. Not the reference
/// daemon's `/run/cni/dhcp.sock`, so the two can run side by side.
pub const DEFAULT_SOCKET: &str = "/run/berth/dhcp.sock";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Options asked for unless a `request` entry says `skipDefault`: what the result is made of.
const DEFAULT_REQUEST: &[u8] =
    &[opt::SUBNET_MASK, opt::ROUTER, opt::DNS, opt::DOMAIN_NAME, opt::CLASSLESS_ROUTES, opt::LEASE_TIME, opt::T1, opt::T2];

#[derive(Debug, Clone)]
pub struct DhcpConf {
    pub network: String,
    pub socket: PathBuf,
    /// Option 55: the options asked for.
    pub request: Vec<u8>,
    /// Options sent to the server (hostname and client identifier included).
    pub provide: Vec<(u8, Vec<u8>)>,
    /// The metric of the routes in the result.
    pub priority: Option<u32>,
    /// How long ADD waits for the server before it fails.
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    ipam: RawIpam,
}

#[derive(Deserialize, Default)]
struct RawIpam {
    #[serde(rename = "daemonSocketPath")]
    daemon_socket_path: Option<String>,
    #[serde(default)]
    request: Vec<RequestOption>,
    #[serde(default)]
    provide: Vec<ProvideOption>,
    priority: Option<u32>,
    /// Seconds.
    timeout: Option<f64>,
}

#[derive(Deserialize)]
struct RequestOption {
    #[serde(rename = "skipDefault", default)]
    skip_default: bool,
    #[serde(default)]
    option: String,
}

#[derive(Deserialize)]
struct ProvideOption {
    option: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(rename = "fromArg", default)]
    from_arg: Option<String>,
}

impl DhcpConf {
    pub fn parse(req: &Request) -> Result<DhcpConf> {
        let raw: Raw = serde_json::from_slice(&req.stdin).map_err(|e| DhcpError::config("", e.to_string()))?;
        let ipam = raw.ipam;
        let socket = PathBuf::from(ipam.daemon_socket_path.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_SOCKET));
        if !socket.is_absolute() {
            return Err(DhcpError::config("daemonSocketPath", format!("{} is not an absolute path", socket.display())));
        }
        let timeout = match ipam.timeout {
            None => DEFAULT_TIMEOUT,
            Some(s) if s > 0.0 && s <= MAX_TIMEOUT.as_secs_f64() => Duration::from_secs_f64(s),
            Some(s) => return Err(DhcpError::config("timeout", format!("{s} is not between 0 and {} seconds", MAX_TIMEOUT.as_secs()))),
        };
        Ok(DhcpConf {
            network: req.conf.name.clone(),
            socket,
            request: requested(&ipam.request)?,
            provide: provided(req, &ipam.provide)?,
            priority: ipam.priority,
            timeout,
        })
    }
}

fn requested(entries: &[RequestOption]) -> Result<Vec<u8>> {
    let mut codes: Vec<u8> = if entries.iter().any(|r| r.skip_default) { Vec::new() } else { DEFAULT_REQUEST.to_vec() };
    for (i, entry) in entries.iter().enumerate() {
        if entry.option.is_empty() {
            continue; // only `skipDefault`
        }
        let code = option_code(&entry.option).ok_or_else(|| unknown_option(&format!("request[{i}].option"), &entry.option))?;
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

/// The `provide` entries, the hostname and the client identifier: the reference sends
/// `CONTAINERID/NETWORK/IFNAME` as the client identifier, so a server sees the same client
/// whichever plugin asks; a `provide` entry replaces either.
fn provided(req: &Request, entries: &[ProvideOption]) -> Result<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("provide[{i}]");
        let code = option_code(&entry.option).ok_or_else(|| unknown_option(&format!("{field}.option"), &entry.option))?;
        let value = match (&entry.value, &entry.from_arg) {
            (_, Some(arg)) => match req.arg(arg) {
                Some(v) => v.to_string(),
                // The reference skips an option whose argument the runtime did not pass.
                None => continue,
            },
            (Some(v), None) => v.clone(),
            (None, None) => return Err(DhcpError::config(field, "needs \"value\" or \"fromArg\"")),
        };
        if value.len() > 255 * 4 {
            return Err(DhcpError::config(field, "value is too long"));
        }
        out.push((code, value.into_bytes()));
    }
    if !out.iter().any(|(c, _)| *c == opt::CLIENT_ID) {
        let id = format!("{}/{}/{}", req.container_id, req.conf.name, req.ifname);
        out.push((opt::CLIENT_ID, id.into_bytes()));
    }
    if !out.iter().any(|(c, _)| *c == opt::HOST_NAME) {
        // A hostname is one DNS label: the container ID's first 12 characters, as Docker
        // names its containers' hosts.
        let name: String = req.container_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(12).collect();
        if !name.is_empty() {
            out.push((opt::HOST_NAME, name.into_bytes()));
        }
    }
    Ok(out)
}

fn unknown_option(field: &str, name: &str) -> DhcpError {
    DhcpError::config(field, format!("unknown DHCP option {name:?} (a name such as \"host-name\", or a code 1-254)"))
}

/// An option by the names the reference accepts (its DHCP library's names) or by number.
pub fn option_code(name: &str) -> Option<u8> {
    if let Ok(n) = name.trim().parse::<u8>() {
        return (1..=254).contains(&n).then_some(n);
    }
    Some(match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "subnet-mask" => 1,
        "routers" | "router" => 3,
        "domain-name-servers" | "dns" => 6,
        "host-name" | "hostname" => 12,
        "domain-name" => 15,
        "interface-mtu" => 26,
        "broadcast-address" => 28,
        "static-routes" => 33,
        "ntp-servers" => 42,
        "vendor-encapsulated-options" => 43,
        "dhcp-lease-time" | "lease-time" => 51,
        "dhcp-renewal-time" | "renewal-time" => 58,
        "dhcp-rebinding-time" | "rebinding-time" => 59,
        "vendor-class-identifier" => 60,
        "dhcp-client-identifier" | "client-identifier" => 61,
        "user-class" => 77,
        "client-fqdn" => 81,
        "domain-search" => 119,
        "classless-static-routes" | "classless-static-route" => 121,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::skel::{Command, Options};
    use berth_cni::spec::{NetConf, Version};
    use serde_json::json;

    fn req(ipam: serde_json::Value, args: &[(&str, &str)]) -> Request {
        let stdin = json!({"cniVersion": "1.0.0", "name": "lan", "type": "berth-macvlan", "ipam": ipam}).to_string().into_bytes();
        Request {
            command: Command::Add,
            container_id: "0123456789abcdef".into(),
            netns: None,
            ifname: "eth0".into(),
            args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cni_path: vec![],
            conf: NetConf::from_slice(&stdin).unwrap(),
            stdin,
            version: Version::V1_0_0,
            options: Options::default(),
        }
    }

    #[test]
    fn a_reference_configuration_is_accepted() {
        let conf = DhcpConf::parse(&req(
            json!({"type": "berth-dhcp", "daemonSocketPath": "/run/x/dhcp.sock",
                   "request": [{"skipDefault": false, "option": "classless-static-routes"}, {"option": "ntp-servers"}],
                   "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}, {"option": "user-class", "value": "berth"}],
                   "priority": 200}),
            &[("K8S_POD_NAME", "web-1")],
        ))
        .unwrap();
        assert_eq!(conf.socket, PathBuf::from("/run/x/dhcp.sock"));
        assert!(conf.request.starts_with(DEFAULT_REQUEST) && conf.request.ends_with(&[42]));
        assert_eq!(conf.provide[0], (12, b"web-1".to_vec()));
        assert_eq!(conf.provide[1], (77, b"berth".to_vec()));
        assert_eq!(conf.provide[2], (61, b"0123456789abcdef/lan/eth0".to_vec()));
        assert_eq!(conf.priority, Some(200));
    }

    #[test]
    fn defaults_and_skip_default() {
        let conf = DhcpConf::parse(&req(json!({"type": "berth-dhcp"}), &[])).unwrap();
        assert_eq!(conf.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(conf.timeout, DEFAULT_TIMEOUT);
        assert!(conf.provide.contains(&(12, b"0123456789ab".to_vec())));
        let only = DhcpConf::parse(&req(json!({"request": [{"skipDefault": true, "option": "1"}]}), &[])).unwrap();
        assert_eq!(only.request, [1]);
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = DhcpConf::parse(&req(json!({"request": [{"option": "frobnicate"}]}), &[])).unwrap_err();
        assert!(e.to_string().contains("request[0].option"), "{e}");
        let e = DhcpConf::parse(&req(json!({"daemonSocketPath": "relative.sock"}), &[])).unwrap_err();
        assert!(e.to_string().contains("daemonSocketPath"), "{e}");
        let e = DhcpConf::parse(&req(json!({"timeout": 0}), &[])).unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
        let e = DhcpConf::parse(&req(json!({"provide": [{"option": "user-class"}]}), &[])).unwrap_err();
        assert!(e.to_string().contains("provide[0]"), "{e}");
    }
}
