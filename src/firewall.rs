//! `berth firewall restore`: berth's firewall state for every live attachment, put back after
//! `nft flush ruleset`, a firewalld reload or a restart of the firewall service (the reference
//! plugins and netavark have lost rules this way in the field). Each attachment's entries are
//! added again as ADD made them, from its cached configuration, result and capability
//! arguments; entries still there stay, so running it twice changes nothing.

use crate::error::BerthResult;
use crate::Context;
use berth_cni::runtime::{plugin_config, CachedAttachment};
use berth_cni::skel::{Command, Invocation};
use berth_cni::spec::SUPPORTED;
use serde_json::Value;

pub fn restore(ctx: &Context) -> BerthResult<()> {
    let mut restored = 0;
    for cached in ctx.runtime().cached_attachments()?.iter().filter(|c| crate::ps::alive(c)) {
        restored += restore_one(ctx, cached)?;
    }
    println!("firewall entries of {restored} attachments restored");
    Ok(())
}

/// berth-bridge's entries of one attachment; how many plugins of its chain had some.
fn restore_one(ctx: &Context, cached: &CachedAttachment) -> BerthResult<usize> {
    let Some(list) = &cached.conflist else { return Ok(0) };
    let version = list.effective_version(SUPPORTED);
    let att = &cached.attachment;
    let mut restored = 0;
    for plugin in list.plugins.iter().filter(|p| p.get("type").and_then(Value::as_str) == Some("berth-bridge")) {
        let conf = plugin_config(list, &version, plugin, &att.capability_args, Some(&cached.result))?;
        let cni_path = std::env::join_paths(&ctx.cni_path).unwrap_or_default().to_string_lossy().into_owned();
        let env = [
            ("CNI_CONTAINERID", att.container_id.clone()),
            ("CNI_NETNS", att.netns.display().to_string()),
            ("CNI_IFNAME", att.ifname.clone()),
            ("CNI_PATH", cni_path),
        ];
        let inv = Invocation {
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            stdin: serde_json::to_vec(&conf).expect("JSON values serialize"),
        };
        let req = berth_cni::skel::request(&berth_bridge::BridgePlugin, Command::Check, &inv)?;
        berth_bridge::restore_firewall(&req)?;
        restored += 1;
    }
    Ok(restored)
}
