//! Checks on what a plugin printed and on what the kernel holds: the result's schema for its
//! cniVersion, the result really present in the namespace, the error JSON's shape.

use super::report::{fail, Verdict};
use berth_cni::spec::{RunResult, Version};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;

/// Keys a result of `version` may carry, per object (Section 5: Result Types).
fn allowed(v: Version, object: &str) -> &'static [&'static str] {
    let v11 = v >= Version::V1_1_0;
    match (object, v11) {
        ("result", _) => &["cniVersion", "interfaces", "ips", "routes", "dns"],
        ("interface", false) => &["name", "mac", "sandbox"],
        ("interface", true) => &["name", "mac", "mtu", "sandbox", "socketPath", "pciID"],
        ("route", false) => &["dst", "gw"],
        ("route", true) => &["dst", "gw", "mtu", "advmss", "priority", "table", "scope"],
        ("ip", _) if v < Version::V1_0_0 => &["version", "address", "gateway", "interface"],
        ("ip", _) => &["address", "gateway", "interface"],
        _ => &["nameservers", "domain", "search", "options"],
    }
}

fn keys_of(value: &Value, object: &str, v: Version, where_: &str) -> Result<(), Verdict> {
    let Some(map) = value.as_object() else { return fail(format!("{where_} is not an object: {value}")) };
    let ok = allowed(v, object);
    match map.keys().find(|k| !ok.contains(&k.as_str())) {
        Some(k) => fail(format!("{where_} has key {k:?}, which a {} result does not define", version_str(v))),
        None => Ok(()),
    }
}

fn version_str(v: Version) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// The result of an ADD, as Section 5 describes it for `version`.
pub fn result_schema(raw: &Value, version: &str) -> Result<String, Verdict> {
    let v = Version::parse(version).map_err(|e| Verdict::Skip(format!("unknown version: {e}")))?;
    keys_of(raw, "result", v, "the result")?;
    if raw["cniVersion"] != version {
        return fail(format!("cniVersion is {} though the configuration asked for {version}", raw["cniVersion"]));
    }
    let ifaces = raw["interfaces"].as_array().cloned().unwrap_or_default();
    for (i, iface) in ifaces.iter().enumerate() {
        keys_of(iface, "interface", v, &format!("interfaces[{i}]"))?;
        if !iface["name"].is_string() {
            return fail(format!("interfaces[{i}] has no name"));
        }
    }
    for (i, ip) in raw["ips"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        keys_of(ip, "ip", v, &format!("ips[{i}]"))?;
        ip_schema(ip, i, v, ifaces.len())?;
    }
    for (i, route) in raw["routes"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        keys_of(route, "route", v, &format!("routes[{i}]"))?;
        parse::<IpNet>(&route["dst"], &format!("routes[{i}].dst"))?;
        if !route["gw"].is_null() {
            parse::<IpAddr>(&route["gw"], &format!("routes[{i}].gw"))?;
        }
    }
    if !raw["dns"].is_null() {
        keys_of(&raw["dns"], "dns", v, "dns")?;
    }
    RunResult::from_value(raw).map_err(|e| Verdict::Fail(format!("does not decode: {e}")))?;
    Ok(format!("a {version} result: {} interfaces, {} ips", ifaces.len(), raw["ips"].as_array().map_or(0, Vec::len)))
}

fn ip_schema(ip: &Value, i: usize, v: Version, interfaces: usize) -> Result<(), Verdict> {
    let address = parse::<IpNet>(&ip["address"], &format!("ips[{i}].address"))?;
    if !ip["gateway"].is_null() {
        parse::<IpAddr>(&ip["gateway"], &format!("ips[{i}].gateway"))?;
    }
    if !ip["interface"].is_null() && ip["interface"].as_u64().is_none_or(|n| n as usize >= interfaces) {
        return fail(format!("ips[{i}].interface {} is not an index into interfaces", ip["interface"]));
    }
    if v < Version::V1_0_0 {
        let family = if address.addr().is_ipv4() { "4" } else { "6" };
        if ip["version"] != family {
            return fail(format!("ips[{i}].version is {} for {address}; before 1.0.0 it must be {family:?}", ip["version"]));
        }
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(value: &Value, what: &str) -> Result<T, Verdict> {
    let s = value.as_str().ok_or_else(|| Verdict::Fail(format!("{what} is not a string: {value}")))?;
    s.parse().map_err(|_| Verdict::Fail(format!("{what} {s:?} does not parse")))
}

/// The interface named CNI_IFNAME is in the result, in the sandbox CNI_NETNS named.
pub fn names_ifname(result: &RunResult, ifname: &str, netns: &Path) -> Result<String, Verdict> {
    let sandbox = netns.display().to_string();
    match result.interfaces.iter().find(|i| i.name == ifname) {
        None => fail(format!("no interface {ifname:?} (CNI_IFNAME) in the result: {:?}", names(result))),
        Some(i) if i.sandbox != sandbox => fail(format!("{ifname}'s sandbox is {:?}, not CNI_NETNS {sandbox:?}", i.sandbox)),
        Some(_) => Ok(format!("{ifname} in {sandbox}")),
    }
}

fn names(result: &RunResult) -> Vec<&str> {
    result.interfaces.iter().map(|i| i.name.as_str()).collect()
}

/// Every sandboxed interface of the result exists there with its MAC, every address on its
/// interface, every main-table route in the namespace of the container's interface.
pub fn present_in_namespace(result: &RunResult, netns: &Path) -> Result<String, Verdict> {
    let ns = NetNs::open(netns).map_err(|e| Verdict::Fail(format!("open {}: {e}", netns.display())))?;
    let mut nl = Netlink::open_in(&ns).map_err(|e| Verdict::Fail(format!("netlink in {}: {e}", netns.display())))?;
    let sandbox = netns.display().to_string();
    let mut seen = 0;
    for iface in result.interfaces.iter().filter(|i| i.sandbox == sandbox) {
        let link = nl.link_by_name(&iface.name).map_err(|e| Verdict::Fail(e.to_string()))?;
        let Some(link) = link else { return fail(format!("{} is not in {sandbox}", iface.name)) };
        let mac = link.mac.map(|m| m.to_string()).unwrap_or_default();
        if !iface.mac.is_empty() && !iface.mac.eq_ignore_ascii_case(&mac) {
            return fail(format!("{} has MAC {mac}, the result says {}", iface.name, iface.mac));
        }
        for ip in result.ips.iter().filter(|ip| ip.interface.is_some_and(|n| result.interfaces[n].name == iface.name)) {
            let held = nl.addresses(Some(link.index)).map_err(|e| Verdict::Fail(e.to_string()))?;
            if !held.iter().any(|(_, a)| *a == ip.address) {
                return fail(format!("{} is not on {} ({held:?})", ip.address, iface.name));
            }
            seen += 1;
        }
    }
    routes_present(result, &mut nl, &ns)?;
    Ok(format!("interfaces, {seen} addresses and {} routes found in the namespace", result.routes.len()))
}

fn routes_present(result: &RunResult, nl: &mut Netlink, ns: &NetNs) -> Result<(), Verdict> {
    let held = nl.routes().map_err(|e| Verdict::Fail(e.to_string()))?;
    let mut other_tables: Option<Vec<String>> = None;
    for route in &result.routes {
        let in_main = held.iter().any(|h| h.dst == route.dst.trunc() && (route.gw.is_none() || h.gateway == route.gw));
        // A result before 1.1.0 cannot name a table, and a plugin such as sbr moves routes to
        // one of its own: a route in any table counts.
        let mut anywhere = || {
            let tables = other_tables.get_or_insert_with(|| all_table_routes(ns));
            let dst = if route.dst.prefix_len() == 0 { "default".to_string() } else { route.dst.trunc().to_string() };
            tables.iter().any(|l| l.starts_with(&format!("{dst} ")) && route.gw.is_none_or(|gw| l.contains(&format!("via {gw} "))))
        };
        if !in_main && !anywhere() {
            return fail(format!("route {} via {:?} is not in the namespace", route.dst, route.gw));
        }
    }
    Ok(())
}

/// `ip route show table all` in the namespace: berth_netlink lists the main table only.
fn all_table_routes(ns: &NetNs) -> Vec<String> {
    let mut lines = Vec::new();
    for family in ["-4", "-6"] {
        let mut cmd = std::process::Command::new("ip");
        cmd.args([family, "route", "show", "table", "all"]).stderr(std::process::Stdio::null());
        if ns.prepare_command(&mut cmd).is_ok() {
            if let Ok(out) = cmd.output() {
                lines.extend(String::from_utf8_lossy(&out.stdout).lines().map(|l| format!("{l} ")));
            }
        }
    }
    lines
}

/// After DEL: none of the result's sandboxed interfaces is left in the namespace (lo aside,
/// which every namespace has).
pub fn gone_from_namespace(result: &RunResult, netns: &Path) -> Result<String, Verdict> {
    let ns = NetNs::open(netns).map_err(|e| Verdict::Fail(format!("open {}: {e}", netns.display())))?;
    let mut nl = Netlink::open_in(&ns).map_err(|e| Verdict::Fail(e.to_string()))?;
    let sandbox = netns.display().to_string();
    for iface in result.interfaces.iter().filter(|i| i.sandbox == sandbox && i.name != "lo") {
        if nl.link_by_name(&iface.name).map_err(|e| Verdict::Fail(e.to_string()))?.is_some() {
            return fail(format!("{} is still in the namespace after DEL", iface.name));
        }
    }
    Ok("succeeded; the result's interfaces are gone".into())
}

/// A chained plugin's output keeps what its prevResult held (Section 5: "Plugins provided a
/// prevResult key ... must output it as their result, with any possible modifications").
pub fn passes_prev_result(prev: &RunResult, out: &RunResult) -> Result<String, Verdict> {
    for iface in &prev.interfaces {
        if !out.interfaces.iter().any(|i| i.name == iface.name && i.sandbox == iface.sandbox) {
            return fail(format!("interface {} of prevResult is missing from the output", iface.name));
        }
    }
    for ip in &prev.ips {
        if !out.ips.iter().any(|i| i.address == ip.address) {
            return fail(format!("address {} of prevResult is missing from the output", ip.address));
        }
    }
    Ok(format!("{} interfaces and {} addresses of prevResult passed on", prev.interfaces.len(), prev.ips.len()))
}

/// The error JSON of Section 5 ("Error"): a non-zero exit, `code` and `msg`, `cniVersion`
/// when the request had one the plugin speaks, and one of `codes`.
pub fn error_shape(reply: &super::invoke::Reply, version: Option<&str>, codes: &[u64]) -> Result<String, Verdict> {
    if reply.success {
        return fail(format!("succeeded; it must fail: {}", String::from_utf8_lossy(&reply.stdout).trim()));
    }
    let err = reply.json().map_err(Verdict::Fail)?;
    let code = err["code"].as_u64().ok_or_else(|| Verdict::Fail(format!("no numeric \"code\": {err}")))?;
    if !err["msg"].is_string() {
        return fail(format!("no \"msg\" string: {err}"));
    }
    if !err["details"].is_null() && !err["details"].is_string() {
        return fail(format!("\"details\" is not a string: {err}"));
    }
    // The spec says an error "should" carry cniVersion: its absence is noted, not failed; a
    // version other than the request's would make the runtime misread it, and fails.
    let mut note = "";
    match (version, err.get("cniVersion")) {
        (Some(_), None) => note = " (no cniVersion key, which the spec says it should have)",
        (Some(v), Some(theirs)) if theirs != v => {
            return fail(format!("cniVersion is {theirs}, the request's is {v}: {err}"));
        }
        _ => {}
    }
    if !codes.contains(&code) {
        return fail(format!("code {code} ({}), the spec's code for this is {codes:?}", err["msg"]));
    }
    Ok(format!("code {code}: {}{note}", err["msg"].as_str().unwrap_or_default()))
}
