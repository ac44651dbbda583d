//! Privileged tests (root): the `loop` and `bind` drivers on real loop devices, real ext4
//! and real bind mounts, through the store as the endpoint and the CLI use it. Each test
//! works in its own temp dir, whose guard unmounts and detaches what is left on failure.

mod common;

use berth_volumes::driver::{BindDriver, DriverConfig, LoopDriver};
use berth_volumes::spec::{Bytes, MountId, VolumeName};
use berth_volumes::store::UnmountOutcome;
use berth_volumes::{VolumeError, VolumeStore};
use common::{loop_devices_under, mount_options, mounts_under, require_root, TempDir};
use std::io::Write;
use std::path::Path;
use std::process::Command;

fn name(text: &str) -> VolumeName {
    VolumeName::parse(text).expect("valid name")
}

fn id(text: &str) -> MountId {
    MountId::parse(text).expect("valid id")
}

fn loop_config(size_mib: u64) -> DriverConfig {
    DriverConfig::Loop(LoopDriver { size: Bytes(size_mib << 20), usrquota: false, grpquota: false })
}

/// Writes 1 MiB chunks until the file system refuses; returns bytes written and the error.
fn fill(path: &Path) -> (u64, std::io::Error) {
    let mut file = std::fs::File::create(path).expect("create fill file");
    let chunk = vec![0xA5u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(err) => return (written, err),
        }
        if let Err(err) = file.sync_data() {
            return (written, err);
        }
    }
}

#[test]
fn privileged_loop_volume_refuses_writes_past_its_size_with_enospc() {
    require_root("privileged_loop_volume_refuses_writes_past_its_size_with_enospc");
    let dir = TempDir::new("loop-enospc");
    let store = VolumeStore::open(&dir.join("state")).expect("store");
    let v = name("small");
    store.create(&v, loop_config(16)).expect("create 16M loop volume");
    let image = dir.join("state/volumes/small/disk.img");
    assert_eq!(std::fs::metadata(&image).expect("image").len(), 16 << 20);
    assert!(loop_devices_under(&dir.path).is_empty(), "no device is attached before the first Mount");

    let data = store.mount(&v, &id("c1")).expect("mount");
    assert_eq!(loop_devices_under(&dir.path).len(), 1, "one loop device while mounted");
    assert!(mount_options(&data).is_some_and(|o| o.contains("rw")), "ext4 mounted at {}", data.display());
    std::fs::write(data.join("keep.txt"), "precious").expect("small write");
    let (written, err) = fill(&data.join("fill"));
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "a write past the size fails with ENOSPC: {err}");
    assert!(written > 8 << 20 && written <= 16 << 20, "wrote {written} bytes into a 16M volume");
    let status = store.inspect(&v).expect("inspect");
    assert!(status.mounted);
    assert_eq!(status.usage.size_limit, Some(Bytes(16 << 20)));
    assert!(status.usage.available.is_some_and(|a| a.0 < Bytes::MIB));

    assert_eq!(store.unmount(&v, &id("c1")).expect("unmount"), UnmountOutcome::Released);
    assert!(mounts_under(&dir.path).is_empty(), "unmounted after the last holder");
    common::wait_until("loop device detached", std::time::Duration::from_secs(5), || loop_devices_under(&dir.path).is_empty());

    let again = store.mount(&v, &id("c2")).expect("mount again");
    assert_eq!(std::fs::read_to_string(again.join("keep.txt")).expect("data survives"), "precious");
    store.unmount(&v, &id("c2")).expect("unmount");
    store.remove(&v).expect("remove");
    assert!(!dir.join("state/volumes/small").exists());
    assert!(loop_devices_under(&dir.path).is_empty() && mounts_under(&dir.path).is_empty());
}

#[test]
fn privileged_loop_volume_is_shared_between_holders_and_protected_from_removal() {
    require_root("privileged_loop_volume_is_shared_between_holders_and_protected_from_removal");
    let dir = TempDir::new("loop-shared");
    let store = VolumeStore::open(&dir.join("state")).expect("store");
    let v = name("shared");
    store.create(&v, loop_config(16)).expect("create");
    let first = store.mount(&v, &id("a")).expect("mount a");
    let second = store.mount(&v, &id("b")).expect("mount b");
    assert_eq!(first, second);
    assert_eq!(mounts_under(&dir.path).len(), 1, "one kernel mount for two holders");
    std::fs::write(first.join("from-a"), "a").expect("write");

    assert_eq!(store.unmount(&v, &id("a")).expect("unmount a"), UnmountOutcome::StillMounted { holders: 1 });
    assert_eq!(std::fs::read_to_string(second.join("from-a")).expect("still there for b"), "a");
    let refused = store.remove(&v).expect_err("removing a mounted volume is refused");
    assert!(matches!(refused, VolumeError::InUse { .. }), "{refused}");
    assert!(refused.to_string().contains("shared") && refused.to_string().contains('b'), "{refused}");

    assert_eq!(store.unmount(&v, &id("b")).expect("unmount b"), UnmountOutcome::Released);
    store.remove(&v).expect("remove");
    assert!(loop_devices_under(&dir.path).is_empty() && mounts_under(&dir.path).is_empty());
}

#[test]
fn privileged_loop_quota_options_reach_the_mount() {
    require_root("privileged_loop_quota_options_reach_the_mount");
    let dir = TempDir::new("loop-quota");
    let store = VolumeStore::open(&dir.join("state")).expect("store");
    let v = name("quota");
    let config = DriverConfig::Loop(LoopDriver { size: Bytes(16 << 20), usrquota: true, grpquota: true });
    store.create(&v, config).expect("create");
    let data = store.mount(&v, &id("q")).expect("mount");
    let options = mount_options(&data).expect("mounted");
    assert!(options.contains("usrquota") && options.contains("grpquota"), "{options}");
    store.unmount(&v, &id("q")).expect("unmount");
    store.remove(&v).expect("remove");
}

#[test]
fn privileged_reconcile_after_crashes_loses_no_volume_and_no_data() {
    require_root("privileged_reconcile_after_crashes_loses_no_volume_and_no_data");
    let dir = TempDir::new("loop-reconcile");
    let state = dir.join("state");
    let store = VolumeStore::open(&state).expect("store");

    // 1. Recorded as mounted, but the kernel lost the mount (a reboot): remounted.
    let rebooted = name("rebooted");
    store.create(&rebooted, loop_config(16)).expect("create");
    let data = store.mount(&rebooted, &id("c1")).expect("mount");
    std::fs::write(data.join("note"), "kept").expect("write");
    nix::mount::umount2(&data, nix::mount::MntFlags::empty()).expect("unmount behind berth's back");

    // 2. Mounted, but the crash came before the mount ID was recorded: unmounted.
    let crashed = name("crashed");
    store.create(&crashed, loop_config(16)).expect("create");
    let crashed_data = store.mount(&crashed, &id("c2")).expect("mount");
    let record = state.join("volumes/crashed/volume.json");
    let text = std::fs::read_to_string(&record).expect("record");
    std::fs::write(&record, text.replace("\"c2\"", "").replace("[\n    \n  ]", "[]")).expect("forget c2");
    assert!(store.get(&crashed).expect("still readable").mounts.is_empty());

    // 3. A loop device left attached to an unmounted volume's image (not autoclear).
    let stray = name("stray");
    store.create(&stray, loop_config(16)).expect("create");
    let attached =
        Command::new("losetup").args(["-f", "--show"]).arg(state.join("volumes/stray/disk.img")).output().expect("losetup");
    assert!(attached.status.success(), "{}", String::from_utf8_lossy(&attached.stderr));

    // 4. Half-created and half-removed volume directories.
    std::fs::create_dir_all(state.join("volumes/.creating.half/_data")).expect("mkdir");
    std::fs::create_dir_all(state.join("volumes/.removing.gone/_data")).expect("mkdir");

    let restarted = VolumeStore::open(&state).expect("store after restart");
    let report = restarted.reconcile().expect("reconcile");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.volumes, 3);
    assert_eq!(report.remounted, vec![rebooted.clone()]);
    assert_eq!(report.unmounted, vec![crashed.clone()]);
    assert_eq!(report.discarded.len(), 2, "{:?}", report.discarded);

    assert_eq!(std::fs::read_to_string(data.join("note")).expect("remounted with its data"), "kept");
    assert!(!mounts_under(&crashed_data).iter().any(|m| m == &crashed_data), "unrecorded mount undone");
    let devices = loop_devices_under(&state);
    assert_eq!(devices.len(), 1, "only the remounted volume holds a device: {devices:?}");

    restarted.unmount(&rebooted, &id("c1")).expect("unmount");
    for volume in [&rebooted, &crashed, &stray] {
        restarted.remove(volume).expect("remove");
    }
    let left: Vec<_> = std::fs::read_dir(state.join("volumes")).expect("list").collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(loop_devices_under(&dir.path).is_empty() && mounts_under(&dir.path).is_empty());
}

#[test]
fn privileged_bind_volume_shows_the_source_and_enforces_read_only() {
    require_root("privileged_bind_volume_shows_the_source_and_enforces_read_only");
    let dir = TempDir::new("bind");
    // ':' and ',' would split overlayfs' layer list if they were not escaped.
    let source = dir.join("host:data,1");
    std::fs::create_dir(&source).expect("mkdir source");
    std::fs::write(source.join("config"), "from the host").expect("write source");
    let store = VolumeStore::open(&dir.join("state")).expect("store");

    let ro = name("ro");
    store.create(&ro, DriverConfig::Bind(BindDriver { source: source.clone(), read_only: true })).expect("create");
    let data = store.mount(&ro, &id("c1")).expect("mount");
    assert_eq!(std::fs::read_to_string(data.join("config")).expect("source visible"), "from the host");
    let refused = std::fs::write(data.join("new"), "x").expect_err("read-only");
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS), "{refused}");

    let rw = name("rw");
    store.create(&rw, DriverConfig::Bind(BindDriver { source: source.clone(), read_only: false })).expect("create");
    let writable = store.mount(&rw, &id("c2")).expect("mount");
    std::fs::write(writable.join("from-container"), "y").expect("writable");
    assert_eq!(std::fs::read_to_string(source.join("from-container")).expect("in the source"), "y");

    for (volume, holder) in [(&ro, "c1"), (&rw, "c2")] {
        store.unmount(volume, &id(holder)).expect("unmount");
        store.remove(volume).expect("remove");
    }
    assert!(mounts_under(&dir.path).is_empty());
    assert_eq!(std::fs::read_to_string(source.join("config")).expect("source kept"), "from the host");
    assert!(source.join("from-container").exists(), "removing a bind volume never touches its source");
}

#[test]
fn privileged_bind_volume_whose_source_vanished_fails_to_mount_clearly() {
    require_root("privileged_bind_volume_whose_source_vanished_fails_to_mount_clearly");
    let dir = TempDir::new("bind-gone");
    let source = dir.join("src");
    std::fs::create_dir(&source).expect("mkdir");
    let store = VolumeStore::open(&dir.join("state")).expect("store");
    let v = name("gone");
    store.create(&v, DriverConfig::Bind(BindDriver { source: source.clone(), read_only: false })).expect("create");
    std::fs::remove_dir(&source).expect("rmdir source");
    let err = store.mount(&v, &id("c")).expect_err("mount without source").to_string();
    assert!(err.contains("source") && err.contains(&source.display().to_string()), "{err}");
    assert!(store.get(&v).expect("volume kept").mounts.is_empty(), "a failed mount records no holder");
    store.remove(&v).expect("remove");
}
