//! The firewall side of berth-bridge: masquerade (`ipMasq`), port mappings (the
//! `portMappings` capability, with hairpin) and isolation between berth networks, behind one
//! trait with two backends chosen at run time:
//!
//! - [`Nftables`] (preferred): berth's own `table inet berth`; per-container state lives as
//!   elements of named maps, so an ADD is one batch whose cost does not grow with the number
//!   of containers, sent over nfnetlink from the plugin itself, as is the table's creation on
//!   a host without it, as is a DEL without prevResult, which looks the attachment's
//!   addresses up in the table's index (`nft` only lists the table for CHECK and repairs or
//!   upgrades it);
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
//!   but its own bridge (when `masquerade`), except traffic to the `no_masquerade`
//!   destinations of the same family, which keeps the container's address (peers routed
//!   without NAT: per attachment, one element or rule per address and destination);
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

mod error;
#[doc(hidden)]
pub mod fuzzing;
mod iptables;
mod nfnl;
mod nft;

pub use error::{Cause, FirewallError, FirewallResult};
pub use iptables::{Iptables, IptablesVariant};
pub use nft::Nftables;

use berth_cni::spec::PortMapping;
use berth_util::hash::fnv1a32;
use berth_util::names::{check_identifier, check_interface_name, label};
use ipnet::IpNet;
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

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
    /// With `masquerade`: destinations whose traffic keeps the container's own address
    /// (`noMasqueradeDestinations`: other hosts' container subnets, routed without NAT).
    pub no_masquerade: &'a [IpNet],
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
    fn add(&self, a: &Attachment) -> FirewallResult<()>;
    /// Removes exactly what `add` set up for this attachment; what is gone already is fine.
    fn del(&self, a: &Attachment) -> FirewallResult<()>;
    /// Errors unless every element or rule `add` sets up for this attachment is present.
    fn check(&self, a: &Attachment) -> FirewallResult<()>;
    /// CNI 1.1 GC: removes what berth set up for attachments of `network` that are not in
    /// `keep` (container ID, ifname).
    fn gc(&self, network: &str, keep: &[(String, String)]) -> FirewallResult<()>;
}

/// The configuration value `firewallBackend`, parsed with the rest of a configuration so that
/// an unknown value is refused before anything is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirewallBackend {
    /// `"auto"` or absent: nftables if `nft` is installed, else iptables.
    #[default]
    Auto,
    Nftables,
    /// The iptables variant whose tables hold rules, else iptables-nft.
    Iptables,
    IptablesNft,
    IptablesLegacy,
    /// No NAT, no port mappings, no isolation.
    None,
}

impl FromStr for FirewallBackend {
    type Err = FirewallError;

    fn from_str(name: &str) -> FirewallResult<FirewallBackend> {
        Ok(match name {
            "" | "auto" => FirewallBackend::Auto,
            "nftables" => FirewallBackend::Nftables,
            "iptables" => FirewallBackend::Iptables,
            "iptables-nft" => FirewallBackend::IptablesNft,
            "iptables-legacy" => FirewallBackend::IptablesLegacy,
            "none" => FirewallBackend::None,
            other => {
                return Err(FirewallError::invalid_config(format!(
                    "firewallBackend {other:?} is not one of \"auto\", \"nftables\", \"iptables\", \"iptables-nft\", \
                     \"iptables-legacy\", \"none\""
                )))
            }
        })
    }
}

/// The backend `choice` names. Call it in the namespace the firewall is for: detection
/// reads it.
pub fn backend(choice: FirewallBackend) -> FirewallResult<Box<dyn Firewall>> {
    Ok(match choice {
        FirewallBackend::Auto => match berth_util::tool::find("nft") {
            Some(nft) => Box::new(Nftables::with_binary(nft)),
            None => Box::new(Iptables::detect()?),
        },
        FirewallBackend::Nftables => Box::new(Nftables::new()?),
        FirewallBackend::Iptables => Box::new(Iptables::detect()?),
        FirewallBackend::IptablesNft => Box::new(Iptables::new(IptablesVariant::Nft)?),
        FirewallBackend::IptablesLegacy => Box::new(Iptables::new(IptablesVariant::Legacy)?),
        FirewallBackend::None => Box::new(NoFirewall),
    })
}

/// `firewallBackend: "none"`: no NAT, no port mappings, no isolation.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFirewall;

impl Firewall for NoFirewall {
    fn name(&self) -> &'static str {
        "none"
    }
    fn add(&self, a: &Attachment) -> FirewallResult<()> {
        if !a.port_mappings.is_empty() || a.masquerade {
            return Err(FirewallError::invalid_config(
                "ipMasq and portMappings need a firewall, but firewallBackend is \"none\"",
            ));
        }
        Ok(())
    }
    fn del(&self, _: &Attachment) -> FirewallResult<()> {
        Ok(())
    }
    fn check(&self, _: &Attachment) -> FirewallResult<()> {
        Ok(())
    }
    fn gc(&self, _: &str, _: &[(String, String)]) -> FirewallResult<()> {
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
/// `berth net=NETWORK id=CONTAINERID if=IFNAME` (at most 128 bytes, nft's limit). Each value
/// is a [`label`]: a long name is shortened to a prefix and a hash, and an interface name with
/// characters that nft or iptables input would need quoted is written with a hash too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub net: String,
    pub id: String,
    pub ifname: String,
}

const NET_LABEL_MAX: usize = 30;
const ID_LABEL_MAX: usize = 64;
const IFNAME_LABEL_MAX: usize = berth_util::names::MAX_IFNAME_LEN;

impl Owner {
    fn of(a: &Attachment) -> Owner {
        Owner::new(a.network, a.container_id, a.ifname)
    }

    pub(crate) fn new(network: &str, container_id: &str, ifname: &str) -> Owner {
        Owner { net: net_label(network), id: label(container_id, ID_LABEL_MAX), ifname: ifname_label(ifname) }
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
        fnv1a32([self.id.as_bytes(), b"\0", self.ifname.as_bytes()])
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

fn ifname_label(ifname: &str) -> String {
    label(ifname, IFNAME_LABEL_MAX)
}

/// The `keep` list of `gc`, as label pairs comparable with parsed owners.
fn keep_set(keep: &[(String, String)]) -> HashSet<(String, String)> {
    keep.iter().map(|(id, ifname)| (label(id, ID_LABEL_MAX), ifname_label(ifname))).collect()
}

/// What an attachment turns into, checked once for both backends.
pub(crate) struct Plan {
    pub owner: Owner,
    pub mappings: Vec<Mapping>,
}

impl Plan {
    pub(crate) fn new(a: &Attachment) -> FirewallResult<Plan> {
        let invalid = |what: &str, name: &str, e: berth_util::names::InvalidName| {
            FirewallError::invalid_config(format!("{what} {name:?} is not valid: {e}"))
        };
        check_identifier(a.network).map_err(|e| invalid("network name", a.network, e))?;
        check_identifier(a.container_id).map_err(|e| invalid("container ID", a.container_id, e))?;
        check_interface_name(a.ifname).map_err(|e| invalid("interface name", a.ifname, e))?;
        check_bridge_name(a.bridge)?;
        Ok(Plan { owner: Owner::of(a), mappings: mappings(a)? })
    }
}

/// The bridge's name is written as it is into nft and iptables-restore input (the kernel
/// compares it): besides being an interface name, it must not hold a quote, a backslash or a
/// control character, which that input cannot carry. For configurations to check this before
/// anything is created.
pub fn check_bridge_name(bridge: &str) -> FirewallResult<()> {
    check_interface_name(bridge).map_err(|e| FirewallError::invalid_config(format!("bridge {bridge:?} is not valid: {e}")))?;
    if bridge.chars().any(|c| matches!(c, '"' | '\'' | '\\') || c.is_control()) {
        return Err(FirewallError::invalid_config(format!(
            "bridge {bridge:?} is not usable in firewall rules: it holds a quote, a backslash or a control character"
        )));
    }
    Ok(())
}

/// The port mappings, one per family they apply to, aimed at the container's first address of
/// that family. Without `hostIP` a mapping applies to each family the container has; with
/// `0.0.0.0` or `::` to every local address of that family only.
fn mappings(a: &Attachment) -> FirewallResult<Vec<Mapping>> {
    let first = |family: Family| a.addresses.iter().copied().find(|ip| Family::of(ip) == family);
    let mut out: Vec<Mapping> = Vec::new();
    for (i, pm) in a.port_mappings.iter().enumerate() {
        let field = format!("portMappings[{i}]");
        let proto = Proto::parse(&pm.protocol).ok_or_else(|| {
            FirewallError::invalid_config(format!("{field}.protocol {:?} is not tcp, udp or sctp", pm.protocol))
        })?;
        if pm.host_port == 0 || pm.container_port == 0 {
            return Err(FirewallError::invalid_config(format!("{field}: hostPort and containerPort must not be 0")));
        }
        let wanted: Vec<(Family, Option<IpAddr>)> = if pm.host_ip.is_empty() {
            vec![(Family::V4, None), (Family::V6, None)]
        } else {
            let ip: IpAddr = pm.host_ip.parse().map_err(|e| {
                FirewallError::invalid_config_because(format!("{field}.hostIP {:?} is not an IP address", pm.host_ip), e)
            })?;
            vec![(Family::of(&ip), Some(ip).filter(|ip| !ip.is_unspecified()))]
        };
        let explicit = !pm.host_ip.is_empty();
        for (family, host_ip) in wanted {
            let Some(target) = first(family) else {
                if explicit {
                    return Err(FirewallError::invalid_config(format!(
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
                    return Err(FirewallError::invalid_config(format!("{field}: host port {} is mapped twice", m.host_side())));
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
pub(crate) fn enable_forwarding(a: &Attachment, plan: &Plan) -> FirewallResult<()> {
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

/// The tool a backend needs, in PATH or the usual sbin directories.
pub(crate) fn require_tool(name: &str, backend: &str) -> FirewallResult<PathBuf> {
    berth_util::tool::find(name).ok_or_else(|| {
        FirewallError::kernel(format!(
            "firewall backend {backend} needs {name}, which is not installed (not in PATH or /usr/sbin)"
        ))
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
    // Killed with the plugin: an iptables-restore left running would apply a batch after
    // our lock is gone, under a retried DEL that has already read the rules.
    berth_util::tool::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if let Some(input) = input {
        // Written whole before reading: nft and iptables-restore read all input first.
        let mut stdin = child.stdin.take().ok_or_else(|| format!("no stdin for {}", tool.display()))?;
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
pub(crate) fn port_taken(m: &Mapping, holder: Option<&Owner>, holder_target: Option<String>) -> FirewallError {
    let who = match holder {
        Some(owner) => owner.to_string(),
        None => "a rule berth did not write".to_string(),
    };
    let to = holder_target.map(|t| format!(" (to {t})")).unwrap_or_default();
    FirewallError::kernel(format!("host port {} is already mapped to {who}{to}", m.host_side()))
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
            no_masquerade: &[],
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
            let err = mappings(&attachment(&v4, std::slice::from_ref(&bad))).unwrap_err();
            assert!(matches!(err, FirewallError::InvalidConfig { .. }), "{bad:?}");
        }
        let twice = [pm(8080, 80, "tcp", ""), pm(8080, 81, "tcp", "")];
        assert!(mappings(&attachment(&v4, &twice)).unwrap_err().to_string().contains("0.0.0.0:8080/tcp"));
    }

    #[test]
    fn names_are_checked_as_everywhere_else() {
        let addrs: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap()];
        let mut a = attachment(&addrs, &[]);
        assert!(Plan::new(&a).is_ok());
        // Any interface name the kernel (and the skel) takes is usable: written as a label.
        a.ifname = "eth@0";
        let owner = Plan::new(&a).unwrap().owner;
        assert!(owner.ifname.starts_with("eth_0~") && owner.ifname.len() <= 15, "{}", owner.ifname);
        assert_eq!(Owner::parse(&owner.comment()), Some(owner.clone()));
        assert_ne!(Owner::new("net1", "c0ffee", "eth#0").ifname, owner.ifname, "labels of different names differ");
        a.ifname = "eth0";
        a.bridge = "br@0";
        assert!(Plan::new(&a).is_ok());
        for bad in ["br\"0", "br 0", ""] {
            a.bridge = bad;
            assert!(matches!(Plan::new(&a), Err(FirewallError::InvalidConfig { .. })), "{bad:?}");
        }
        a.bridge = "br0";
        a.network = "my net";
        assert_eq!(berth_cni::CniError::from(Plan::new(&a).err().unwrap()).code, 7);
    }

    #[test]
    fn labels_of_multibyte_names_cut_on_characters() {
        let id = "é".repeat(70);
        let label = label(&id, ID_LABEL_MAX);
        assert!(label.len() <= ID_LABEL_MAX && label.is_ascii(), "{label}");
        // GC with such an ID in `keep` (the runtime's, unchecked) must not panic.
        assert_eq!(keep_set(&[(id, "eth0".into())]).len(), 1);
        let long = "a".repeat(100);
        assert_eq!(super::label(&long, ID_LABEL_MAX), format!("{}~{:08x}", &long[..55], fnv1a32([long.as_bytes()])));
    }
}
