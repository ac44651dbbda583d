//! `berth-static`: the addresses written in the configuration, with the reference static
//! plugin's keys:
//!
//! ```json
//! "ipam": {
//!   "type": "berth-static",
//!   "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}, {"address": "fd00::1/64"}],
//!   "routes": [{"dst": "0.0.0.0/0"}],
//!   "dns": {"nameservers": ["10.10.0.254"], "domain": "example.com", "search": ["example.com"]}
//! }
//! ```
//!
//! As in the reference: CNI_ARGS `IP=` (a comma-separated list of CIDR addresses) adds
//! addresses and `GATEWAY=` (comma-separated) sets the gateway of every address whose subnet
//! holds it; then `args.cni.ips`, then the `ips` capability (`runtimeConfig.ips`), when given,
//! replace the whole list. Nothing is allocated, so DEL has nothing to do.

use crate::config::{args_cni, bad, field, ipam_section, parse_ip};
use berth_cni::skel::{Plugin, Request};
use berth_cni::spec::{Dns, IpConfig, NetConf, Route, RunResult};
use berth_cni::{CniError, CniResult, Code};
use ipnet::IpNet;
use serde_json::{Map, Value};

pub struct Static;

#[derive(Debug, Clone, PartialEq)]
pub struct StaticConf {
    pub addresses: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl StaticConf {
    pub fn parse(conf: &NetConf, args: &[(String, String)]) -> CniResult<StaticConf> {
        let ipam = ipam_section(conf)?;
        let mut addresses = Vec::new();
        for (i, entry) in field::<Vec<Map<String, Value>>>(ipam, "addresses", "ipam")?.unwrap_or_default().iter().enumerate() {
            let path = format!("ipam.addresses[{i}]");
            let address =
                field::<String>(entry, "address", &path)?.ok_or_else(|| bad(&format!("{path}.address"), "is required"))?;
            let address = parse_cidr(&address, &format!("{path}.address"))?;
            let gateway =
                field::<String>(entry, "gateway", &path)?.map(|g| parse_ip(&g, &format!("{path}.gateway"))).transpose()?;
            addresses.push(IpConfig { interface: None, address, gateway });
        }

        for item in arg_items(args, "IP") {
            addresses.push(IpConfig { interface: None, address: parse_cidr(item, "CNI_ARGS IP")?, gateway: None });
        }
        for item in arg_items(args, "GATEWAY") {
            let gw = parse_ip(item, "CNI_ARGS GATEWAY")?;
            for a in addresses.iter_mut().filter(|a| a.address.contains(&gw)) {
                a.gateway = Some(gw);
            }
        }

        let replacements = [
            ("args.cni.ips", args_cni(conf, "ips")?),
            ("runtimeConfig.ips", field::<Vec<String>>(&conf.runtime_config, "ips", "runtimeConfig")?.unwrap_or_default()),
        ];
        for (source, list) in replacements.iter().filter(|(_, list)| !list.is_empty()) {
            addresses = list
                .iter()
                .enumerate()
                .map(|(i, s)| Ok(IpConfig { interface: None, address: parse_cidr(s, &format!("{source}[{i}]"))?, gateway: None }))
                .collect::<CniResult<_>>()?;
        }

        Ok(StaticConf {
            addresses,
            routes: field::<Vec<Route>>(ipam, "routes", "ipam")?.unwrap_or_default(),
            dns: field::<Dns>(ipam, "dns", "ipam")?.unwrap_or_default(),
        })
    }
}

fn arg_items<'a>(args: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    args.iter().filter(move |(k, _)| k == key).flat_map(|(_, v)| v.split(',')).map(str::trim).filter(|s| !s.is_empty())
}

/// An address with its prefix length, host bits kept: `10.10.0.1/24`.
fn parse_cidr(s: &str, field: &str) -> CniResult<IpNet> {
    s.trim().parse::<IpNet>().map_err(|_| bad(field, format!("{s:?} is not an address in CIDR notation like 10.10.0.1/24")))
}

impl Plugin for Static {
    fn add(&self, req: &Request) -> CniResult<RunResult> {
        let conf = StaticConf::parse(&req.conf, &req.args)?;
        Ok(RunResult { ips: conf.addresses, routes: conf.routes, dns: conf.dns, ..Default::default() })
    }

    fn del(&self, _req: &Request) -> CniResult<()> {
        Ok(())
    }

    /// The configuration must be valid; with a `prevResult`, it must hold every address.
    fn check(&self, req: &Request) -> CniResult<()> {
        let conf = StaticConf::parse(&req.conf, &req.args)?;
        let Some(prev) = req.conf.prev_result()? else { return Ok(()) };
        for want in &conf.addresses {
            let found = prev.ips.iter().find(|ip| ip.address.addr() == want.address.addr());
            match found {
                Some(ip) if want.gateway.is_none() || ip.gateway == want.gateway => {}
                _ => {
                    return Err(CniError::new(
                        Code::InvalidConfig,
                        format!("static: {} is not in prevResult as configured on {}", want.address, req.ifname),
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value, args: &[(&str, &str)]) -> CniResult<StaticConf> {
        let mut v = v;
        v["name"] = json!("n");
        let conf: NetConf = serde_json::from_value(v).unwrap();
        let args: Vec<(String, String)> = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        StaticConf::parse(&conf, &args)
    }

    fn addrs(c: &StaticConf) -> Vec<String> {
        c.addresses.iter().map(|a| format!("{}>{}", a.address, a.gateway.map(|g| g.to_string()).unwrap_or_default())).collect()
    }

    #[test]
    fn addresses_routes_and_dns() {
        let c = parse(
            json!({"ipam": {
                "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}, {"address": "fd00::1/64"}],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {"nameservers": ["10.10.0.254"], "domain": "example.com", "search": ["example.com"], "options": ["ndots:1"]}
            }}),
            &[],
        )
        .unwrap();
        assert_eq!(addrs(&c), ["10.10.0.1/24>10.10.0.254", "fd00::1/64>"]);
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.dns.domain, "example.com");
        assert_eq!(c.dns.options, ["ndots:1"]);
    }

    #[test]
    fn cni_args_add_addresses_and_gateways() {
        let ipam = json!({"ipam": {"addresses": [{"address": "10.10.0.1/24"}]}});
        let c = parse(ipam, &[("IP", "10.20.0.5/16, fd00::5/64"), ("GATEWAY", "10.20.0.1,10.10.0.254")]).unwrap();
        assert_eq!(addrs(&c), ["10.10.0.1/24>10.10.0.254", "10.20.0.5/16>10.20.0.1", "fd00::5/64>"]);
    }

    #[test]
    fn ips_capability_and_args_replace_the_list() {
        let base = json!({"ipam": {"addresses": [{"address": "10.10.0.1/24"}]}, "args": {"cni": {"ips": ["10.30.0.1/24"]}}});
        assert_eq!(addrs(&parse(base.clone(), &[("IP", "10.20.0.5/16")]).unwrap()), ["10.30.0.1/24>"]);
        let mut with_rc = base;
        with_rc["runtimeConfig"] = json!({"ips": ["10.40.0.1/24", "fd00::4/64"]});
        assert_eq!(addrs(&parse(with_rc, &[]).unwrap()), ["10.40.0.1/24>", "fd00::4/64>"]);
    }

    #[test]
    fn bad_addresses_are_code_7_naming_the_field() {
        let cases = [
            (json!({"ipam": {"addresses": [{"address": "10.10.0.1"}]}}), &[][..], "ipam.addresses[0].address"),
            (json!({"ipam": {"addresses": [{"gateway": "10.10.0.1"}]}}), &[][..], "ipam.addresses[0].address"),
            (json!({"ipam": {"addresses": [{"address": "10.0.0.1/24", "gateway": "x"}]}}), &[][..], "ipam.addresses[0].gateway"),
            (json!({"ipam": {"addresses": {}}}), &[][..], "ipam.addresses"),
            (json!({"ipam": {}}), &[("IP", "10.0.0.1")][..], "CNI_ARGS IP"),
            (json!({"ipam": {}}), &[("GATEWAY", "nope")][..], "CNI_ARGS GATEWAY"),
            (json!({"ipam": {}, "runtimeConfig": {"ips": ["10.0.0.1"]}}), &[][..], "runtimeConfig.ips[0]"),
            (json!({"ipam": {}, "args": {"cni": {"ips": ["10.0.0.1/24", "x"]}}}), &[][..], "args.cni.ips[1]"),
            (json!({"ipam": {"dns": {"nameservers": "10.0.0.1"}}}), &[][..], "ipam.dns"),
            (json!({}), &[][..], "ipam"),
        ];
        for (conf, args, needle) in cases {
            let e = parse(conf.clone(), args).unwrap_err();
            assert_eq!(e.code, 7, "{conf}");
            assert!(e.msg.starts_with(needle), "{conf}: {:?} should name {needle}", e.msg);
        }
    }
}
