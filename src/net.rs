//! `berth net`: networks are conflists in the config directory, one file per network.

use crate::error::{BerthError, BerthResult};
use crate::netconf::{key_values, overlap, parse_peer, parse_tunnel, peers_of, subnets_of, Driver, NetworkSpec};
use crate::ps::Format;
use crate::Context;
use berth_cni::spec::ConfList;
use berth_netlink::{Netlink, RouteEntry};
use berth_util::fs::write_durably;
use clap::{Args, Subcommand};
use ipnet::IpNet;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum NetCommand {
    /// Create a network (Docker's defaults: masquerade, published ports, isolation on).
    Create(Box<CreateArgs>),
    /// List networks with their driver and subnets.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print a network's conflist.
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove networks (their conflists, --peer routes, an overlay's VXLAN port); attached
    /// containers keep their interfaces until detached.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network that has no attachment.
    Prune,
}

#[derive(Args)]
pub struct CreateArgs {
    name: String,
    /// bridge (a Linux bridge), macvlan (-o parent=IF[.VLAN]), ovs (-o bridge=OVSBR [-o vlan=N]),
    /// overlay (a bridge joined to other hosts' by VXLAN: --vni N --remote IP ...).
    #[arg(short = 'd', long, value_enum, default_value = "bridge")]
    driver: Driver,
    /// A subnet, IPv4 or IPv6 (repeatable).
    #[arg(long, required = true)]
    subnet: Vec<IpNet>,
    /// Hand out addresses only from this part of a subnet (repeatable, one per subnet).
    #[arg(long)]
    ip_range: Vec<IpNet>,
    /// A subnet's gateway (repeatable); default: each subnet's first address.
    #[arg(long)]
    gateway: Vec<IpAddr>,
    /// An address never handed out, NAME=IP (repeatable), as Docker's --aux-address.
    #[arg(long, value_name = "NAME=IP")]
    aux_address: Vec<String>,
    /// The network has an IPv6 subnet.
    #[arg(long)]
    ipv6: bool,
    /// No masquerade and no route out: the containers reach each other only.
    #[arg(long)]
    internal: bool,
    /// Driver options, Docker's names or berth's short ones (bridge, icc, masquerade, mtu,
    /// host_binding_ipv4; parent, macvlan_mode; vlan).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opt: Vec<String>,
    /// A label to keep with the network (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Default: "berth-" followed by the network name, cut to 15 characters (same as -o bridge=).
    #[arg(long)]
    bridge: Option<String>,
    /// Chain berth-bandwidth, so `berth attach --ingress-rate/--egress-rate` can shape.
    #[arg(long)]
    bandwidth: bool,
    /// -d overlay: the VXLAN network identifier (1 to 16777215), the same on every host.
    #[arg(long)]
    vni: Option<u32>,
    /// -d overlay: another host's underlay address (repeatable).
    #[arg(long, value_name = "IP")]
    remote: Vec<IpAddr>,
    /// -d overlay: a multicast group instead of --remote.
    #[arg(long, value_name = "IP")]
    group: Option<IpAddr>,
    /// -d overlay: the underlay interface (its MTU sizes the overlay's; default 1500 assumed).
    #[arg(long, value_name = "INTERFACE")]
    vxlan_dev: Option<String>,
    /// -d overlay: the VXLAN UDP port.
    #[arg(long, default_value_t = berth_netlink::VXLAN_PORT)]
    vxlan_port: u16,
    /// Another host's container subnet, routed through that host, or the router toward it
    /// (repeatable); traffic to it is not masqueraded.
    #[arg(long, value_name = "SUBNET=HOST_IP")]
    peer: Vec<String>,
    /// -d ovs: a tunnel port to another host's bridge, gre or vxlan, with an optional key
    /// (repeatable): gre:192.0.2.2:5, vxlan:[fd00::2]:42.
    #[arg(long, value_name = "TYPE:REMOTE[:KEY]")]
    tunnel: Vec<String>,
}

pub fn run(ctx: &Context, cmd: NetCommand) -> BerthResult<()> {
    match cmd {
        NetCommand::Create(args) => {
            let list = create_list(&args)?;
            refuse_overlaps(ctx, &list)?;
            // Resolved first: a peer this host cannot reach is refused before anything is made.
            let routes = peer_routes(&list)?;
            let path = create(ctx, &list)?;
            if let Err(e) = add_routes(&routes) {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            println!("{}", path.display());
            Ok(())
        }
        NetCommand::Ls { format } => list_networks(ctx, format),
        NetCommand::Inspect { name, format } => {
            let (path, list) = find(ctx, &name)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&list).expect("conflists serialize")),
                Format::Table => {
                    let raw = std::fs::read_to_string(&path).map_err(BerthError::io(format!("read {}", path.display())))?;
                    println!("{}", raw.trim_end());
                }
            }
            Ok(())
        }
        NetCommand::Rm { names } => {
            let found: Vec<(PathBuf, ConfList)> = names.iter().map(|n| find(ctx, n)).collect::<BerthResult<_>>()?;
            for (path, list) in found {
                remove_host_side(&list)?;
                std::fs::remove_file(&path).map_err(BerthError::io(format!("remove {}", path.display())))?;
            }
            Ok(())
        }
        NetCommand::Prune => prune(ctx),
    }
}

pub(crate) fn create_list(args: &CreateArgs) -> BerthResult<ConfList> {
    let mut options = key_values("-o", &args.opt)?;
    if let Some(bridge) = &args.bridge {
        options.insert("bridge".into(), bridge.clone());
    }
    let spec = NetworkSpec {
        name: args.name.clone(),
        subnets: args.subnet.clone(),
        gateways: args.gateway.clone(),
        ip_ranges: args.ip_range.clone(),
        aux_addresses: key_values("--aux-address", &args.aux_address)?,
        ipv6: args.ipv6,
        internal: args.internal,
        options,
        labels: key_values("--label", &args.label)?,
        bandwidth: args.bandwidth,
        vxlan: args.vni.map(|vni| berth_bridge::VxlanConf {
            vni,
            remotes: args.remote.clone(),
            group: args.group,
            port: args.vxlan_port,
            dev: args.vxlan_dev.clone(),
        }),
        peers: args.peer.iter().map(|p| parse_peer(p)).collect::<BerthResult<_>>()?,
        tunnels: args.tunnel.iter().map(|t| parse_tunnel(t)).collect::<BerthResult<_>>()?,
    };
    if args.vni.is_none() && (!args.remote.is_empty() || args.group.is_some()) {
        return Err(invalid("--remote and --group need --vni".into()));
    }
    spec.conflist(args.driver)
}

/// `--peer SUBNET=HOST_IP`: a route to each peer subnet, in the namespace berth runs in,
/// through the peer host when this host reaches it on-link, else through the next hop this
/// host takes toward it (a router, which must itself route SUBNET to HOST_IP).
fn peer_routes(list: &ConfList) -> BerthResult<Vec<RouteEntry>> {
    let peers = peers_of(list);
    if peers.is_empty() {
        return Ok(Vec::new());
    }
    let mut host = Netlink::open()?;
    let mut routes = Vec::new();
    for (subnet, via) in peers {
        let toward = host.route_to(via)?.ok_or_else(|| {
            invalid(format!("--peer {subnet}={via}: this host has no route to {via} (or it is one of its own addresses)"))
        })?;
        routes.push(peer_route(subnet, toward.gateway.unwrap_or(via)));
    }
    Ok(routes)
}

fn add_routes(routes: &[RouteEntry]) -> BerthResult<()> {
    let mut host = Netlink::open()?;
    routes.iter().try_for_each(|route| host.add_route(route))?;
    Ok(())
}

fn peer_route(subnet: IpNet, next_hop: IpAddr) -> RouteEntry {
    RouteEntry { dst: subnet, gateway: Some(next_hop), oif: None, table: None, priority: None, mtu: None, scope: None }
}

/// What a network has on the host besides its containers' attachments: `--peer` routes, the
/// VXLAN port of `-d overlay` and the tunnels of an Open vSwitch network (removed whatever
/// is still attached). What is already gone is not an error.
fn remove_host_side(list: &ConfList) -> BerthResult<()> {
    let mut host = Netlink::open()?;
    for (subnet, via) in peers_of(list) {
        // Through the peer itself, or the next hop toward it (see `peer_routes`).
        let next_hop = host.route_to(via)?.and_then(|r| r.gateway);
        let ours = |r: &RouteEntry| r.dst == subnet.trunc() && r.gateway.is_some_and(|gw| gw == via || Some(gw) == next_hop);
        for route in host.routes()?.into_iter().filter(ours) {
            host.del_route(&route)?;
        }
    }
    let plugin = list.plugins.first();
    let vxlan = plugin.and_then(|p| p.get("vxlan")).and_then(|v| serde_json::from_value::<berth_bridge::VxlanConf>(v.clone()).ok());
    let bridge = plugin.and_then(|p| p.get("bridge")).and_then(Value::as_str);
    if let (Some(vxlan), Some(bridge)) = (vxlan, bridge) {
        berth_bridge::remove_vxlan_port(bridge, &vxlan)?;
    }
    let tunnels = plugin.and_then(|p| p.get("tunnels")).and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if let (true, Some(plugin)) = (tunnels, plugin) {
        let socket = ["ovsdbSocket", "socket_file"].iter().find_map(|k| plugin.get(*k).and_then(Value::as_str));
        berth_ovs::remove_tunnels(socket.unwrap_or(berth_ovs::DEFAULT_OVSDB_SOCKET), &list.name)?;
    }
    Ok(())
}

/// A subnet overlapping another berth network's, or a route of the host (in the namespace
/// berth runs in), is refused naming both.
fn refuse_overlaps(ctx: &Context, list: &ConfList) -> BerthResult<()> {
    let ours = subnets_of(list);
    for (_, other) in all(ctx)? {
        for theirs in subnets_of(&other) {
            if let Some(mine) = ours.iter().find(|s| overlap(s, &theirs)) {
                return Err(invalid(format!("subnet {mine} overlaps network {}'s subnet {theirs}", other.name)));
            }
        }
    }
    let mut host = Netlink::open()?;
    for route in host.routes()?.into_iter().filter(|r| r.dst.prefix_len() > 0) {
        if let Some(mine) = ours.iter().find(|s| overlap(s, &route.dst)) {
            let dev = route.oif.and_then(|i| host.link_by_index(i).ok().flatten()).map(|l| format!(" dev {}", l.name)).unwrap_or_default();
            return Err(invalid(format!("subnet {mine} overlaps the host's route {}{dev}", route.dst)));
        }
    }
    Ok(())
}

fn list_networks(ctx: &Context, format: Format) -> BerthResult<()> {
    let rows: Vec<Value> = all(ctx)?
        .iter()
        .map(|(path, list)| {
            let subnets: Vec<String> = subnets_of(list).iter().map(|s| s.to_string()).collect();
            json!({ "name": list.name, "driver": Driver::of(list), "subnets": subnets, "file": path.display().to_string(),
                    "labels": list.extra.get("berth.labels").cloned().unwrap_or(json!({})) })
        })
        .collect();
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON values serialize"));
        return Ok(());
    }
    println!("{:<20} {:<8} {:<36} FILE", "NAME", "DRIVER", "SUBNETS");
    for row in rows {
        let subnets: Vec<&str> = row["subnets"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!("{:<20} {:<8} {:<36} {}", row["name"].as_str().unwrap_or_default(), row["driver"].as_str().unwrap_or_default(), subnets.join(","), row["file"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// Networks without an attachment in the cache go; the names of those removed are printed.
fn prune(ctx: &Context) -> BerthResult<()> {
    let attached: Vec<String> = ctx.runtime().cached_attachments()?.into_iter().map(|c| c.network).collect();
    for (path, list) in all(ctx)? {
        if !attached.contains(&list.name) {
            remove_host_side(&list)?;
            std::fs::remove_file(&path).map_err(BerthError::io(format!("remove {}", path.display())))?;
            println!("{}", list.name);
        }
    }
    Ok(())
}

fn invalid(msg: String) -> BerthError {
    BerthError::InvalidArgument(msg)
}

pub fn create(ctx: &Context, list: &ConfList) -> BerthResult<PathBuf> {
    if find(ctx, &list.name).is_ok() {
        return Err(invalid(format!("network {} already exists", list.name)));
    }
    let path = ctx.config_dir.join(format!("{}.conflist", list.name));
    let bytes = serde_json::to_vec_pretty(list).expect("conflists serialize");
    write_durably(&path, &bytes)?;
    Ok(path)
}

/// Every readable conflist in the config directory, sorted by file name.
pub fn all(ctx: &Context) -> BerthResult<Vec<(PathBuf, ConfList)>> {
    let entries = match std::fs::read_dir(&ctx.config_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(BerthError::io(format!("read {}", ctx.config_dir.display()))(e)),
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conflist")).collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).map_err(BerthError::io(format!("read {}", path.display())))?;
        match ConfList::from_slice(&bytes) {
            Ok(list) => out.push((path, list)),
            Err(e) => eprintln!("berth: skipping {}: {e}", path.display()),
        }
    }
    Ok(out)
}

pub fn find(ctx: &Context, name: &str) -> BerthResult<(PathBuf, ConfList)> {
    all(ctx)?
        .into_iter()
        .find(|(_, l)| l.name == name)
        .ok_or_else(|| BerthError::NotFound(format!("no network {name:?} in {}", ctx.config_dir.display())))
}
