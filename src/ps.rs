//! `berth ps` lists attachments (what `attach` and `pipework` made and have not undone) and
//! `berth gc` undoes those whose container is gone, as a runtime's garbage collection does.

use crate::error::BerthResult;
use crate::{net, Context};
use berth_cni::runtime::CachedAttachment;
use berth_cni::spec::RunResult;
use berth_netns::NetNs;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Default, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Args)]
pub struct PsArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// One attachment as `ps` shows it.
fn describe(cached: &CachedAttachment) -> Value {
    let att = &cached.attachment;
    let result = RunResult::from_value(&cached.result).unwrap_or_default();
    let addresses: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
    let ports: Vec<String> = att
        .capability_args
        .get("portMappings")
        .and_then(Value::as_array)
        .map(|maps| maps.iter().map(port_mapping).collect())
        .unwrap_or_default();
    json!({
        "network": cached.network,
        "target": att.netns.display().to_string(),
        "containerId": att.container_id,
        "ifname": att.ifname,
        "addresses": addresses,
        "ports": ports,
        "alive": alive(cached),
    })
}

/// `[HOSTIP:]HOSTPORT->PORT/PROTO`, as `docker ps` writes a published port.
fn port_mapping(m: &Value) -> String {
    let host_ip = m["hostIP"].as_str().filter(|ip| !ip.is_empty()).map(|ip| format!("{ip}:")).unwrap_or_default();
    format!("{host_ip}{}->{}/{}", m["hostPort"], m["containerPort"], m["protocol"].as_str().unwrap_or("tcp"))
}

/// Whether the attachment's namespace still exists.
pub fn alive(cached: &CachedAttachment) -> bool {
    let netns = &cached.attachment.netns;
    !netns.as_os_str().is_empty() && NetNs::open(netns).is_ok()
}

pub fn ps(ctx: &Context, args: &PsArgs) -> BerthResult<()> {
    let mut all = ctx.runtime().cached_attachments()?;
    all.sort_by(|a, b| (&a.network, &a.attachment.container_id).cmp(&(&b.network, &b.attachment.container_id)));
    let rows: Vec<Value> = all.iter().map(describe).collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows).expect("JSON values serialize")),
        Format::Table => print_table(&rows),
    }
    Ok(())
}

fn print_table(rows: &[Value]) {
    println!("{:<20} {:<14} {:<8} {:<20} {:<24} TARGET", "NETWORK", "CONTAINER ID", "IFACE", "ADDRESSES", "PORTS");
    for row in rows {
        let list = |key: &str| row[key].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or_default();
        let id = row["containerId"].as_str().unwrap_or_default();
        let gone = if row["alive"] == true { "" } else { " (gone)" };
        println!(
            "{:<20} {:<14} {:<8} {:<20} {:<24} {}{gone}",
            row["network"].as_str().unwrap_or_default(),
            id.get(..12).unwrap_or(id),
            row["ifname"].as_str().unwrap_or_default(),
            list("addresses"),
            list("ports"),
            row["target"].as_str().unwrap_or_default(),
        );
    }
}

/// DEL for every cached attachment whose namespace is gone, then GC through every network's
/// chain keeping the attachments that are alive (plugins drop what they hold for others).
pub fn gc(ctx: &Context) -> BerthResult<()> {
    let runtime = ctx.runtime();
    let mut live: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut removed = 0;
    for cached in runtime.cached_attachments()? {
        if alive(&cached) {
            live.entry(cached.network.clone()).or_default().push((cached.attachment.container_id.clone(), cached.attachment.ifname.clone()));
        } else if let Some(list) = &cached.conflist {
            runtime.del(list, &cached.attachment)?;
            removed += 1;
        }
    }
    for (_, list) in net::all(ctx)? {
        runtime.gc(&list, live.get(&list.name).map(Vec::as_slice).unwrap_or_default())?;
    }
    println!("{removed} attachments of gone containers removed");
    Ok(())
}
