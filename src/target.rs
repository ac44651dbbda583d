//! `berth attach|detach|check`: run a network's chain for one container, named by its
//! namespace path, a namespace name under /var/run/netns, a PID, or its Docker or podman
//! name or ID.

use crate::{containers, net, Context};
use berth_netns::{NetNs, NETNS_RUN_DIR};
use berth_cni::runtime::Attachment;
use crate::error::{BerthError, BerthResult};
use berth_cni::spec::ConfList;
use berth_util::hash::fnv1a32;
use clap::Args;
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct AttachArgs {
    /// Network name.
    pub network: String,
    /// A netns path, a netns name under /var/run/netns, a PID, or a Docker or podman container name or ID.
    pub target: String,
    /// The interface name inside the container.
    #[arg(long, short = 'i', default_value = "eth0")]
    pub ifname: String,
    /// Container ID given to the plugins; default: derived from TARGET.
    #[arg(long)]
    pub id: Option<String>,
    /// attach: shape what the container receives to RATE, in tc's units (10mbit, 512kbit);
    /// the network needs a plugin with the `bandwidth` capability (berth-bandwidth).
    #[arg(long, value_name = "RATE", value_parser = crate::rate::parse_rate)]
    pub ingress_rate: Option<u64>,
    /// attach: shape what the container sends to RATE.
    #[arg(long, value_name = "RATE", value_parser = crate::rate::parse_rate)]
    pub egress_rate: Option<u64>,
    /// attach: the token buckets' size, in tc's units (32kb, 1mb); default: 10 ms at the rate,
    /// at least 16kb.
    #[arg(long, value_name = "SIZE", value_parser = crate::rate::parse_size)]
    pub burst: Option<u64>,
    /// attach: publish a port, [HOSTIP:]HOSTPORT:PORT[/tcp|udp|sctp] (repeatable), as
    /// `docker run -p`; the network needs the `portMappings` capability.
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// attach: the container's address (repeatable, one per family), as `docker run --ip`.
    #[arg(long)]
    pub ip: Vec<IpAddr>,
    /// attach: the container interface's MAC, as `docker run --mac-address`.
    #[arg(long)]
    pub mac: Option<String>,
}


/// A container as the plugins see it: its network namespace and its container ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None` for an engine's container that is not running: it has no namespace, and its
    /// old PID may belong to another process by now.
    pub netns: Option<PathBuf>,
    pub container_id: String,
}

/// Finds a target's namespace and the container ID plugins see for it. In order: a PID, a
/// netns path, a netns name under /var/run/netns, a Docker container (name, ID or unique ID
/// prefix), a podman container. A name nobody knows fails with what was tried.
pub fn resolve(target: &str) -> BerthResult<Target> {
    if !target.is_empty() && target.chars().all(|c| c.is_ascii_digit()) {
        return Ok(Target { netns: Some(format!("/proc/{target}/ns/net").into()), container_id: format!("pid-{target}") });
    }
    if target.contains('/') {
        let path = PathBuf::from(target);
        let base = path.file_name().map(|n| sanitize(&n.to_string_lossy())).unwrap_or_default();
        return Ok(Target { netns: Some(path), container_id: format!("{base}-{:08x}", fnv1a32([target.as_bytes()])) });
    }
    berth_util::names::check_identifier(target)
        .map_err(|_| BerthError::InvalidArgument(format!("{target:?} is neither a PID, a path nor a name")))?;
    let named_netns = named_netns(target);
    let path = Path::new(NETNS_RUN_DIR).join(target);
    if path.exists() {
        return Ok(named_netns);
    }
    let mut tried = vec![format!("no network namespace {}", path.display())];
    for lookup in [containers::docker, containers::podman] {
        match lookup(target) {
            Ok(found) => return Ok(engine_target(found)),
            Err(why) => tried.push(why),
        }
    }
    Err(BerthError::NotFound(format!("no container {target:?}: {}", tried.join("; "))))
}

/// A name under /var/run/netns, whether or not it exists (yet, or still).
fn named_netns(name: &str) -> Target {
    Target { netns: Some(Path::new(NETNS_RUN_DIR).join(name)), container_id: name.to_string() }
}

fn engine_target(found: containers::EngineContainer) -> Target {
    Target { netns: found.pid.map(|pid| format!("/proc/{pid}/ns/net").into()), container_id: found.id }
}

/// A container-ID-safe version of a file name.
fn sanitize(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect();
    let short: String = cleaned.trim_start_matches(['-', '.', '_']).chars().take(40).collect();
    if short.is_empty() { "ns".into() } else { short }
}


/// For ADD and CHECK: the target must have a namespace now.
fn attachment(args: &AttachArgs) -> BerthResult<Attachment> {
    let target = resolve(&args.target)?;
    if target.netns.is_none() {
        return Err(BerthError::NotFound(format!("container {:?} is not running", args.target)));
    }
    Ok(attachment_of(args, target))
}

/// A target without a namespace gets an empty path: CNI_NETNS is then left out, as the
/// spec allows for DEL.
fn attachment_of(args: &AttachArgs, target: Target) -> Attachment {
    Attachment {
        container_id: args.id.clone().unwrap_or(target.container_id),
        ifname: args.ifname.clone(),
        netns: target.netns.unwrap_or_default(),
        ..Default::default()
    }
}

/// For DEL: a target whose container or namespace is gone is still detached by its name, as
/// a netns name (what the cache holds it as when it was one).
fn detach_attachment(args: &AttachArgs) -> BerthResult<Attachment> {
    match resolve(&args.target) {
        Ok(target) => Ok(attachment_of(args, target)),
        Err(BerthError::NotFound(_)) => Ok(attachment_of(args, named_netns(&args.target))),
        Err(e) => Err(e),
    }
}

pub fn attach(ctx: &Context, args: &AttachArgs) -> BerthResult<()> {
    let mut att = attachment(args)?;
    NetNs::open(&att.netns)?;
    let (_, list) = net::find(ctx, &args.network)?;
    if let Some(bandwidth) = crate::rate::bandwidth_arg(&list, args.ingress_rate, args.egress_rate, args.burst)? {
        att.capability_args.insert("bandwidth".into(), bandwidth);
    }
    att.capability_args.extend(capability_args(&list, args)?);
    let result = ctx.runtime().add(&list, &att)?;
    let printed = result.to_value(&list.effective_version(berth_cni::spec::SUPPORTED))?;
    println!("{}", serde_json::to_string_pretty(&printed).expect("JSON values serialize"));
    Ok(())
}

const BRIDGE_HAS_IT: &str = "networks made by berth net create have it";

/// `-p`, `--ip` and `--mac` as the capability arguments `portMappings`, `ips` and `mac`, each
/// given only to a network with a plugin declaring that capability (else it would silently do
/// nothing).
fn capability_args(list: &ConfList, args: &AttachArgs) -> BerthResult<Map<String, Value>> {
    let mut caps = Map::new();
    if !args.publish.is_empty() {
        let default_host_ip = list.plugins.first().and_then(|p| p.get("berth.hostBindingAddress")).and_then(Value::as_str);
        let mappings: Vec<Value> = args.publish.iter().map(|p| port_mapping(p, default_host_ip)).collect::<BerthResult<_>>()?;
        caps.insert(require_capability(list, "portMappings", "-p", BRIDGE_HAS_IT)?, Value::Array(mappings));
    }
    if !args.ip.is_empty() {
        let ips: Vec<Value> = args.ip.iter().map(|ip| json!(ip.to_string())).collect();
        caps.insert(require_capability(list, "ips", "--ip", BRIDGE_HAS_IT)?, Value::Array(ips));
    }
    if let Some(mac) = &args.mac {
        mac.parse::<berth_netlink::MacAddr>().map_err(|_| BerthError::InvalidArgument(format!("--mac {mac:?} is not a MAC address")))?;
        caps.insert(require_capability(list, "mac", "--mac", BRIDGE_HAS_IT)?, json!(mac));
    }
    Ok(caps)
}

/// `capability` when a plugin of `list` declares it; else an error naming `flag` and how to
/// get a network that has it.
pub fn require_capability(list: &ConfList, capability: &str, flag: &str, how: &str) -> BerthResult<String> {
    let declared = list.plugins.iter().any(|p| p.get("capabilities").and_then(|c| c.get(capability)) == Some(&Value::Bool(true)));
    if declared {
        Ok(capability.to_string())
    } else {
        Err(BerthError::InvalidArgument(format!(
            "{flag}: network {} has no plugin with the {capability} capability ({how})",
            list.name
        )))
    }
}

/// `[HOSTIP:]HOSTPORT:PORT[/PROTO]` (an IPv6 host address in brackets) as a CNI port mapping.
pub fn port_mapping(spec: &str, default_host_ip: Option<&str>) -> BerthResult<Value> {
    let bad = || BerthError::InvalidArgument(format!("-p {spec:?} is not [HOSTIP:]HOSTPORT:PORT[/tcp|udp|sctp]"));
    let (ports, protocol) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    if !["tcp", "udp", "sctp"].contains(&protocol) {
        return Err(bad());
    }
    let (host, container_port) = ports.rsplit_once(':').ok_or_else(bad)?;
    let (host_ip, host_port) = match host.rsplit_once(':') {
        Some((ip, port)) => (Some(ip.trim_start_matches('[').trim_end_matches(']')), port),
        None => (default_host_ip, host),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad);
    let mut mapping = json!({ "hostPort": port(host_port)?, "containerPort": port(container_port)?, "protocol": protocol });
    if let Some(ip) = host_ip {
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        mapping["hostIP"] = json!(ip.to_string());
    }
    Ok(mapping)
}

pub fn detach(ctx: &Context, args: &AttachArgs) -> BerthResult<()> {
    let att = detach_attachment(args)?;
    let runtime = ctx.runtime();
    // The network's config may be gone by now; the cache remembers what it was.
    let list = match net::find(ctx, &args.network) {
        Ok((_, list)) => list,
        Err(not_found) => runtime
            .read_cache(&args.network, &att.container_id, &att.ifname)?
            .and_then(|c| c.conflist)
            .ok_or(not_found)?,
    };
    Ok(runtime.del(&list, &att)?)
}

pub fn check(ctx: &Context, args: &AttachArgs) -> BerthResult<()> {
    let att = attachment(args)?;
    let (_, list) = net::find(ctx, &args.network)?;
    ctx.runtime().check(&list, &att)?;
    println!("{} on {}: as attached", args.target, args.network);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_to_namespaces_and_ids() {
        let pid = resolve("1234").unwrap();
        assert_eq!((pid.netns, pid.container_id), (Some(PathBuf::from("/proc/1234/ns/net")), "pid-1234".into()));
        let path = resolve("/run/user/ns/x y").unwrap();
        assert_eq!(path.netns, Some(PathBuf::from("/run/user/ns/x y")));
        assert!(path.container_id.starts_with("x-y-"));
        assert!(berth_util::names::check_identifier(&path.container_id).is_ok());
        assert!(matches!(resolve("bad name!"), Err(BerthError::InvalidArgument(_))));
    }

    #[test]
    fn published_ports_as_docker_writes_them() {
        assert_eq!(port_mapping("8080:80", None).unwrap(), json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}));
        assert_eq!(port_mapping("127.0.0.1:53:53/udp", None).unwrap()["hostIP"], "127.0.0.1");
        assert_eq!(port_mapping("[::1]:8443:443", None).unwrap()["hostIP"], "::1");
        assert_eq!(port_mapping("8080:80", Some("192.0.2.1")).unwrap()["hostIP"], "192.0.2.1");
        for bad in ["80", "0:80", "8080:80/icmp", "x:8080:80", "8080:99999"] {
            assert!(port_mapping(bad, None).is_err(), "{bad}");
        }
    }
}
