//! The `xfsquota` and `thin` drivers on a real kernel: in the kernel lab (this machine's
//! kernel has neither XFS quota nor device-mapper), one VM boot per driver. Each test
//! boots the lab and runs itself inside (`BERTH_IN_LAB=1`), through the store as the
//! endpoint and the CLI use it, through the endpoint over its socket, and through a
//! `berth-volume serve` process that is stopped and started again.
//!
//! Everything is made under temp dirs whose guards unmount, remove device-mapper devices
//! (thin devices, then pools, then their linear devices), detach loop devices and delete
//! files, even when an assertion fails.

mod common;

use berth_conformance::lab;
use berth_quota::testing::{make_image, modprobe, mount_image, without_sys_resource, Fs};
use berth_quota::Control;
use berth_volumes::driver::thin;
use berth_volumes::driver::thin::pool::{Pool, PoolUsage};
use berth_volumes::driver::DriverConfig;
use berth_volumes::spec::{Bytes, MountId, VolumeName};
use berth_volumes::store::UnmountOutcome;
use berth_volumes::{Volume, VolumeError, VolumeStore};
use common::dm::{assert_pool_consistent, dm_devices, DmCleanup};
use common::{lab_report, loop_devices_under, mounts_under, wait_until, ServeProcess, TempDir, TestServer};
use devicemapper::{DevId, DmFlags, DmName, DmOptions, DM};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn name(text: &str) -> VolumeName {
    VolumeName::parse(text).expect("valid name")
}

fn id(text: &str) -> MountId {
    MountId::parse(text).expect("valid id")
}

fn config(volume: &str, pairs: &[(&str, &str)]) -> DriverConfig {
    let options: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    DriverConfig::from_options(&name(volume), None, &options).unwrap_or_else(|e| panic!("{volume}: {e}"))
}

/// Fills `path` as a container writes: without CAP_SYS_RESOURCE (ext4 lets holders of it
/// past quota limits).
fn fill(path: &Path, limit: u64) -> (u64, Option<std::io::Error>) {
    let path = path.to_path_buf();
    without_sys_resource(move || berth_quota::testing::fill(&path, Bytes(limit)))
}

// ---------------------------------------------------------------------------------------
// xfsquota

/// lab_: one boot; the xfsquota driver on XFS and on ext4 (-O quota,project), through the
/// store and through the endpoint; and its refusal of a base without project quotas.
#[test]
fn lab_xfsquota_volumes_enforce_their_size_and_free_their_project() {
    if !lab::in_lab() {
        return lab_report("lab_xfsquota_volumes_enforce_their_size_and_free_their_project");
    }
    modprobe(&["loop", "xfs", "quota_v2"]);
    for fs in [Fs::Xfs, Fs::Ext4] {
        let dir = TempDir::new(&format!("xq-{}", fs.name()));
        make_image(&dir.join("fs.img"), fs, fs.min_size());
        mount_image(&dir.join("fs.img"), &dir.join("fs"), fs, "prjquota");
        let base = dir.join("fs/vols");
        std::fs::create_dir(&base).unwrap();
        xfsquota_through_the_store(fs, &dir, &base);
        xfsquota_through_the_endpoint(fs, &base);
        xfsquota_create_cut_short_is_undone_at_the_next_start(fs, &dir, &base);
        println!("{}: xfsquota ok", fs.name());
    }
    xfsquota_refuses_a_base_without_project_quotas();
}

/// XFS refuses a write past a project quota with ENOSPC, ext4 with EDQUOT.
fn over_quota(fs: Fs) -> i32 {
    match fs {
        Fs::Xfs => libc::ENOSPC,
        Fs::Ext4 => libc::EDQUOT,
    }
}

fn xfsquota_through_the_store(fs: Fs, dir: &TempDir, base: &Path) {
    let label = fs.name();
    let store = VolumeStore::open(&dir.join("state")).unwrap();
    let base_text = base.to_str().unwrap();
    let quota = |size: &str| config("q", &[("type", "xfsquota"), ("base", base_text), ("size", size), ("inodes", "1000")]);
    let v1 = name("v1");
    store.create(&v1, quota("8M")).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(base.join("v1").is_dir(), "{label}: the data directory is under the base");
    let control = Control::for_path(base).unwrap();
    let project = control.project_of(&base.join("v1")).unwrap();
    assert!(project.0 >= berth_quota::registry::FIRST_PROJECT_ID, "{label}: {project}");

    let data = store.mount(&v1, &id("c1")).expect("mount");
    std::fs::write(data.join("keep"), "kept").unwrap();
    let (written, refused) = fill(&data.join("big"), 16 * MIB);
    let refused = refused.unwrap_or_else(|| panic!("{label}: 16M written into an 8M volume"));
    assert_eq!(refused.raw_os_error(), Some(over_quota(fs)), "{label}: {refused}");
    assert!((6 * MIB..=8 * MIB).contains(&written), "{label}: {written} bytes into an 8M volume");

    let status = store.inspect(&v1).unwrap();
    assert_eq!(status.usage.size_limit, Some(Bytes(8 * MIB)), "{label}: {status:?}");
    assert!(status.usage.used.is_some_and(|u| u.0 >= 7 * MIB), "{label}: {:?}", status.usage);
    assert!(status.usage.available.is_some_and(|a| a.0 < MIB), "{label}: {:?}", status.usage);
    assert_eq!((status.usage.project, status.usage.inode_limit), (Some(project.0), Some(1000)));
    assert!(status.usage.inodes.is_some_and(|n| n >= 3), "{label}: the directory and two files: {:?}", status.usage);

    let v2 = name("v2");
    store.create(&v2, quota("4M")).unwrap();
    let other = control.project_of(&base.join("v2")).unwrap();
    assert_ne!(other, project, "{label}: each volume has its own project");
    // A repeated Create with the same settings is answered with the volume as it is.
    store.create(&v2, quota("4M")).unwrap();
    let refused = store.create(&v2, quota("5M")).unwrap_err().to_string();
    assert!(refused.contains("already exists"), "{refused}");

    assert_eq!(store.unmount(&v1, &id("c1")).unwrap(), UnmountOutcome::Released);
    let again = store.mount(&v1, &id("c2")).unwrap();
    assert_eq!(std::fs::read_to_string(again.join("keep")).unwrap(), "kept", "{label}: data survives unmounting");
    store.unmount(&v1, &id("c2")).unwrap();

    for volume in [&v1, &v2] {
        store.remove(volume).unwrap_or_else(|e| panic!("{label}: remove {volume}: {e}"));
    }
    assert!(!base.join("v1").exists() && !base.join("v2").exists(), "{label}: data directories deleted");
    let left = control.list().unwrap();
    assert!(
        !left.iter().any(|q| (q.project == project || q.project == other) && (q.size_limit.is_some() || q.path.is_some())),
        "{label}: removed volumes' projects are freed: {left:?}"
    );
    assert!(store.list().unwrap().is_empty());
    assert!(mounts_under(&dir.join("state")).is_empty());
}

fn xfsquota_through_the_endpoint(fs: Fs, base: &Path) {
    let label = fs.name();
    let server = TestServer::start(&format!("xq-ep-{label}"));
    let mut client = server.connect();
    let create = json!({"Name": "web", "Opts": {"type": "xfsquota", "base": base, "size": "4M"}});
    let created = client.post("/VolumeDriver.Create", &create.to_string());
    assert_eq!((created.status, created.err()), (200, ""), "{label}");
    let mounted = client.post("/VolumeDriver.Mount", r#"{"Name":"web","ID":"c1"}"#);
    let mountpoint = PathBuf::from(mounted.body["Mountpoint"].as_str().expect("a mount point"));
    let (_, refused) = fill(&mountpoint.join("f"), 8 * MIB);
    assert_eq!(refused.and_then(|e| e.raw_os_error()), Some(over_quota(fs)), "{label}: through the endpoint's mount");
    let got = client.post("/VolumeDriver.Get", r#"{"Name":"web"}"#);
    let status = &got.body["Volume"]["Status"];
    assert_eq!(status["Driver"], "xfsquota", "{got:?}");
    assert_eq!(status["Usage"]["SizeLimit"], 4 * MIB, "{got:?}");
    assert!(status["Usage"]["Used"].as_u64().is_some_and(|u| u >= 3 * MIB), "{got:?}");
    client.post("/VolumeDriver.Unmount", r#"{"Name":"web","ID":"c1"}"#);
    let removed = client.post("/VolumeDriver.Remove", r#"{"Name":"web"}"#);
    assert_eq!((removed.status, removed.err()), (200, ""), "{label}");
    assert!(!base.join("web").exists());
}

/// The state a server killed in the middle of creating an xfsquota volume leaves (made
/// here by hand): a staging directory with the volume's record, and the volume's directory
/// in the base with its project. The next start deletes the directory, which nobody can
/// have written to, and frees its project; a directory holding anything stays as it is.
fn xfsquota_create_cut_short_is_undone_at_the_next_start(fs: Fs, dir: &TempDir, base: &Path) {
    let label = fs.name();
    let state = dir.join("cut-state");
    let store = VolumeStore::open(&state).unwrap();
    let control = Control::for_path(base).unwrap();
    let limits = berth_quota::Limits { size: Some(Bytes(4 * MIB)), inodes: None };
    for (volume, content) in [("cut", None), ("kept", Some("someone's data"))] {
        let staging = state.join(format!("volumes/.creating.{volume}"));
        std::fs::create_dir_all(staging.join("_data")).unwrap();
        let quota = config(volume, &[("type", "xfsquota"), ("base", base.to_str().unwrap()), ("size", "4M")]);
        let record = Volume { name: name(volume), config: quota, created_at: String::new(), mounts: Default::default() };
        std::fs::write(staging.join("volume.json"), serde_json::to_vec(&record).unwrap()).unwrap();
        std::fs::create_dir(base.join(volume)).unwrap();
        if let Some(content) = content {
            std::fs::write(base.join(volume).join("file"), content).unwrap();
        }
        control.set(&base.join(volume), limits).unwrap();
    }
    let cut_project = control.project_of(&base.join("cut")).unwrap();
    let report = store.reconcile().unwrap();
    assert!(report.failures.is_empty(), "{label}: {:?}", report.failures);
    assert!(!base.join("cut").exists(), "{label}: the empty directory of the cut-short create is left");
    assert_eq!(control.recorded(&base.join("cut")).unwrap(), None, "{label}: its project is still recorded");
    let limited = control.list().unwrap();
    assert!(!limited.iter().any(|q| q.project == cut_project && q.size_limit.is_some()), "{label}: {limited:?}");
    assert_eq!(std::fs::read_to_string(base.join("kept/file")).unwrap(), "someone's data", "{label}: data deleted");
    assert!(store.list().unwrap().is_empty() && !state.join("volumes/.creating.cut").exists());
    control.clear(&base.join("kept")).unwrap();
    std::fs::remove_dir_all(base.join("kept")).unwrap();
}

fn xfsquota_refuses_a_base_without_project_quotas() {
    let dir = TempDir::new("xq-plain");
    let plain = dir.join("plain");
    make_image(&dir.join("fs.img"), Fs::Xfs, Fs::Xfs.min_size());
    mount_image(&dir.join("fs.img"), &plain, Fs::Xfs, "");
    let store = VolumeStore::open(&dir.join("state")).unwrap();
    let quota = config("v", &[("type", "xfsquota"), ("base", plain.to_str().unwrap()), ("size", "8M")]);
    let err = store.create(&name("v"), quota).unwrap_err();
    assert!(matches!(err, VolumeError::InvalidOption { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("base") && message.contains("mount it with -o prjquota"), "{message}");
    assert!(std::fs::read_dir(dir.join("state/volumes")).unwrap().next().is_none(), "nothing is left of the volume");
    assert!(!plain.join("v").exists());
    println!("a base without prjquota: {message}");
}

// ---------------------------------------------------------------------------------------
// thin

fn thin_device(store: &VolumeStore, volume: &VolumeName) -> thin::ThinDevice {
    match store.get(volume).unwrap().config {
        DriverConfig::Thin(thin) => thin.device.expect("a created thin volume records its device"),
        other => panic!("{volume} is not thin: {other:?}"),
    }
}

fn pool_usage(state: &Path, pool: &str) -> PoolUsage {
    thin::pool_usage(state, pool).unwrap_or_else(|e| panic!("usage of pool {pool}: {e}"))
}

/// lab_: one boot; thin volumes through the store (create, write, snapshot, remove, xfs,
/// a restart and a simulated reboot), a pool filled up, the endpoint, and a restarted
/// `berth-volume serve`.
#[test]
fn lab_thin_volumes_snapshot_fill_and_survive_restarts() {
    if !lab::in_lab() {
        return lab_report("lab_thin_volumes_snapshot_fill_and_survive_restarts");
    }
    modprobe(&["loop", "dm_thin_pool", "xfs"]);
    let started = Instant::now();
    thin_through_the_store();
    println!("store: ok after {:.1}s", started.elapsed().as_secs_f64());
    thin_pool_exhaustion();
    println!("exhaustion: ok after {:.1}s", started.elapsed().as_secs_f64());
    thin_on_named_devices();
    println!("named devices: ok after {:.1}s", started.elapsed().as_secs_f64());
    thin_through_the_endpoint();
    println!("endpoint: ok after {:.1}s", started.elapsed().as_secs_f64());
    thin_across_server_restarts();
    println!("restarts: ok after {:.1}s", started.elapsed().as_secs_f64());
    thin_leftovers_of_a_killed_server_are_undone();
    println!("leftovers of a killed server: ok after {:.1}s", started.elapsed().as_secs_f64());
}

/// A loopback pool small enough for the VM's memory (its files are sparse, in /tmp).
const POOL: &[(&str, &str)] = &[("loopdatasize", "256M"), ("loopmetadatasize", "16M")];

fn thin_config(pairs: &[(&str, &str)]) -> DriverConfig {
    let all: Vec<(&str, &str)> = [("type", "thin")].iter().chain(POOL).chain(pairs).copied().collect();
    config("t", &all)
}

fn thin_through_the_store() {
    let _dm = DmCleanup;
    let dir = TempDir::new("thin-store");
    let state = dir.join("state");
    let store = VolumeStore::open(&state).unwrap();
    let v1 = name("v1");
    store.create(&v1, thin_config(&[("size", "64M")])).unwrap_or_else(|e| panic!("create thin: {e}"));
    let device = thin_device(&store, &v1);
    assert_eq!((device.size, device.fs), (Bytes(64 * MIB), thin::ThinFs::Ext4));
    assert!(state.join("thin/berth/pool.json").is_file() && state.join("thin/berth/data.img").is_file());
    let prefix = dm_devices("berth-").into_iter().find(|n| n.ends_with("-pool")).expect("the pool is active");
    let prefix = prefix.trim_end_matches("pool").to_string();
    assert!(!dm_devices(&prefix).contains(&format!("{prefix}{}", device.thin_id)), "inactive until mounted");

    let data = store.mount(&v1, &id("c1")).expect("mount thin");
    assert!(dm_devices(&prefix).contains(&format!("{prefix}{}", device.thin_id)), "active while mounted");
    std::fs::write(data.join("note"), "generation 1").unwrap();
    let before = pool_usage(&state, "berth").data_used;
    let (written, err) = fill(&data.join("blob"), 8 * MIB);
    assert!(err.is_none() && written == 8 * MIB, "{err:?}");
    let after = pool_usage(&state, "berth");
    assert!(after.data_used.0 >= before.0 + 8 * MIB, "the pool gives blocks as they are written: {before} -> {after:?}");

    // A snapshot of the mounted origin keeps its data when the origin changes.
    let snap = name("v1snap");
    store.create(&snap, thin_config(&[("from", "v1")])).unwrap_or_else(|e| panic!("snapshot: {e}"));
    let snap_device = thin_device(&store, &snap);
    assert_ne!(snap_device.thin_id, device.thin_id);
    assert_eq!((snap_device.size, snap_device.fs), (device.size, device.fs));
    std::fs::write(data.join("note"), "generation 2").unwrap();
    let snap_data = store.mount(&snap, &id("c2")).expect("mount snapshot");
    assert_eq!(std::fs::read_to_string(snap_data.join("note")).unwrap(), "generation 1", "the snapshot keeps the old data");
    assert_eq!(std::fs::metadata(snap_data.join("blob")).unwrap().len(), 8 * MIB);
    std::fs::write(snap_data.join("only-in-snapshot"), "x").unwrap();
    assert!(!data.join("only-in-snapshot").exists(), "writes to the snapshot stay there");
    assert_eq!(std::fs::read_to_string(data.join("note")).unwrap(), "generation 2");

    let status = store.inspect(&v1).unwrap();
    assert_eq!(status.usage.size_limit, Some(Bytes(64 * MIB)));
    let pool = status.usage.pool.clone().expect("pool usage while the pool is active");
    assert!(pool.data_used.0 >= 8 * MIB && pool.data_size.0 == 256 * MIB && pool.mode == "rw", "{pool:?}");
    assert!(status.usage.used.is_some_and(|u| u.0 >= 8 * MIB), "{:?}", status.usage);

    // Removing the snapshot deletes its thin device; the origin is untouched.
    store.unmount(&snap, &id("c2")).unwrap();
    store.remove(&snap).unwrap_or_else(|e| panic!("remove snapshot: {e}"));
    assert!(!dm_devices(&prefix).contains(&format!("{prefix}{}", snap_device.thin_id)));
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(state.join("thin/berth/pool.json")).unwrap()).unwrap();
    assert!(record["thins"].get(snap_device.thin_id.to_string()).is_none(), "the pool forgot the ID: {record}");
    let refused = store.create(&name("bad"), thin_config(&[("from", "v1snap")])).unwrap_err().to_string();
    assert!(refused.contains("from") && refused.contains("no such volume: v1snap"), "{refused}");

    // XFS volumes, and a snapshot of an unmounted one mounted next to it (nouuid).
    let vx = name("vx");
    store.create(&vx, thin_config(&[("size", "512M"), ("fs", "xfs")])).unwrap_or_else(|e| panic!("xfs thin: {e}"));
    let xdata = store.mount(&vx, &id("c3")).unwrap();
    std::fs::write(xdata.join("x"), "xfs data").unwrap();
    store.unmount(&vx, &id("c3")).unwrap();
    store.create(&name("vxs"), thin_config(&[("from", "vx")])).unwrap();
    let xdata = store.mount(&vx, &id("c3")).unwrap();
    let xsnap = store.mount(&name("vxs"), &id("c4")).unwrap();
    assert_eq!(std::fs::read_to_string(xsnap.join("x")).unwrap(), "xfs data");
    assert_eq!(std::fs::read_to_string(xdata.join("x")).unwrap(), "xfs data");
    store.unmount(&name("vxs"), &id("c4")).unwrap();
    store.unmount(&vx, &id("c3")).unwrap();

    // A restart: the store is opened again over what the kernel still holds.
    drop(store);
    let store = VolumeStore::open(&state).unwrap();
    let report = store.reconcile().unwrap();
    assert!(report.failures.is_empty() && report.remounted.is_empty(), "{report:?}");
    assert_eq!(std::fs::read_to_string(data.join("note")).unwrap(), "generation 2");

    // A reboot: the kernel loses mounts, thin devices, the pool and the loop devices.
    nix::mount::umount2(&data, nix::mount::MntFlags::empty()).expect("unmount behind berth's back");
    thin::deactivate_pool(&state, "berth").expect("deactivate the pool");
    wait_until("loop devices detached", Duration::from_secs(10), || loop_devices_under(&state).is_empty());
    assert!(dm_devices(&prefix).is_empty());
    let store = VolumeStore::open(&state).unwrap();
    let report = store.reconcile().unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.remounted, vec![v1.clone()], "the mounted volume is mounted again");
    assert_eq!(std::fs::read_to_string(data.join("note")).unwrap(), "generation 2", "found again after a reboot");
    let xdata = store.mount(&vx, &id("c5")).unwrap();
    assert_eq!(std::fs::read_to_string(xdata.join("x")).unwrap(), "xfs data");
    store.unmount(&vx, &id("c5")).unwrap();

    store.unmount(&v1, &id("c1")).unwrap();
    let used = pool_usage(&state, "berth").data_used;
    for volume in ["v1", "vx", "vxs"] {
        store.remove(&name(volume)).unwrap_or_else(|e| panic!("remove {volume}: {e}"));
    }
    assert!(pool_usage(&state, "berth").data_used < used, "removing volumes gives their blocks back");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(state.join("thin/berth/pool.json")).unwrap()).unwrap();
    assert_eq!(record["thins"], json!({}), "{record}");
    assert!(mounts_under(&state).is_empty());
    assert_pool_consistent(&state, "berth");
}

fn thin_pool_exhaustion() {
    let _dm = DmCleanup;
    let dir = TempDir::new("thin-full");
    let state = dir.join("state");
    let store = VolumeStore::open(&state).unwrap();
    let small = |pairs: &[(&str, &str)]| {
        let all: Vec<(&str, &str)> = [("type", "thin"), ("pool", "small"), ("loopdatasize", "64M"), ("loopmetadatasize", "8M")]
            .iter()
            .chain(pairs)
            .copied()
            .collect();
        config("t", &all)
    };
    let big = name("big");
    store.create(&big, small(&[("size", "256M")])).unwrap_or_else(|e| panic!("create: {e}"));
    let data = store.mount(&big, &id("c1")).unwrap();
    // More than the pool holds: the writes fail (at once: error_if_no_space) before 64M.
    let (written, err) = fill(&data.join("fill"), 128 * MIB);
    let err = err.expect("writing past the pool's data fails");
    assert!(written < 64 * MIB, "{written} bytes into a 64M pool");
    let usage = pool_usage(&state, "small");
    assert!(usage.is_full(), "{usage:?}");
    println!("a full pool: {written} bytes written, then {err}; {usage:?}");

    // A new volume is refused, saying how full the pool is.
    let refused = store.create(&name("more"), small(&[("size", "32M")])).unwrap_err();
    assert!(matches!(refused, VolumeError::PoolFull { .. }), "{refused}");
    let message = refused.to_string();
    assert!(message.contains("thin pool small is full") && message.contains("of 64M data"), "{message}");
    assert!(store.get(&name("more")).is_err() && !state.join("volumes/.creating.more").exists());

    // Removing the volume that filled it gives the space back: the pool takes volumes again.
    store.unmount(&big, &id("c1")).unwrap();
    store.remove(&big).unwrap_or_else(|e| panic!("remove the volume that filled the pool: {e}"));
    let usage = pool_usage(&state, "small");
    assert!(!usage.is_full() && usage.mode == "rw", "{usage:?}");
    store.create(&name("more"), small(&[("size", "32M")])).unwrap_or_else(|e| panic!("after freeing: {e}"));
    let more = store.mount(&name("more"), &id("c2")).unwrap();
    std::fs::write(more.join("ok"), "ok").unwrap();
    store.unmount(&name("more"), &id("c2")).unwrap();
    store.remove(&name("more")).unwrap();
    assert_pool_consistent(&state, "small");
}

/// A pool on block devices the user names (here loop devices over files, standing for
/// disks): the files are the pool's, nothing is made in the state directory but its record.
fn thin_on_named_devices() {
    let _dm = DmCleanup;
    let dir = TempDir::new("thin-disks");
    let attach = |file: &str, size: u64| {
        let path = dir.join(file);
        std::fs::File::create(&path).and_then(|f| f.set_len(size)).expect("make a disk file");
        let out = Command::new("losetup").args(["-f", "--show"]).arg(&path).output().expect("losetup");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (data_disk, metadata_disk) = (attach("data.disk", 128 * MIB), attach("metadata.disk", 16 * MIB));
    // Whatever was on the metadata device before: the pool starts afresh there.
    std::fs::write(&metadata_disk, vec![0xEEu8; 8192]).expect("scribble on the metadata disk");
    let state = dir.join("state");
    let store = VolumeStore::open(&state).unwrap();
    let disks = |volume: &str, pairs: &[(&str, &str)]| {
        let all: Vec<(&str, &str)> =
            [("type", "thin"), ("pool", "disks"), ("datadev", &data_disk), ("metadatadev", &metadata_disk)]
                .iter()
                .chain(pairs)
                .copied()
                .collect();
        config(volume, &all)
    };
    store.create(&name("d1"), disks("d1", &[("size", "32M")])).unwrap_or_else(|e| panic!("pool on named devices: {e}"));
    assert!(!state.join("thin/disks/data.img").exists(), "no loopback files for a pool on devices");
    let data = store.mount(&name("d1"), &id("c1")).unwrap();
    let (written, err) = fill(&data.join("f"), 4 * MIB);
    assert!(err.is_none() && written == 4 * MIB, "{err:?}");
    assert_eq!(pool_usage(&state, "disks").data_size, Bytes(128 * MIB));
    let refused = store.create(&name("d2"), disks("d2", &[("size", "32M"), ("loopdatasize", "64M")])).unwrap_err().to_string();
    assert!(refused.contains("loopdatasize"), "{refused}");
    store.unmount(&name("d1"), &id("c1")).unwrap();
    store.remove(&name("d1")).unwrap();
    assert_pool_consistent(&state, "disks");
}

fn thin_through_the_endpoint() {
    let _dm = DmCleanup;
    let server = TestServer::start("thin-ep");
    let mut client = server.connect();
    let opts = json!({"type": "thin", "size": "32M", "loopdatasize": "128M", "loopmetadatasize": "8M"});
    let created = client.post("/VolumeDriver.Create", &json!({"Name": "t1", "Opts": opts}).to_string());
    assert_eq!((created.status, created.err()), (200, ""));
    let mounted = client.post("/VolumeDriver.Mount", r#"{"Name":"t1","ID":"c1"}"#);
    let t1 = PathBuf::from(mounted.body["Mountpoint"].as_str().expect("a mount point"));
    std::fs::write(t1.join("page"), "v1").unwrap();
    let snap = client.post("/VolumeDriver.Create", r#"{"Name":"t1s","Opts":{"type":"thin","from":"t1"}}"#);
    assert_eq!((snap.status, snap.err()), (200, ""));
    std::fs::write(t1.join("page"), "v2").unwrap();
    let got = client.post("/VolumeDriver.Get", r#"{"Name":"t1"}"#);
    let status = &got.body["Volume"]["Status"];
    assert_eq!(status["Driver"], "thin", "{got:?}");
    assert_eq!(status["Options"]["size"], "32M");
    assert!(status["Usage"]["Pool"]["DataUsed"].as_u64().is_some_and(|u| u > 0), "{got:?}");
    assert_eq!(status["Usage"]["Pool"]["DataSize"], 128 * MIB);
    let mounted = client.post("/VolumeDriver.Mount", r#"{"Name":"t1s","ID":"c2"}"#);
    let t1s = PathBuf::from(mounted.body["Mountpoint"].as_str().expect("a mount point"));
    assert_eq!(std::fs::read_to_string(t1s.join("page")).unwrap(), "v1");
    let too_small = client.post("/VolumeDriver.Create", r#"{"Name":"x","Opts":{"type":"thin","fs":"xfs","size":"100M"}}"#);
    assert_eq!(too_small.status, 400);
    assert!(too_small.err().contains("smallest is 300M"), "{too_small:?}");
    for (volume, holder) in [("t1", "c1"), ("t1s", "c2")] {
        client.post("/VolumeDriver.Unmount", &format!(r#"{{"Name":"{volume}","ID":"{holder}"}}"#));
        let removed = client.post("/VolumeDriver.Remove", &format!(r#"{{"Name":"{volume}"}}"#));
        assert_eq!((removed.status, removed.err()), (200, ""), "{volume}");
    }
    assert_eq!(client.post("/VolumeDriver.List", "").body["Volumes"], json!([]));
    assert_pool_consistent(&server.state, "berth");
}

/// A `berth-volume serve` process stopped (SIGTERM) and started again on the same state:
/// the volume and its data are found again, and the holder's mount still counts.
fn thin_across_server_restarts() {
    let _dm = DmCleanup;
    let dir = TempDir::new("thin-serve");
    let (socket, state) = (dir.join("plugin.sock"), dir.join("state"));
    let mut first = ServeProcess::start(&socket, &state, &dir.join("serve1.log"));
    let mut client = common::Client::connect(&socket);
    let opts = json!({"type": "thin", "size": "32M", "loopdatasize": "128M", "loopmetadatasize": "8M"});
    let created = client.post("/VolumeDriver.Create", &json!({"Name": "db", "Opts": opts}).to_string());
    assert_eq!((created.status, created.err()), (200, ""), "{}", first.log_text());
    let mounted = client.post("/VolumeDriver.Mount", r#"{"Name":"db","ID":"c1"}"#);
    let mountpoint = PathBuf::from(mounted.body["Mountpoint"].as_str().expect("a mount point"));
    std::fs::write(mountpoint.join("table"), "rows").unwrap();
    drop(client);
    assert!(first.terminate(), "the server stops cleanly: {}", first.log_text());

    let second = ServeProcess::start(&socket, &state, &dir.join("serve2.log"));
    let mut client = common::Client::connect(&socket);
    let listed = client.post("/VolumeDriver.List", "");
    assert_eq!(listed.body["Volumes"][0]["Name"], "db", "{}", second.log_text());
    assert_eq!(std::fs::read_to_string(mountpoint.join("table")).unwrap(), "rows");
    let unmounted = client.post("/VolumeDriver.Unmount", r#"{"Name":"db","ID":"c1"}"#);
    assert_eq!((unmounted.status, unmounted.err()), (200, ""));
    let mounted = client.post("/VolumeDriver.Mount", r#"{"Name":"db","ID":"c2"}"#);
    assert_eq!(mounted.body["Mountpoint"], mountpoint.display().to_string());
    assert_eq!(std::fs::read_to_string(mountpoint.join("table")).unwrap(), "rows", "the data after a restart");
    client.post("/VolumeDriver.Unmount", r#"{"Name":"db","ID":"c2"}"#);
    let removed = client.post("/VolumeDriver.Remove", r#"{"Name":"db"}"#);
    assert_eq!((removed.status, removed.err()), (200, ""), "{}", second.log_text());
    drop(client);
    drop(second);
    assert_pool_consistent(&state, "berth");
}

/// What a server killed in the middle of an operation leaves in a thin pool (made here by
/// hand), and what its next start makes of it: a thin ID handed out to a create that never
/// finished, its device still active as during mkfs, is deleted; a mounted origin left
/// suspended by a snapshot is resumed. Then a Remove stopped right after deleting the thin
/// device, whose ID another volume got since: the leftover volume is never mounted on the
/// other one's data, and removing it again leaves that data alone.
fn thin_leftovers_of_a_killed_server_are_undone() {
    let _dm = DmCleanup;
    let dir = TempDir::new("thin-killed");
    let state = dir.join("state");
    let store = VolumeStore::open(&state).unwrap();
    let a = name("a");
    store.create(&a, thin_config(&[("size", "32M")])).unwrap();
    let data = store.mount(&a, &id("c1")).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(state.join("thin/berth/pool.json")).unwrap()).unwrap();
    let prefix = format!("{}-", record["dm_prefix"].as_str().unwrap());
    let dm = DM::new().unwrap();
    let ghost = {
        let mut pool = Pool::open(&state, "berth", None, "ghost").unwrap();
        let pool_dev = pool.activate(&dm).unwrap();
        pool.create_thin(&dm, &pool_dev, "ghost", Bytes(16 * MIB)).unwrap().0
    };
    let origin = format!("{prefix}{}", thin_device(&store, &a).thin_id);
    let suspend = DmOptions::default().set_flags(DmFlags::DM_SUSPEND);
    dm.device_suspend(&DevId::Name(DmName::new(&origin).unwrap()), suspend).expect("suspend the origin");

    let report = VolumeStore::open(&state).unwrap().reconcile().unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.discarded.contains(&format!("thin/berth: ID {ghost} of ghost")), "{report:?}");
    assert_eq!(report.resumed, vec![origin.clone()]);
    assert!(!dm_devices(&prefix).contains(&format!("{prefix}{ghost}")), "the orphan's device is left");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(state.join("thin/berth/pool.json")).unwrap()).unwrap();
    assert!(record["thins"].get(ghost.to_string()).is_none(), "the orphan's ID is left: {record}");
    assert!(!state.join("locks/ghost.lock").exists());
    common::kill::assert_writable(&data, "the resumed origin");

    store.unmount(&a, &id("c1")).unwrap();
    let a_id = thin_device(&store, &a).thin_id;
    // Remove's first step; the server dies before moving the volume aside.
    store.get(&a).unwrap().config.driver().destroy(&store.layout(&a)).unwrap();
    let b = name("b");
    store.create(&b, thin_config(&[("size", "32M")])).unwrap();
    assert_eq!(thin_device(&store, &b).thin_id, a_id, "the lowest free ID is handed out again");
    let b_data = store.mount(&b, &id("c2")).unwrap();
    std::fs::write(b_data.join("note"), "b's").unwrap();
    let refused = store.mount(&a, &id("c3")).unwrap_err().to_string();
    assert!(refused.contains("was cut short") && refused.contains("holds it for b"), "{refused}");
    assert!(mounts_under(&state.join("volumes/a")).is_empty());
    // A restart meanwhile lets go of what the leftover volume holds: nothing of b's.
    let report = VolumeStore::open(&state).unwrap().reconcile().unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(std::fs::read_to_string(b_data.join("note")).unwrap(), "b's");
    store.remove(&a).unwrap_or_else(|e| panic!("remove the leftover volume: {e}"));
    assert_eq!(std::fs::read_to_string(b_data.join("note")).unwrap(), "b's");
    store.unmount(&b, &id("c2")).unwrap();
    let again = store.mount(&b, &id("c4")).unwrap();
    assert_eq!(std::fs::read_to_string(again.join("note")).unwrap(), "b's", "b's data after removing a");
    store.unmount(&b, &id("c4")).unwrap();
    store.remove(&b).unwrap();
    assert_pool_consistent(&state, "berth");
}
