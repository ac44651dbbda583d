//! The `ipam` section: the reference `dhcp` plugin's keys (`daemonSocketPath`, `request`,
//! `provide`, `priority`) with the same meanings, plus berth's `timeout`.

use crate::message::opt;
use berth_cni::skel::Request;
use berth_cni::{CniError, CniResult};
use berth_ipam::config::{bad, field};
use serde_json::{Map, Value};
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

impl DhcpConf {
    /// The `ipam` section; a bad value is an invalid configuration (code 7) naming its field,
    /// `ipam.provide[0].option`.
    pub fn parse(req: &Request) -> CniResult<DhcpConf> {
        let empty = Map::new();
        let ipam = req.conf.ipam.as_ref().map_or(&empty, |i| &i.extra);
        let socket = field::<String>(ipam, "daemonSocketPath", "ipam")?.filter(|s| !s.is_empty());
        let socket = PathBuf::from(socket.as_deref().unwrap_or(DEFAULT_SOCKET));
        if !socket.is_absolute() {
            return Err(bad("ipam.daemonSocketPath", format!("{} is not an absolute path", socket.display())));
        }
        let timeout = match field::<f64>(ipam, "timeout", "ipam")? {
            None => DEFAULT_TIMEOUT,
            Some(s) if s > 0.0 && s <= MAX_TIMEOUT.as_secs_f64() => Duration::from_secs_f64(s),
            Some(s) => return Err(bad("ipam.timeout", format!("{s} is not between 0 and {} seconds", MAX_TIMEOUT.as_secs()))),
        };
        Ok(DhcpConf {
            network: req.conf.name.clone(),
            socket,
            request: requested(&entries(ipam, "request")?)?,
            provide: provided(req, &entries(ipam, "provide")?)?,
            priority: field(ipam, "priority", "ipam")?,
            timeout,
        })
    }
}

/// The objects of the list `ipam.<key>`, each with where it is (`ipam.request[0]`).
fn entries(ipam: &Map<String, Value>, key: &str) -> CniResult<Vec<(String, Map<String, Value>)>> {
    let list = field::<Vec<Map<String, Value>>>(ipam, key, "ipam")?.unwrap_or_default();
    Ok(list.into_iter().enumerate().map(|(i, entry)| (format!("ipam.{key}[{i}]"), entry)).collect())
}

fn requested(entries: &[(String, Map<String, Value>)]) -> CniResult<Vec<u8>> {
    let mut skip_default = false;
    let mut named = Vec::new();
    for (path, entry) in entries {
        skip_default |= field::<bool>(entry, "skipDefault", path)?.unwrap_or(false);
        // An entry may hold only `skipDefault`.
        if let Some(name) = field::<String>(entry, "option", path)?.filter(|n| !n.is_empty()) {
            named.push(option_code(&name).ok_or_else(|| unknown_option(&format!("{path}.option"), &name))?);
        }
    }
    let mut codes: Vec<u8> = if skip_default { Vec::new() } else { DEFAULT_REQUEST.to_vec() };
    for code in named {
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

/// The `provide` entries, the hostname and the client identifier: the reference sends
/// `CONTAINERID/NETWORK/IFNAME` as the client identifier, so a server sees the same client
/// whichever plugin asks; a `provide` entry replaces either.
fn provided(req: &Request, entries: &[(String, Map<String, Value>)]) -> CniResult<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    for (path, entry) in entries {
        let name = field::<String>(entry, "option", path)?.ok_or_else(|| bad(&format!("{path}.option"), "is required"))?;
        let code = option_code(&name).ok_or_else(|| unknown_option(&format!("{path}.option"), &name))?;
        let value = match (field::<String>(entry, "value", path)?, field::<String>(entry, "fromArg", path)?) {
            (_, Some(arg)) => match req.arg(&arg) {
                Some(v) => v.to_string(),
                // The reference skips an option whose argument the runtime did not pass.
                None => continue,
            },
            (Some(v), None) => v,
            (None, None) => return Err(bad(path, "needs \"value\" or \"fromArg\"")),
        };
        if value.len() > 255 * 4 {
            return Err(bad(&format!("{path}.value"), "is too long"));
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

fn unknown_option(path: &str, name: &str) -> CniError {
    bad(path, format!("unknown DHCP option {name:?} (a name such as \"host-name\", or a code 1-254)"))
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

    /// A value of the wrong type used to be reported as `ipam.: invalid type ...`, the
    /// whole section having been decoded at once: each message now names its field in full.
    #[test]
    fn values_of_the_wrong_type_name_their_whole_path() {
        let cases = [
            (
                json!({"provide": [{"option": "user-class", "value": "x"}, {"option": 12, "value": "x"}]}),
                "ipam.provide[1].option: invalid type: integer `12`, expected a string",
            ),
            (
                json!({"provide": [{"option": "host-name", "fromArg": ["K8S_POD_NAME"]}]}),
                "ipam.provide[0].fromArg: invalid type: sequence",
            ),
            (json!({"provide": [{"value": "x"}]}), "ipam.provide[0].option: is required"),
            (
                json!({"request": [{"skipDefault": "yes"}]}),
                "ipam.request[0].skipDefault: invalid type: string \"yes\", expected a boolean",
            ),
            (json!({"request": {"option": "routers"}}), "ipam.request: invalid type: map, expected a sequence"),
            (json!({"timeout": "5"}), "ipam.timeout: invalid type: string \"5\""),
            (json!({"priority": -1}), "ipam.priority: invalid value: integer `-1`"),
            (json!({"daemonSocketPath": 7}), "ipam.daemonSocketPath: invalid type: integer `7`"),
        ];
        for (ipam, message) in cases {
            let e = DhcpConf::parse(&req(ipam.clone(), &[])).unwrap_err();
            assert_eq!(e.code, 7, "{ipam}: {e}");
            assert!(e.msg.starts_with(message), "{ipam}: {e}");
        }
    }
}
