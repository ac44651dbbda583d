//! `berth-volume serve` SIGKILLed at a uniformly random instant of Create, Mount, Unmount,
//! Remove and (thin) a snapshot's Create, for the `thin` and `xfsquota` drivers, in the
//! kernel lab (this machine's kernel has neither device-mapper nor XFS quota); one boot for
//! both. The rounds are `common::kill`'s, as for `named` and `loop` on this machine; the
//! drivers add their own checks: no thin device or thin ID left in the pool, no origin
//! left suspended, the pool consistent for thin_check once stopped; no directory, project
//! record or project limit left in the quota base. Needs root and the lab's packages.

mod common;

use berth_conformance::lab;
use berth_quota::testing::{limited_projects, make_image, modprobe, mount_image, Fs};
use common::dm::{assert_pool_consistent, dm_devices, DmCleanup};
use common::kill::{dice, DriverUnderTest, KillRounds, ROUNDS_VAR};
use common::{lab_report_with, TempDir};
use devicemapper::{DevId, DmFlags, DmName, DM};
use serde_json::json;
use std::path::{Path, PathBuf};

/// lab_: one boot; thin then xfsquota volumes, the server killed in every operation.
#[test]
fn lab_endpoint_killed_at_random_instants_thin_and_xfsquota() {
    if !lab::in_lab() {
        return lab_report_with("lab_endpoint_killed_at_random_instants_thin_and_xfsquota", &[ROUNDS_VAR]);
    }
    modprobe(&["loop", "dm_thin_pool", "xfs"]);
    let mut dice = dice("lab_endpoint_killed_at_random_instants_thin_and_xfsquota");
    let _dm = DmCleanup;
    let dir = TempDir::new("kill-lab");
    let thin = DriverUnderTest {
        label: "thin",
        options: json!({ "type": "thin", "size": "16M", "loopdatasize": "256M", "loopmetadatasize": "16M" }),
        snapshots: true,
        rounds_per_operation: 2,
        after_round: Box::new(check_thin_pool),
    };
    let thin_tally = KillRounds::new(&dir, &mut dice, thin).run();
    assert_pool_consistent(&dir.join("thin-state"), "berth");

    make_image(&dir.join("xfs.img"), Fs::Xfs, Fs::Xfs.min_size());
    let mount_point = dir.join("xfs");
    mount_image(&dir.join("xfs.img"), &mount_point, Fs::Xfs, "prjquota");
    let base = mount_point.join("vols");
    std::fs::create_dir(&base).expect("mkdir the quota base");
    let quota_base = base.clone();
    let xfsquota = DriverUnderTest {
        label: "xfsquota",
        options: json!({ "type": "xfsquota", "base": base, "size": "8M" }),
        snapshots: false,
        rounds_per_operation: 2,
        after_round: Box::new(move |_, removed, live| check_quota_base(&quota_base, removed, live)),
    };
    let quota_tally = KillRounds::new(&dir, &mut dice, xfsquota).run();
    assert!(thin_tally.interrupted() + quota_tally.interrupted() > 0, "no kill fell inside an operation (seed {})", dice.seed);
}

/// The pool holds the thin IDs and devices of the live volumes only (the one kept mounted
/// is active), besides its own three devices, and none is left suspended.
fn check_thin_pool(state: &Path, removed: &[&str], live: usize) {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("thin/berth/pool.json")).expect("pool.json")).expect("pool.json");
    let owners: Vec<&str> = record["thins"].as_object().expect("thins").values().filter_map(|o| o.as_str()).collect();
    assert_eq!(owners.len(), live, "thin IDs after removing {removed:?}: {record}");
    assert!(!owners.iter().any(|o| removed.contains(o)), "thin IDs of removed volumes: {record}");
    let devices = dm_devices("berth-");
    assert_eq!(devices.len(), 3 + live, "device-mapper devices after removing {removed:?}: {devices:?}");
    let dm = DM::new().expect("device-mapper");
    for name in devices {
        let info = dm.device_info(&DevId::Name(DmName::new(&name).expect("a name"))).expect("device info");
        assert!(!info.flags().contains(DmFlags::DM_SUSPEND), "{name} is left suspended");
    }
}

/// No directory, project record or limited project is left of removed volumes: the base
/// and `xfs_quota`'s report show the live volumes only.
fn check_quota_base(base: &Path, removed: &[&str], live: usize) {
    let left: Vec<PathBuf> = removed.iter().map(|v| base.join(v)).filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "directories of removed volumes: {left:?}");
    let mount_point = base.parent().expect("the base is in the file system's root");
    let records = std::fs::read_to_string(mount_point.join(berth_quota::registry::RECORDS_FILE)).unwrap_or_default();
    assert!(!removed.iter().any(|v| records.contains(&format!("/vols/{v}\""))), "records of removed volumes: {records}");
    let limited = limited_projects(mount_point);
    assert_eq!(limited.len(), live, "projects with a limit after removing {removed:?}: {limited:?}");
}
