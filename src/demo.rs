//! `berth demo`: berth's main job, end to end, on a throwaway host namespace so the machine's
//! own network is never touched: a network, two sandboxes attached to it, pings across, and
//! everything removed again.

use crate::netconf::{Driver, NetworkSpec};
use crate::Context;
use berth_netlink::Netlink;
use berth_netns::{NetNs, NETNS_RUN_DIR};
use berth_cni::runtime::{Attachment, Runtime};
use berth_cni::spec::ConfList;
use crate::error::{BerthError, BerthResult};
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;

/// Removes the demo's namespaces however the demo ends.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            if let Err(e) = NetNs::delete_named(name) {
                eprintln!("berth demo: cannot remove namespace {name}: {e}");
            }
        }
    }
}

fn step(what: impl std::fmt::Display) {
    println!("==> {what}");
}

pub fn run(ctx: &Context) -> BerthResult<()> {
    let scratch = tempfile_dir()?;
    let tag = std::process::id();
    let host_name = format!("berth-demo{tag}-host");
    let mut namespaces = Namespaces(vec![]);

    step(format!("create a throwaway host namespace {host_name} (the machine's own network stays untouched)"));
    let host = berth_netlink::create_named_netns(&host_name)?;
    namespaces.0.push(host_name.clone());

    let spec = NetworkSpec {
        name: "demo".into(),
        subnets: vec!["10.77.0.0/24".parse().expect("literal")],
        options: [("bridge".to_string(), "berth-demo0".to_string())].into(),
        ..Default::default()
    };
    let mut list = spec.conflist(Driver::Bridge)?;
    list.plugins[0]["ipam"]["dataDir"] = scratch.path().join("ipam").display().to_string().into();
    step("network \"demo\": berth-bridge on berth-demo0, 10.77.0.0/24, gateway 10.77.0.1 (berth net create demo --subnet 10.77.0.0/24)");

    let runtime = Runtime { cni_path: ctx.cni_path.clone(), cache_dir: scratch.path().join("cache"), host: Some(host) };
    let (attached, addresses) = attach_sandboxes(&runtime, &list, tag, &mut namespaces)?;

    let a = &attached[0].netns;
    let gateway: IpAddr = "10.77.0.1".parse().expect("literal");
    let mut failures = 0;
    for (from, to, label) in [(a, addresses[1], "sandbox a -> sandbox b"), (a, gateway, "sandbox a -> gateway"), (&attached[1].netns, addresses[0], "sandbox b -> sandbox a")] {
        let ok = ping(from, to)?;
        step(format!("ping {label} ({to}): {}", if ok { "answered" } else { "NO ANSWER" }));
        failures += usize::from(!ok);
    }

    for att in &attached {
        step(format!("detach {} (berth detach demo {})", att.container_id, att.container_id));
        runtime.del(&list, att)?;
    }
    let ns = runtime.host.as_ref().expect("host namespace");
    let left: Vec<String> = Netlink::open_in(ns)?.links()?.into_iter().filter(|l| l.kind.as_deref() == Some("veth")).map(|l| l.name).collect();
    step(format!("veth pairs left on the host after detach: {}", if left.is_empty() { "none".to_string() } else { left.join(", ") }));
    drop(namespaces);
    step("removed the sandboxes and the host namespace");
    if failures > 0 || !left.is_empty() {
        return Err(BerthError::Demo(format!("demo failed: {failures} pings unanswered, {} veths left", left.len())));
    }
    volumes(&scratch.path().join("volumes")).map_err(|e| BerthError::Demo(format!("volume demo: {e}")))?;
    println!("demo passed");
    Ok(())
}

/// Two sandboxes (named namespaces) attached to `list`: their attachments and addresses.
fn attach_sandboxes(runtime: &Runtime, list: &ConfList, tag: u32, namespaces: &mut Namespaces) -> BerthResult<(Vec<Attachment>, Vec<IpAddr>)> {
    let mut attached = Vec::new();
    let mut addresses = Vec::new();
    for sandbox in ["a", "b"] {
        let name = format!("berth-demo{tag}-{sandbox}");
        berth_netlink::create_named_netns(&name)?;
        namespaces.0.push(name.clone());
        let att = Attachment {
            container_id: name.clone(),
            ifname: "eth0".into(),
            netns: Path::new(NETNS_RUN_DIR).join(&name),
            ..Default::default()
        };
        step(format!("attach sandbox {name} (berth attach demo {name})"));
        let result = runtime.add(list, &att)?;
        let ip = result.ips.first().ok_or_else(|| BerthError::InvalidArgument("the demo network gave no address".into()))?;
        println!("    eth0 = {} via {}", ip.address, ip.gateway.map(|g| g.to_string()).unwrap_or_default());
        addresses.push(ip.address.addr());
        attached.push(att);
    }
    Ok((attached, addresses))
}

/// Volumes: a named directory shared by two holders, and a 16 MiB loopback ext4 image that
/// refuses a write past its size; both removed at the end.
fn volumes(state: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use berth_volumes::driver::DriverConfig;
    use berth_volumes::spec::{MountId, VolumeName};
    use berth_volumes::VolumeStore;
    use std::collections::BTreeMap;
    use std::io::Write;

    let store = VolumeStore::open(state)?;
    let named = VolumeName::parse("demo-data")?;
    let disk = VolumeName::parse("demo-disk")?;
    let (a, b) = (MountId::parse("sandbox-a")?, MountId::parse("sandbox-b")?);
    step("volume demo-data (named) and demo-disk (loop, 16M) (berth volume create demo-disk -o type=loop -o size=16M)");
    store.create(&named, DriverConfig::from_options(&named, None, &BTreeMap::new())?)?;
    let loop_opts = BTreeMap::from([("type".to_string(), "loop".to_string()), ("size".to_string(), "16M".to_string())]);
    store.create(&disk, DriverConfig::from_options(&disk, None, &loop_opts)?)?;

    let shared_a = store.mount(&named, &a)?;
    let shared_b = store.mount(&named, &b)?;
    std::fs::write(shared_a.join("hello.txt"), "written by sandbox a\n")?;
    let seen = std::fs::read_to_string(shared_b.join("hello.txt"))?;
    step(format!("sandbox b reads what sandbox a wrote into demo-data: {:?}", seen.trim()));

    let disk_path = store.mount(&disk, &a)?;
    step(format!("demo-disk mounted at {} (an ext4 image on a loop device)", disk_path.display()));
    let mut file = std::fs::File::create(disk_path.join("big"))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    let refused = loop {
        match file.write_all(&chunk).and_then(|()| file.sync_data()) {
            Ok(()) if written < 64 => written += 1,
            Ok(()) => break None,
            Err(e) => break Some(e),
        }
    };
    drop(file);
    match &refused {
        Some(e) => step(format!("writing past 16M into demo-disk stops after {written} MiB: {e}")),
        None => step("writing 64M into a 16M volume was NOT refused"),
    }

    for (volume, holder) in [(&named, &a), (&named, &b), (&disk, &a)] {
        store.unmount(volume, holder)?;
    }
    store.remove(&named)?;
    store.remove(&disk)?;
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    let still_mounted = mounts.lines().any(|l| l.contains(&state.display().to_string()));
    step(format!("volumes removed; mounts left behind: {}", if still_mounted { "SOME" } else { "none" }));
    if refused.is_none() || still_mounted {
        return Err("the volume demo did not behave".into());
    }
    Ok(())
}

fn ping(from: &Path, to: IpAddr) -> BerthResult<bool> {
    let ns = NetNs::open(from)?;
    let mut cmd = std::process::Command::new("ping");
    cmd.args(["-c", "1", "-W", "2", "-q", &to.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
    ns.prepare_command(&mut cmd)?;
    let status = cmd.status().map_err(BerthError::io("run ping (apt-get install iputils-ping)"))?;
    Ok(status.success())
}

fn tempfile_dir() -> BerthResult<tempfile::TempDir> {
    tempfile::Builder::new().prefix("berth-demo-").tempdir().map_err(BerthError::io("create a scratch directory"))
}
