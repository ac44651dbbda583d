//! `berth net`: networks are conflists in the config directory, one file per network.

use crate::Context;
use berth_cni::spec::ConfList;
use crate::error::{BerthError, BerthResult};
use berth_util::fs::write_durably;
use berth_util::names::{check_identifier, check_interface_name};
use clap::Subcommand;
use ipnet::IpNet;
use serde_json::json;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum NetCommand {
    /// Write a berth-bridge + berth-host-local conflist for a new network.
    Create {
        name: String,
        #[arg(long)]
        subnet: IpNet,
        /// Default: the first address of the subnet.
        #[arg(long)]
        gateway: Option<IpAddr>,
        /// Default: "berth-" followed by the network name, cut to 15 characters.
        #[arg(long)]
        bridge: Option<String>,
        /// Chain berth-bandwidth, so `berth attach --ingress-rate/--egress-rate` can shape.
        #[arg(long)]
        bandwidth: bool,
    },
    /// List networks.
    Ls,
    /// Print a network's conflist.
    Inspect { name: String },
    /// Remove a network's conflist.
    Rm { name: String },
}

pub fn run(ctx: &Context, cmd: NetCommand) -> BerthResult<()> {
    match cmd {
        NetCommand::Create { name, subnet, gateway, bridge, bandwidth } => {
            let mut list = bridge_network(&name, subnet, gateway, bridge.as_deref())?;
            if bandwidth {
                list.plugins.push(crate::rate::bandwidth_plugin());
            }
            let path = create(ctx, &list)?;
            println!("{}", path.display());
            Ok(())
        }
        NetCommand::Ls => {
            println!("{:<20} {:<16} FILE", "NAME", "PLUGINS");
            for (path, list) in all(ctx)? {
                let types: Vec<&str> = list.plugins.iter().filter_map(|p| p.get("type")?.as_str()).collect();
                println!("{:<20} {:<16} {}", list.name, types.join(","), path.display());
            }
            Ok(())
        }
        NetCommand::Inspect { name } => {
            let (path, _) = find(ctx, &name)?;
            let raw = std::fs::read_to_string(&path).map_err(BerthError::io(format!("read {}", path.display())))?;
            println!("{}", raw.trim_end());
            Ok(())
        }
        NetCommand::Rm { name } => {
            let (path, _) = find(ctx, &name)?;
            std::fs::remove_file(&path).map_err(BerthError::io(format!("remove {}", path.display())))
        }
    }
}

/// The conflist `berth net create` writes: a gateway bridge with host-local addresses.
pub fn bridge_network(name: &str, subnet: IpNet, gateway: Option<IpAddr>, bridge: Option<&str>) -> BerthResult<ConfList> {
    validate_network_name(name)?;
    let subnet = subnet.trunc();
    let gateway = match gateway {
        Some(gw) if !subnet.contains(&gw) => return Err(invalid(format!("--gateway {gw} is outside {subnet}"))),
        Some(gw) => gw,
        None => subnet.hosts().next().ok_or_else(|| invalid(format!("--subnet {subnet} has no host addresses")))?,
    };
    let bridge = bridge.map(str::to_string).unwrap_or_else(|| format!("berth-{name}").chars().take(15).collect());
    check_interface_name(&bridge).map_err(|e| invalid(format!("--bridge {bridge:?}: {e}")))?;
    let default_route = if subnet.addr().is_ipv4() { "0.0.0.0/0" } else { "::/0" };
    let raw = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "plugins": [{
            "type": "berth-bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipam": {
                "type": "berth-host-local",
                "ranges": [[{"subnet": subnet.to_string(), "gateway": gateway.to_string()}]],
                "routes": [{"dst": default_route}],
            },
        }],
    });
    Ok(serde_json::from_value(raw).expect("well-formed conflist"))
}

fn validate_network_name(name: &str) -> BerthResult<()> {
    check_identifier(name).map_err(|e| invalid(format!("invalid network name {name:?}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_gateway_is_first_host() {
        let list = bridge_network("web", "10.88.0.7/24".parse().unwrap(), None, None).unwrap();
        let plugin = &list.plugins[0];
        assert_eq!(plugin["bridge"], "berth-web");
        assert_eq!(plugin["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/24");
        assert_eq!(plugin["ipam"]["ranges"][0][0]["gateway"], "10.88.0.1");
    }

    #[test]
    fn bad_names_and_gateways_are_refused() {
        assert!(bridge_network("../x", "10.0.0.0/24".parse().unwrap(), None, None).is_err());
        assert!(bridge_network("n", "10.0.0.0/24".parse().unwrap(), Some("10.9.9.9".parse().unwrap()), None).is_err());
        assert!(bridge_network("n", "10.0.0.0/24".parse().unwrap(), None, Some("a-bridge-name-too-long")).is_err());
    }
}
