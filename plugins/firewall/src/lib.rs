//! The firewall side of berth-bridge: masquerade (`ipMasq`), port mappings (the
//! `portMappings` capability, with hairpin) and isolation between berth networks, behind one
//! trait with two backends chosen at run time:
//!
//! - [`Nftables`] (preferred): berth's own `table inet berth`; per-container state lives as
//!   elements of named maps, so an ADD is one batch whose cost does not grow with the number
//!   of containers, sent over nfnetlink from the plugin itself, as is the table's creation on
//!   a host without it (`nft` only lists the table and repairs or upgrades it);
//! - [`Iptables`] (`iptables-nft` or `iptables-legacy`): per-container rules in berth's own
//!   chains, one `iptables-save` read and one `iptables-restore --noflush` per family.
//!
//! Both work on the network namespace of the calling thread (a plugin's host namespace): the
//! tools are started from it and sysctls are written there. Traffic from the host to a
//! published port works through any of the host's addresses except loopback: `127.0.0.1:PORT`
//! and `[::1]:PORT` are never forwarded (a host service listening there keeps working).
//!
//! What [`Firewall::add`] sets up for an [`Attachment`]:
//! - masquerade of routed traffic from the container's addresses leaving through any interface
//!   but its own bridge (when `masquerade`);
//! - DNAT of `hostIP:hostPort/protocol` (any local address without `hostIP`) to the container's
//!   first address of that family, from outside (prerouting) and from the host (output);
//! - hairpin: DNATed traffic that leaves through the bridge its (berth container) source lives
//!   on is masqueraded, so a container reaches its own or a neighbour's published port through
//!   a host address, with or without `masquerade`;
//! - isolation: routed traffic from a berth container to a berth container of another bridge
//!   is dropped unless it was DNATed (published ports stay reachable) or either of the two
//!   attachments is open (`isolate` false, the network's `isolateNetworks: false`). So an open
//!   network reaches and is reached by every berth network, isolated ones included, while two
//!   isolated networks never reach each other: one open network is a hub (a proxy, a shared
//!   database) that no spoke can use to reach another spoke directly. Isolation inside one
//!   bridge is the bridge port's business (IFLA_BRPORT_ISOLATED), not the firewall's;
//! - IP forwarding on (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding) for the families the
//!   container has, when `masquerade` is on, there are port mappings or it is open.

mod iptables;
mod nfnl;
mod nft;

pub use iptables::{Iptables, IptablesVariant};
pub use nft::Nftables;

use berth_cni::error::{CniError, CniResult, Code};
use berth_cni::spec::PortMapping;
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One container interface on one berth network. DEL and CHECK must be given the values ADD
/// was given (prevResult's addresses, runtimeConfig.portMappings); a DEL without addresses
/// finds the attachment's elements or rules by their comments instead.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    /// The network's name (`name` of the configuration).
    pub network: &'a str,
    pub container_id: &'a str,
    /// The interface inside the container (CNI_IFNAME).
    pub ifname: &'a str,
    /// The host bridge the container's veth is a port of.
    pub bridge: &'a str,
    /// The container's addresses on this interface (without prefix length).
    pub addresses: &'a [IpAddr],
    /// `ipMasq`: masquerade the container's routed traffic behind the host's address.
    pub masquerade: bool,
    /// `isolateNetworks`: false lets routed traffic between this container and the containers
    /// of other berth networks through, both ways (see the module docs for the rule).
    pub isolate: bool,
    pub port_mappings: &'a [PortMapping],
}

/// A firewall backend. Every operation is one batched update (per family for iptables).
pub trait Firewall: Send + Sync {
    /// "nftables", "iptables-nft", "iptables-legacy" or "none".
    fn name(&self) -> &'static str;
    /// Sets up the attachment. Running it again with the same values is fine (to change the
    /// port mappings, DEL first); a port mapping whose host side another attachment holds is
    /// an error naming that container, and changes nothing.
    fn add(&self, a: &Attachment) -> CniResult<()>;
    /// Removes exactly what `add` set up for this attachment; what is gone already is fine.
    fn del(&self, a: &Attachment) -> CniResult<()>;
    /// Errors unless every element or rule `add` sets up for this attachment is present.
    fn check(&self, a: &Attachment) -> CniResult<()>;
    /// CNI 1.1 GC: removes what berth set up for attachments of `network` that are not in
    /// `keep` (container ID, ifname).
    fn gc(&self, network: &str, keep: &[(String, String)]) -> CniResult<()>;
}

/// The backend for the configuration value `firewallBackend`: `"nftables"`, `"iptables"`
/// (the iptables variant whose tables hold rules, else iptables-nft), `"iptables-nft"`,
/// `"iptables-legacy"`, `"none"`, or `"auto"`/absent (nftables if `nft` is installed, else
/// iptables). Call it in the namespace the firewall is for: detection reads it.
pub fn backend(name: &str) -> CniResult<Box<dyn Firewall>> {
    Ok(match name {
        "" | "auto" => match find_tool("nft") {
            Some(nft) => Box::new(Nftables::with_binary(nft)),
            None => Box::new(Iptables::detect()?),
        },
        "nftables" => Box::new(Nftables::new()?),
        "iptables" => Box::new(Iptables::detect()?),
        "iptables-nft" => Box::new(Iptables::new(IptablesVariant::Nft)?),
        "iptables-legacy" => Box::new(Iptables::new(IptablesVariant::Legacy)?),
        "none" => Box::new(NoFirewall),
        other => {
            return Err(CniError::invalid_config(format!(
                "firewallBackend {other:?} is not one of \"auto\", \"nftables\", \"iptables\", \"iptables-nft\", \
                 \"iptables-legacy\", \"none\""
            )))
        }
    })
}

/// `firewallBackend: "none"`: no NAT, no port mappings, no isolation.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFirewall;

impl Firewall for NoFirewall {
    fn name(&self) -> &'static str {
        "none"
    }
    fn add(&self, a: &Attachment) -> CniResult<()> {
        if !a.port_mappings.is_empty() || a.masquerade {
            return Err(CniError::invalid_config("ipMasq and portMappings need a firewall, but firewallBackend is \"none\""));
        }
        Ok(())
    }
    fn del(&self, _: &Attachment) -> CniResult<()> {
        Ok(())
    }
    fn check(&self, _: &Attachment) -> CniResult<()> {
        Ok(())
    }
    fn gc(&self, _: &str, _: &[(String, String)]) -> CniResult<()> {
        Ok(())
    }
}

// ---- what both backends share ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
    /// IANA protocol number, as nft may print it.
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
    fn from_number(n: u64) -> Option<Proto> {
        [Proto::Tcp, Proto::Udp, Proto::Sctp].into_iter().find(|p| u64::from(p.number()) == n)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

/// One port mapping of one family, checked: `host_ip` `None` is every local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub family: Family,
    pub host_ip: Option<IpAddr>,
    pub proto: Proto,
    pub host_port: u16,
    pub target: IpAddr,
    pub container_port: u16,
}

impl Mapping {
    /// `0.0.0.0:8080/tcp`, `[::]:8080/tcp`, `192.0.2.1:8080/tcp`: the host side, for messages.
    pub(crate) fn host_side(&self) -> String {
        let ip = self.host_ip.unwrap_or(match self.family {
            Family::V4 => IpAddr::from([0u8; 4]),
            Family::V6 => IpAddr::from([0u16; 8]),
        });
        format!("{}/{}", socket(ip, self.host_port), self.proto)
    }
}

/// `10.0.0.2:80` or `[fd00::2]:80`.
pub(crate) fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Who an element or rule belongs to, written into its comment:
/// `berth net=NETWORK id=CONTAINERID if=IFNAME` (at most 128 bytes, nft's limit; a long
/// network name or container ID is shortened to a prefix and a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub net: String,
    pub id: String,
    pub ifname: String,
}

const NET_LABEL_MAX: usize = 30;
const ID_LABEL_MAX: usize = 64;

impl Owner {
    fn of(a: &Attachment) -> Owner {
        Owner::new(a.network, a.container_id, a.ifname)
    }

    pub(crate) fn new(network: &str, container_id: &str, ifname: &str) -> Owner {
        Owner { net: net_label(network), id: label(container_id, ID_LABEL_MAX), ifname: ifname.to_string() }
    }

    pub(crate) fn comment(&self) -> String {
        format!("berth net={} id={} if={}", self.net, self.id, self.ifname)
    }

    pub(crate) fn parse(comment: &str) -> Option<Owner> {
        let mut words = comment.split(' ');
        if words.next() != Some("berth") {
            return None;
        }
        let (mut net, mut id, mut ifname) = (None, None, None);
        for word in words {
            match word.split_once('=') {
                Some(("net", v)) => net = Some(v),
                Some(("id", v)) => id = Some(v),
                Some(("if", v)) => ifname = Some(v),
                _ => {}
            }
        }
        Some(Owner { net: net?.to_string(), id: id?.to_string(), ifname: ifname?.to_string() })
    }

    /// The same container interface (the network may have been renamed since).
    pub(crate) fn same_attachment(&self, other: &Owner) -> bool {
        self.id == other.id && self.ifname == other.ifname
    }

    /// A 32-bit tag identifying the attachment, stored as map data so that the kernel itself
    /// tells an element of this attachment from another one's with the same key.
    pub(crate) fn tag(&self) -> u32 {
        fnv1a(format!("{}\0{}", self.id, self.ifname).as_bytes())
    }

    /// For `gc`: is this owner of `network` and not one of `keep`?
    fn collectable(&self, network: &str, keep: &HashSet<(String, String)>) -> bool {
        self.net == net_label(network) && !keep.contains(&(self.id.clone(), self.ifname.clone()))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container {} (network {}, interface {})", self.id, self.net, self.ifname)
    }
}

pub(crate) fn net_label(network: &str) -> String {
    label(network, NET_LABEL_MAX)
}

/// `s`, or when longer than `max`, a prefix, `~` and a hash of the whole (still unique).
fn label(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    // Validated names are ASCII, so any byte index is a char boundary.
    format!("{}~{:08x}", &s[..max - 9], fnv1a(s.as_bytes()))
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// The `keep` list of `gc`, as label pairs comparable with parsed owners.
fn keep_set(keep: &[(String, String)]) -> HashSet<(String, String)> {
    keep.iter().map(|(id, ifname)| (label(id, ID_LABEL_MAX), ifname.clone())).collect()
}

/// What an attachment turns into, checked once for both backends.
pub(crate) struct Plan {
    pub owner: Owner,
    pub mappings: Vec<Mapping>,
}

impl Plan {
    pub(crate) fn new(a: &Attachment) -> CniResult<Plan> {
        validate_name("network name", a.network)?;
        validate_name("container ID", a.container_id)?;
        validate_ifname("interface name", a.ifname)?;
        validate_ifname("bridge", a.bridge)?;
        Ok(Plan { owner: Owner::of(a), mappings: mappings(a)? })
    }
}

/// Names go into nft and iptables-restore input and into comments: only characters that
/// need no quoting anywhere (the spec's alphabet for network names and container IDs).
fn validate_name(what: &str, s: &str) -> CniResult<()> {
    let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_config(format!(
            "{what} {s:?} is not usable in firewall rules: it must start with a letter or digit and hold only \
             letters, digits, '_', '.' and '-'"
        )))
    }
}

fn validate_ifname(what: &str, s: &str) -> CniResult<()> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_config(format!(
            "{what} {s:?} is not usable in firewall rules: at most 15 letters, digits, '_', '.' and '-'"
        )))
    }
}

/// The port mappings, one per family they apply to, aimed at the container's first address of
/// that family. Without `hostIP` a mapping applies to each family the container has; with
/// `0.0.0.0` or `::` to every local address of that family only.
fn mappings(a: &Attachment) -> CniResult<Vec<Mapping>> {
    let first = |family: Family| a.addresses.iter().copied().find(|ip| Family::of(ip) == family);
    let mut out: Vec<Mapping> = Vec::new();
    for (i, pm) in a.port_mappings.iter().enumerate() {
        let field = format!("portMappings[{i}]");
        let proto = Proto::parse(&pm.protocol)
            .ok_or_else(|| CniError::invalid_config(format!("{field}.protocol {:?} is not tcp, udp or sctp", pm.protocol)))?;
        if pm.host_port == 0 || pm.container_port == 0 {
            return Err(CniError::invalid_config(format!("{field}: hostPort and containerPort must not be 0")));
        }
        let wanted: Vec<(Family, Option<IpAddr>)> = if pm.host_ip.is_empty() {
            vec![(Family::V4, None), (Family::V6, None)]
        } else {
            let ip: IpAddr = pm.host_ip.parse().map_err(|e| {
                CniError::invalid_config(format!("{field}.hostIP {:?} is not an IP address", pm.host_ip)).with_details(e)
            })?;
            vec![(Family::of(&ip), Some(ip).filter(|ip| !ip.is_unspecified()))]
        };
        let explicit = !pm.host_ip.is_empty();
        for (family, host_ip) in wanted {
            let Some(target) = first(family) else {
                if explicit {
                    return Err(CniError::invalid_config(format!(
                        "{field}.hostIP {} is {family:?} but the container has no {family:?} address",
                        pm.host_ip
                    )));
                }
                continue;
            };
            let m = Mapping { family, host_ip, proto, host_port: pm.host_port, target, container_port: pm.container_port };
            if let Some(dup) =
                out.iter().find(|o| (o.family, o.host_ip, o.proto, o.host_port) == (family, host_ip, proto, pm.host_port))
            {
                if *dup != m {
                    return Err(CniError::invalid_config(format!("{field}: host port {} is mapped twice", m.host_side())));
                }
                continue;
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// Turns on forwarding for the families of a container that is masqueraded, publishes ports
/// or is open to other networks.
pub(crate) fn enable_forwarding(a: &Attachment, plan: &Plan) -> CniResult<()> {
    if !a.masquerade && plan.mappings.is_empty() && a.isolate {
        return Ok(());
    }
    if a.addresses.iter().any(IpAddr::is_ipv4) {
        berth_netns::sysctl::set("net/ipv4/ip_forward", "1")?;
    }
    if a.addresses.iter().any(IpAddr::is_ipv6) {
        berth_netns::sysctl::set("net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

/// Looks a tool up in PATH, then in the usual sbin directories (a runtime's PATH may lack them).
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(crate) fn require_tool(name: &str, backend: &str) -> CniResult<PathBuf> {
    find_tool(name).ok_or_else(|| {
        CniError::new(
            Code::Kernel,
            format!("firewall backend {backend} needs {name}, which is not installed (not in PATH or /usr/sbin)"),
        )
    })
}

/// Runs a tool with `input` on stdin; its stdout, or its stderr (and status) as the error.
pub(crate) fn run_tool(tool: &Path, args: &[&str], input: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C");
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if let Some(input) = input {
        // Written whole before reading: nft and iptables-restore read all input first.
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes()).map_err(|e| format!("cannot write to {}: {e}", tool.display()))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("waiting for {}: {e}", tool.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{} exited with {}: {}", tool.display(), out.status, stderr.trim()))
    }
}

/// A port mapping whose host side is held by another attachment.
pub(crate) fn port_taken(m: &Mapping, holder: Option<&Owner>, holder_target: Option<String>) -> CniError {
    let who = match holder {
        Some(owner) => owner.to_string(),
        None => "a rule berth did not write".to_string(),
    };
    let to = holder_target.map(|t| format!(" (to {t})")).unwrap_or_default();
    CniError::new(Code::Kernel, format!("host port {} is already mapped to {who}{to}", m.host_side()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(host_port: u16, container_port: u16, protocol: &str, host_ip: &str) -> PortMapping {
        PortMapping { host_port, container_port, protocol: protocol.into(), host_ip: host_ip.into() }
    }

    fn attachment<'a>(addresses: &'a [IpAddr], pms: &'a [PortMapping]) -> Attachment<'a> {
        Attachment {
            network: "net1",
            container_id: "c0ffee",
            ifname: "eth0",
            bridge: "br0",
            addresses,
            masquerade: true,
            isolate: true,
            port_mappings: pms,
        }
    }

    #[test]
    fn owner_comment_round_trips_and_fits_nft() {
        let long_net = "n".repeat(200);
        let long_id = "a".repeat(200);
        let owner = Owner::new(&long_net, &long_id, "eth012345678901");
        let comment = owner.comment();
        assert!(comment.len() <= 128, "{} bytes", comment.len());
        assert_eq!(Owner::parse(&comment), Some(owner.clone()));
        assert_ne!(Owner::new(&long_net, &"a".repeat(201), "eth0").id, owner.id);
        assert_eq!(Owner::parse("berth jump"), None);
        assert_eq!(Owner::parse("other net=a id=b if=c"), None);
    }

    #[test]
    fn mappings_follow_families_and_host_ip() {
        let addrs: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap(), "fd01::2".parse().unwrap(), "10.1.0.9".parse().unwrap()];
        let pms = [pm(8080, 80, "TCP", ""), pm(53, 53, "udp", "0.0.0.0"), pm(443, 443, "tcp", "fd99::1")];
        let m = mappings(&attachment(&addrs, &pms)).unwrap();
        let sides: Vec<String> = m.iter().map(Mapping::host_side).collect();
        assert_eq!(sides, ["0.0.0.0:8080/tcp", "[::]:8080/tcp", "0.0.0.0:53/udp", "[fd99::1]:443/tcp"]);
        assert_eq!(m[0].target, addrs[0], "first address of the family");
        assert_eq!(m[1].target, addrs[1]);

        let v4: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap()];
        assert_eq!(mappings(&attachment(&v4, &[pm(8080, 80, "tcp", "")])).unwrap().len(), 1);
        for bad in [pm(8080, 80, "icmp", ""), pm(0, 80, "tcp", ""), pm(8080, 80, "tcp", "::1"), pm(1, 2, "tcp", "x")] {
            assert_eq!(mappings(&attachment(&v4, std::slice::from_ref(&bad))).unwrap_err().code, 7, "{bad:?}");
        }
        let twice = [pm(8080, 80, "tcp", ""), pm(8080, 81, "tcp", "")];
        assert!(mappings(&attachment(&v4, &twice)).unwrap_err().msg.contains("0.0.0.0:8080/tcp"));
    }

    #[test]
    fn names_that_would_need_quoting_are_refused() {
        let addrs: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap()];
        let mut a = attachment(&addrs, &[]);
        assert!(Plan::new(&a).is_ok());
        a.bridge = "br\"0";
        assert_eq!(Plan::new(&a).err().unwrap().code, 7);
        a.bridge = "br0";
        a.network = "my net";
        assert_eq!(Plan::new(&a).err().unwrap().code, 7);
    }
}
