//! berth-host-local's configuration: the reference host-local's keys, names and defaults.
//!
//! ```json
//! "ipam": {
//!   "type": "berth-host-local",
//!   "ranges": [
//!     [{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.20", "rangeEnd": "10.10.3.50",
//!       "gateway": "10.10.0.254", "exclude": ["10.10.2.0/24", "10.10.3.7"]}],
//!     [{"subnet": "fd00::/64", "routes": [{"dst": "fd01::/64"}]}]
//!   ],
//!   "routes": [{"dst": "0.0.0.0/0"}],
//!   "dataDir": "/var/lib/cni/networks",
//!   "resolvConf": "/etc/resolv.conf"
//! }
//! ```
//!
//! `ranges` is a list of range sets; the container gets one address from each set. The
//! deprecated single-range form puts `subnet`, `rangeStart`, `rangeEnd` and `gateway` directly
//! in `ipam`; it becomes the first range set. The `ipRanges` capability
//! (`runtimeConfig.ipRanges`) has the shape of `ranges` and comes before both.
//!
//! Requested addresses: CNI_ARGS `IP=10.0.0.5` (a comma-separated list is allowed), the
//! `args.cni.ips` convention and the `ips` capability (`runtimeConfig.ips`), each entry an
//! address with or without a prefix length. Each must fall inside some range, at most one per
//! range set.

use crate::addr;
use berth_cni::spec::{NetConf, Route};
use berth_cni::{CniError, CniResult};
use berth_util::names::check_file_name;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Where a network's allocations live; all that DEL and GC need from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConf {
    pub network: String,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct HostLocalConf {
    pub store: StoreConf,
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub resolv_conf: Option<PathBuf>,
}

/// Ranges the container gets one address from, tried in order.
#[derive(Debug, Clone)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
    /// The address asked for in this set, if any.
    pub requested: Option<IpAddr>,
}

/// One pool of addresses: `rangeStart..=rangeEnd` inside `subnet`.
///
/// Never handed out: the subnet's network address, its broadcast address (IPv4), the
/// gateway, and anything listed in `exclude`.
///
/// Two berth extensions:
/// - `exclude`: a list of addresses (`"10.0.0.7"`) or prefixes (`"10.0.0.16/28"`, the whole
///   block) of the range's family that are reserved for something else;
/// - `routes`: routes added to the result when the container's address comes from this range,
///   after the top-level `routes`.
#[derive(Debug, Clone)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
    pub exclude: Vec<IpNet>,
    pub routes: Vec<Route>,
    lo: u128,
    hi: u128,
    /// Addresses of `lo..=hi` never handed out: sorted, disjoint, non-adjacent.
    blocked: Vec<(u128, u128)>,
}

impl StoreConf {
    pub fn parse(conf: &NetConf) -> CniResult<StoreConf> {
        let ipam = ipam_section(conf)?;
        let network = conf.name.clone();
        if check_file_name(&network).is_err() {
            return Err(bad("name", format!("{network:?} cannot name a directory under dataDir")));
        }
        let data_dir = field::<String>(ipam, "dataDir", "ipam")?.filter(|d| !d.is_empty());
        Ok(StoreConf { network, data_dir: PathBuf::from(data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)) })
    }
}

impl HostLocalConf {
    /// The whole configuration, with CNI_ARGS (`args`) for requested addresses.
    pub fn parse(conf: &NetConf, args: &[(String, String)]) -> CniResult<HostLocalConf> {
        let store = StoreConf::parse(conf)?;
        let ipam = ipam_section(conf)?;
        let written = written_range_sets(conf, ipam)?;
        let mut range_sets = written.iter().map(RawSet::parse).collect::<CniResult<Vec<_>>>()?;
        check_no_overlap(&range_sets, &written)?;
        for (ip, source) in requested_addresses(conf, args)? {
            assign_requested(&mut range_sets, ip, source)?;
        }
        let routes = field::<Vec<Route>>(ipam, "routes", "ipam")?.unwrap_or_default();
        let resolv_conf = field::<String>(ipam, "resolvConf", "ipam")?.filter(|p| !p.is_empty()).map(PathBuf::from);
        Ok(HostLocalConf { store, range_sets, routes, resolv_conf })
    }
}

/// The range sets as written, in the reference's order: the ipRanges capability, the legacy
/// single range, `ranges`.
fn written_range_sets(conf: &NetConf, ipam: &Map<String, Value>) -> CniResult<Vec<RawSet>> {
    let mut raw: Vec<RawSet> = Vec::new();
    if let Some(sets) = field::<Vec<Vec<Map<String, Value>>>>(&conf.runtime_config, "ipRanges", "runtimeConfig")? {
        raw.extend(sets.into_iter().enumerate().map(|(i, members)| RawSet::new(format!("runtimeConfig.ipRanges[{i}]"), members)));
    }
    if ipam.get("subnet").is_some_and(|v| !v.is_null()) {
        raw.push(RawSet { path: "ipam".into(), members: vec![ipam.clone()], legacy: true });
    }
    if let Some(sets) = field::<Vec<Vec<Map<String, Value>>>>(ipam, "ranges", "ipam")? {
        raw.extend(sets.into_iter().enumerate().map(|(i, members)| RawSet::new(format!("ipam.ranges[{i}]"), members)));
    }
    if raw.is_empty() {
        return Err(bad("ipam", "no ranges given (\"ranges\" or \"subnet\")"));
    }
    Ok(raw)
}

/// No address may lie in two ranges, of one set or of two; the later range is the one named.
/// `written` are the sets as written, for where each range is in the configuration.
fn check_no_overlap(range_sets: &[RangeSet], written: &[RawSet]) -> CniResult<()> {
    let all: Vec<&Range> = range_sets.iter().flat_map(|s| &s.ranges).collect();
    let paths: Vec<String> = written.iter().flat_map(RawSet::member_paths).collect();
    for (a, ra) in all.iter().enumerate() {
        for (b, rb) in all.iter().enumerate().skip(a + 1) {
            if ra.overlaps(rb) {
                return Err(bad(&paths[b], format!("{rb} overlaps {} ({ra})", paths[a])));
            }
        }
    }
    Ok(())
}

/// Records `ip` (requested through `source`) as the address wanted from the set holding it,
/// refusing one no set can hand out and a second one for the same set.
fn assign_requested(range_sets: &mut [RangeSet], ip: IpAddr, source: &str) -> CniResult<()> {
    let Some(i) = range_sets.iter().position(|s| s.contains(ip)) else {
        let sets: Vec<String> = range_sets.iter().map(|s| format!("[{s}]")).collect();
        return Err(CniError::invalid_config(format!(
            "requested address {ip} ({source}) is not in any range: {}",
            sets.join(" ")
        )));
    };
    let set = &mut range_sets[i];
    if let Some(reason) = set.refusal(ip) {
        return Err(CniError::invalid_config(format!("requested address {ip} ({source}) is {reason}")));
    }
    match set.requested {
        Some(other) if other != ip => Err(CniError::invalid_config(format!(
            "requested addresses {other} and {ip} are both in range set {i} ({set}); a container gets one address per range set"
        ))),
        _ => {
            set.requested = Some(ip);
            Ok(())
        }
    }
}

/// A range set as written: its ranges' objects, where it is in the configuration, and whether
/// it is the single-range form (whose `routes` are the top-level ones).
struct RawSet {
    path: String,
    members: Vec<Map<String, Value>>,
    legacy: bool,
}

impl RawSet {
    fn new(path: String, members: Vec<Map<String, Value>>) -> RawSet {
        RawSet { path, members, legacy: false }
    }

    /// Where each of its ranges is in the configuration, for messages.
    fn member_paths(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.members.len()).map(|j| if self.legacy { self.path.clone() } else { format!("{}[{j}]", self.path) })
    }

    /// Its ranges, all of one family.
    fn parse(&self) -> CniResult<RangeSet> {
        if self.members.is_empty() {
            return Err(bad(&self.path, "empty range set"));
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(self.members.len());
        for (obj, path) in self.members.iter().zip(self.member_paths()) {
            let range = Range::parse(obj, &path, self.legacy)?;
            if ranges.first().is_some_and(|first| first.start.is_ipv4() != range.start.is_ipv4()) {
                return Err(bad(&self.path, "mixes IPv4 and IPv6 ranges"));
            }
            ranges.push(range);
        }
        Ok(RangeSet { ranges, requested: None })
    }
}

impl RangeSet {
    /// The range holding `ip` between its start and end.
    pub fn range_for(&self, ip: IpAddr) -> Option<usize> {
        self.ranges.iter().position(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// Whether `ip` can be handed out from this set (taken or not).
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip) && !r.is_blocked(addr::to_int(ip)))
    }

    /// Why `ip` cannot be handed out from this set, or `None` if it can.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        match self.range_for(ip) {
            None => Some(format!("outside range set [{self}]")),
            Some(r) => self.ranges[r].refusal(ip),
        }
    }

    /// How many addresses this set can hand out when none is taken.
    pub fn capacity(&self) -> u128 {
        self.ranges.iter().fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl Range {
    fn parse(obj: &Map<String, Value>, path: &str, legacy: bool) -> CniResult<Range> {
        let at = |key: &str| format!("{path}.{key}");
        let subnet_s = field::<String>(obj, "subnet", path)?.ok_or_else(|| bad(&at("subnet"), "is required"))?;
        let subnet = subnet_s
            .trim()
            .parse::<IpNet>()
            .map_err(|_| bad(&at("subnet"), format!("{subnet_s:?} is not a CIDR prefix like 10.0.0.0/24")))?
            .trunc();
        if subnet.max_prefix_len() - subnet.prefix_len() < 2 {
            return Err(bad(&at("subnet"), format!("{subnet} is too small to allocate from")));
        }
        let (net_lo, net_hi) = addr::bounds(&subnet);
        let v4 = subnet.addr().is_ipv4();
        let inside = |key: &str| -> CniResult<Option<IpAddr>> {
            let Some(s) = field::<String>(obj, key, path)? else { return Ok(None) };
            let ip = parse_ip(&s, &at(key))?;
            if !subnet.contains(&ip) {
                return Err(bad(&at(key), format!("{ip} is not in subnet {subnet}")));
            }
            Ok(Some(ip))
        };
        let gateway = inside("gateway")?.unwrap_or_else(|| addr::from_int(subnet.addr(), net_lo + 1));
        let start = inside("rangeStart")?.unwrap_or_else(|| addr::from_int(subnet.addr(), net_lo + 1));
        let end = inside("rangeEnd")?.unwrap_or_else(|| addr::from_int(subnet.addr(), if v4 { net_hi - 1 } else { net_hi }));
        let (lo, hi) = (addr::to_int(start), addr::to_int(end));
        if lo > hi {
            return Err(bad(&at("rangeStart"), format!("{start} is after rangeEnd {end}")));
        }

        let mut exclude = Vec::new();
        for (i, s) in field::<Vec<String>>(obj, "exclude", path)?.unwrap_or_default().iter().enumerate() {
            let here = format!("{path}.exclude[{i}]");
            let net = if s.contains('/') {
                s.trim().parse::<IpNet>().map_err(|_| bad(&here, format!("{s:?} is not an address or CIDR prefix")))?.trunc()
            } else {
                IpNet::from(parse_ip(s, &here)?)
            };
            if net.addr().is_ipv4() != v4 {
                return Err(bad(&here, format!("{net} is not of the family of subnet {subnet}")));
            }
            exclude.push(net);
        }
        // In the single-range form `ipam.routes` are the top-level routes, not the range's.
        let routes = if legacy { Vec::new() } else { field::<Vec<Route>>(obj, "routes", path)?.unwrap_or_default() };

        let mut never = vec![(net_lo, net_lo), (addr::to_int(gateway), addr::to_int(gateway))];
        if v4 {
            never.push((net_hi, net_hi));
        }
        never.extend(exclude.iter().map(addr::bounds));
        let blocked =
            merge(never.into_iter().filter(|&(a, b)| a <= hi && b >= lo).map(|(a, b)| (a.max(lo), b.min(hi))).collect());
        Ok(Range { subnet, start, end, gateway, exclude, routes, lo, hi, blocked })
    }

    /// Whether `ip` lies between the range's start and end.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4() && (self.lo..=self.hi).contains(&addr::to_int(ip))
    }

    /// Why an address inside the range is never handed out, or `None` if it can be.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        let n = addr::to_int(ip);
        if !self.contains(ip) {
            Some(format!("outside range {self}"))
        } else if ip == self.gateway {
            Some(format!("the gateway of {self}"))
        } else if ip == self.subnet.network() {
            Some(format!("the network address of {}", self.subnet))
        } else if ip.is_ipv4() && ip == self.subnet.broadcast() {
            Some(format!("the broadcast address of {}", self.subnet))
        } else if self.is_blocked(n) {
            Some(format!("excluded from {self}"))
        } else {
            None
        }
    }

    fn is_blocked(&self, n: u128) -> bool {
        self.blocked.iter().any(|&(a, b)| a <= n && n <= b)
    }

    /// The first address at or after `from` that can be handed out, up to the range's end.
    pub(crate) fn next_allocatable(&self, from: u128) -> Option<IpAddr> {
        let mut n = from.max(self.lo);
        while n <= self.hi {
            match self.blocked.iter().find(|&&(a, b)| a <= n && n <= b) {
                Some(&(_, b)) => n = b.checked_add(1)?,
                None => return Some(addr::from_int(self.start, n)),
            }
        }
        None
    }

    /// How many addresses the range can hand out when none is taken.
    pub fn capacity(&self) -> u128 {
        let size = (self.hi - self.lo).saturating_add(1);
        let blocked: u128 = self.blocked.iter().map(|&(a, b)| b - a + 1).sum();
        size - blocked
    }

    pub(crate) fn bounds(&self) -> (u128, u128) {
        (self.lo, self.hi)
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4() && self.lo <= other.hi && other.lo <= self.hi
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}-{})", self.subnet, self.start, self.end)
    }
}

fn merge(mut spans: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    spans.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Requested addresses with where each came from, in the reference's order, without repeats.
fn requested_addresses(conf: &NetConf, args: &[(String, String)]) -> CniResult<Vec<(IpAddr, &'static str)>> {
    let mut out: Vec<(IpAddr, &'static str)> = Vec::new();
    let mut push = |ip: IpAddr, source| {
        if !out.iter().any(|(seen, _)| *seen == ip) {
            out.push((ip, source));
        }
    };
    for (_, value) in args.iter().filter(|(k, _)| k == "IP") {
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ip = parse_ip_maybe_prefixed(item).ok_or_else(|| bad("CNI_ARGS IP", format!("{item:?} is not an IP address")))?;
            push(ip, "CNI_ARGS IP");
        }
    }
    for (i, item) in args_cni(conf, "ips")?.iter().enumerate() {
        let ip = parse_ip_maybe_prefixed(item)
            .ok_or_else(|| bad(&format!("args.cni.ips[{i}]"), format!("{item:?} is not an IP address")))?;
        push(ip, "args.cni.ips");
    }
    for (i, item) in field::<Vec<String>>(&conf.runtime_config, "ips", "runtimeConfig")?.unwrap_or_default().iter().enumerate() {
        let ip = parse_ip_maybe_prefixed(item)
            .ok_or_else(|| bad(&format!("runtimeConfig.ips[{i}]"), format!("{item:?} is not an IP address")))?;
        push(ip, "runtimeConfig.ips");
    }
    Ok(out)
}

/// `args.cni.<key>` as a list of strings (the "args" convention).
pub(crate) fn args_cni(conf: &NetConf, key: &str) -> CniResult<Vec<String>> {
    let Some(Value::Object(cni)) = conf.args.as_ref().and_then(|a| a.get("cni")) else { return Ok(Vec::new()) };
    Ok(field::<Vec<String>>(cni, key, "args.cni")?.unwrap_or_default())
}

fn parse_ip_maybe_prefixed(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let ip = match s.parse::<IpNet>() {
        Ok(net) => net.addr(),
        Err(_) => s.parse::<IpAddr>().ok()?,
    };
    Some(addr::canonical(ip))
}

pub(crate) fn ipam_section(conf: &NetConf) -> CniResult<&Map<String, Value>> {
    conf.ipam.as_ref().map(|i| &i.extra).ok_or_else(|| bad("ipam", "is required"))
}

/// An invalid-configuration error (code 7) naming the field (berth-dhcp's too).
pub fn bad(field: &str, what: impl fmt::Display) -> CniError {
    CniError::invalid_config(format!("{field}: {what}"))
}

/// `obj[key]` decoded; absent and null are `None`; a wrong type names `path.key` (the IPAM
/// plugins' one way to read a configuration field, berth-dhcp's included).
pub fn field<T: DeserializeOwned>(obj: &Map<String, Value>, key: &str, path: &str) -> CniResult<Option<T>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| bad(&format!("{path}.{key}"), e)),
    }
}

pub(crate) fn parse_ip(s: &str, field: &str) -> CniResult<IpAddr> {
    s.trim().parse::<IpAddr>().map(addr::canonical).map_err(|_| bad(field, format!("{s:?} is not an IP address")))
}

/// GC's list of attachments to keep is the SDK's (berth_cni::spec); named here as before.
pub use berth_cni::spec::{ValidAttachment as Attachment, VALID_ATTACHMENTS};

/// The attachments GC must keep; see [`berth_cni::spec::NetConf::valid_attachments`].
pub fn valid_attachments(conf: &NetConf) -> CniResult<Vec<Attachment>> {
    conf.valid_attachments()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> NetConf {
        serde_json::from_value(v).unwrap()
    }

    fn parse(ipam: Value) -> CniResult<HostLocalConf> {
        HostLocalConf::parse(&conf(json!({"cniVersion": "1.0.0", "name": "net", "ipam": ipam})), &[])
    }

    fn err(ipam: Value) -> CniError {
        parse(ipam).expect_err("should be rejected")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn legacy_form_gets_reference_defaults() {
        let c = parse(json!({"type": "host-local", "subnet": "10.1.2.0/24"})).unwrap();
        assert_eq!(c.store, StoreConf { network: "net".into(), data_dir: DEFAULT_DATA_DIR.into() });
        assert_eq!(c.range_sets.len(), 1);
        let r = &c.range_sets[0].ranges[0];
        assert_eq!((r.start, r.end, r.gateway), (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1")));
        // .1 is the gateway, so 253 addresses remain: .2 ..= .254.
        assert_eq!(c.range_sets[0].capacity(), 253);
        assert_eq!(r.next_allocatable(0), Some(ip("10.1.2.2")));
    }

    #[test]
    fn ipv6_range_ends_at_the_last_address() {
        let c = parse(json!({"ranges": [[{"subnet": "fd00::/120"}]]})).unwrap();
        let r = &c.range_sets[0].ranges[0];
        assert_eq!((r.start, r.end, r.gateway), (ip("fd00::1"), ip("fd00::ff"), ip("fd00::1")));
        assert_eq!(r.capacity(), 254);
    }

    #[test]
    fn ranges_form_with_everything() {
        let c = parse(json!({
            "subnet": "10.9.0.0/24",
            "ranges": [
                [{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.20", "rangeEnd": "10.10.3.50", "gateway": "10.10.0.254"},
                 {"subnet": "172.16.5.0/24", "routes": [{"dst": "172.17.0.0/16"}]}],
                [{"subnet": "3ffe:ffff:0:01ff::/64", "rangeStart": "3ffe:ffff:0:01ff::0010", "rangeEnd": "3ffe:ffff:0:01ff::0020"}]
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
            "dataDir": "/run/ipam", "resolvConf": "/etc/resolv.conf"
        }))
        .unwrap();
        // The legacy range comes first.
        assert_eq!(c.range_sets.len(), 3);
        assert_eq!(c.range_sets[0].ranges[0].subnet.to_string(), "10.9.0.0/24");
        let set = &c.range_sets[1];
        assert_eq!(set.ranges[0].gateway, ip("10.10.0.254"));
        assert_eq!(set.ranges[1].routes.len(), 1);
        assert_eq!(c.range_sets[2].ranges[0].capacity(), 17);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.store.data_dir, PathBuf::from("/run/ipam"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/resolv.conf")));
    }

    #[test]
    fn legacy_routes_are_not_range_routes() {
        let c = parse(json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]})).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert!(c.range_sets[0].ranges[0].routes.is_empty());
    }

    #[test]
    fn exclusions_are_skipped_and_counted() {
        let c =
            parse(json!({"ranges": [[{"subnet": "10.0.0.0/28", "exclude": ["10.0.0.2", "10.0.0.4/31", "10.0.0.14"]}]]})).unwrap();
        let r = &c.range_sets[0].ranges[0];
        // .1 gateway, .2 .4 .5 excluded, .14 is the range end and excluded: .3 .6-.13 remain.
        assert_eq!(r.capacity(), 9);
        assert_eq!(r.next_allocatable(0), Some(ip("10.0.0.3")));
        assert_eq!(r.next_allocatable(addr::to_int(ip("10.0.0.4"))), Some(ip("10.0.0.6")));
        assert_eq!(r.next_allocatable(addr::to_int(ip("10.0.0.14"))), None);
        assert!(r.refusal(ip("10.0.0.5")).unwrap().contains("excluded"));
        assert!(r.refusal(ip("10.0.0.1")).unwrap().contains("gateway"));
        assert_eq!(r.refusal(ip("10.0.0.6")), None);
    }

    #[test]
    fn network_and_broadcast_are_never_handed_out() {
        let c = parse(json!({"subnet": "10.0.0.0/29", "rangeStart": "10.0.0.0", "rangeEnd": "10.0.0.7", "gateway": "10.0.0.6"}))
            .unwrap();
        let r = &c.range_sets[0].ranges[0];
        assert_eq!(r.capacity(), 5); // .1-.5
        assert!(r.refusal(ip("10.0.0.0")).unwrap().contains("network"));
        assert!(r.refusal(ip("10.0.0.7")).unwrap().contains("broadcast"));
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (json!({"type": "x"}), "ipam: no ranges"),
            (json!({"subnet": "10.0.0.0"}), "ipam.subnet"),
            (json!({"subnet": 5}), "ipam.subnet"),
            (json!({"subnet": "10.0.0.0/31"}), "too small"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]]}), "ipam.ranges[0][0].gateway"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "bogus"}]]}), "ipam.ranges[0][0].rangeStart"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "fd00::1"}]]}), "ipam.ranges[0][0].rangeEnd"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.8"}]]}), "rangeStart"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24", "exclude": ["fd00::1"]}]]}), "ipam.ranges[0][0].exclude[0]"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24"}], []]}), "ipam.ranges[1]: empty"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}), "mixes"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}), "ipam.ranges[1][0]"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24", "routes": [{"dst": "x"}]}]]}), "ipam.ranges[0][0].routes"),
            (json!({"ranges": "10.0.0.0/24"}), "ipam.ranges"),
            (json!({"subnet": "10.0.0.0/24", "routes": [{"gw": "10.0.0.1"}]}), "ipam.routes"),
        ];
        for (ipam, needle) in cases {
            let e = err(ipam.clone());
            assert_eq!(e.code, 7, "{ipam}: {e}");
            assert!(e.msg.contains(needle), "{ipam}: {:?} should mention {needle:?}", e.msg);
        }
        let no_ipam = HostLocalConf::parse(&conf(json!({"name": "n"})), &[]).unwrap_err();
        assert_eq!((no_ipam.code, no_ipam.msg.starts_with("ipam")), (7, true));
        let bad_name = StoreConf::parse(&conf(json!({"name": "../x", "ipam": {}}))).unwrap_err();
        assert!(bad_name.msg.starts_with("name"), "{bad_name}");
    }

    #[test]
    fn requested_addresses_from_every_source() {
        let c = HostLocalConf::parse(
            &conf(json!({
                "name": "n",
                "ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]},
                "args": {"cni": {"ips": ["10.1.0.9"]}},
                "runtimeConfig": {"ips": ["fd00::9/64"]}
            })),
            &[("IP".into(), "10.0.0.5".into())],
        )
        .unwrap();
        let requested: Vec<_> = c.range_sets.iter().map(|s| s.requested).collect();
        assert_eq!(requested, [Some(ip("10.0.0.5")), Some(ip("10.1.0.9")), Some(ip("fd00::9"))]);
    }

    #[test]
    fn requested_addresses_must_fit() {
        let with = |ips: &str| {
            HostLocalConf::parse(
                &conf(json!({"name": "n", "ipam": {"subnet": "10.0.0.0/24", "exclude": ["10.0.0.7"]}})),
                &[("IP".into(), ips.into())],
            )
        };
        assert_eq!(with("10.0.0.5, 10.0.0.5/24").unwrap().range_sets[0].requested, Some(ip("10.0.0.5")));
        for (ips, needle) in [
            ("10.9.9.9", "not in any range"),
            ("10.0.0.1", "gateway"),
            ("10.0.0.7", "excluded"),
            ("10.0.0.5,10.0.0.6", "one address per range set"),
        ] {
            let e = with(ips).unwrap_err();
            assert_eq!(e.code, 7, "{ips}");
            assert!(e.msg.contains(needle) && e.msg.contains("10.0.0"), "{ips}: {}", e.msg);
        }
        let e = with("nope").unwrap_err();
        assert_eq!((e.code, e.msg.starts_with("CNI_ARGS IP")), (7, true), "{e}");
    }

    #[test]
    fn ip_ranges_capability_comes_first() {
        let c = parse_with_runtime(json!({"ipRanges": [[{"subnet": "192.168.0.0/24"}]]}));
        assert_eq!(c.range_sets.len(), 2);
        assert_eq!(c.range_sets[0].ranges[0].subnet.to_string(), "192.168.0.0/24");
    }

    fn parse_with_runtime(rc: Value) -> HostLocalConf {
        HostLocalConf::parse(&conf(json!({"name": "n", "ipam": {"subnet": "10.0.0.0/24"}, "runtimeConfig": rc})), &[]).unwrap()
    }

    #[test]
    fn valid_attachments_are_required_for_gc() {
        let c = conf(json!({"name": "n", "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}));
        assert_eq!(valid_attachments(&c).unwrap(), [Attachment { container_id: "a".into(), ifname: "eth0".into() }]);
        assert_eq!(valid_attachments(&conf(json!({"name": "n"}))).unwrap_err().code, 7);
        let bad = conf(json!({"cni.dev/valid-attachments": [{"containerID": 1}]}));
        assert!(valid_attachments(&bad).unwrap_err().msg.contains(VALID_ATTACHMENTS));
    }
}
