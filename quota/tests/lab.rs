//! Project quotas on real XFS and ext4, in the kernel lab (this machine's kernel has no XFS
//! quota): one VM boot runs everything below, through the crate and through the
//! `berth-quota` binary as a user types it, and `berth-quota set` SIGKILLed at random
//! instants. Needs root and conformance/TEST-PACKAGES.
//!
//! Each file system is a sparse image in the VM's /tmp, mounted through a loop device,
//! inside a [`Scratch`] whose guard unmounts, detaches and deletes it even on failure.

use berth_conformance::lab;
use berth_quota::registry::{FIRST_PROJECT_ID, RECORDS_FILE};
use berth_quota::testing::{limited_projects, make_image, modprobe, mount_image, without_sys_resource, Fs, Scratch};
use berth_conformance::kill::KillDice;
use berth_quota::{Bytes, Control, Limits, ProjectId, QuotaError};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// lab_: one boot; inside, the quotas of XFS and of ext4, through the crate and the CLI;
/// then `berth-quota set` killed at random instants on XFS.
#[test]
fn lab_project_quotas_on_xfs_and_ext4() {
    if !lab::in_lab() {
        let out = lab::assert_test_passes_inside("lab_project_quotas_on_xfs_and_ext4");
        eprintln!(
            "kernel lab: test started {:.1}s after boot, whole run {:.1}s; inside:\n{}",
            out.booted_after.unwrap_or_default().as_secs_f64(),
            out.elapsed.as_secs_f64(),
            out.stdout.trim_end()
        );
        return;
    }
    modprobe(&["loop", "xfs", "quota_v2"]);
    for fs in [Fs::Xfs, Fs::Ext4] {
        let scratch = Scratch::new(&format!("quota-{}", fs.name()));
        let mnt = scratch.join("mnt");
        make_image(&scratch.join("fs.img"), fs, fs.min_size());
        mount_image(&scratch.join("fs.img"), &mnt, fs, "prjquota");
        crate_enforces_limits(fs, &mnt);
        ids_never_collide(&mnt);
        cli_sets_gets_lists_and_clears(fs, &mnt);
        records_survive_a_remount(fs, &scratch);
        println!("{}: ok", fs.name());
    }
    quotas_are_refused_clearly_without_prjquota();
    set_killed_at_random_instants();
}

fn bytes(mib: u64) -> Bytes {
    Bytes(mib * MIB)
}

/// Fills `path` as a container would write: without CAP_SYS_RESOURCE, which lets ext4
/// writers past quota limits.
fn fill(path: &Path, limit: Bytes) -> (u64, Option<std::io::Error>) {
    let path = path.to_path_buf();
    without_sys_resource(move || berth_quota::testing::fill(&path, limit))
}

/// What the kernel answers to a write past a project's limit: XFS reports a project quota
/// as a full file system (ENOSPC), ext4 as a quota (EDQUOT).
fn over_limit_errno(fs: Fs) -> i32 {
    match fs {
        Fs::Xfs => libc::ENOSPC,
        Fs::Ext4 => libc::EDQUOT,
    }
}

fn crate_enforces_limits(fs: Fs, mnt: &Path) {
    let label = fs.name();
    let control = Control::for_path(mnt).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(control.fs_type(), label);
    let a = mnt.join("a");
    std::fs::create_dir(&a).unwrap();
    std::fs::write(a.join("before"), vec![1u8; 64 << 10]).unwrap();
    let project = control.set(&a, Limits { size: Some(bytes(10)), inodes: Some(100) }).expect("set");
    assert!(project.0 >= FIRST_PROJECT_ID, "{label}: {project}");
    let quota = control.get(&a).expect("get");
    assert_eq!((quota.project, quota.size_limit, quota.inode_limit), (project, Some(bytes(10)), Some(100)));
    assert!(quota.used.0 >= 64 << 10, "{label}: files already there count too: {quota:?}");

    // A file made later inherits the project; a write past the limit fails.
    let (written, refused) = fill(&a.join("big"), bytes(20));
    let refused = refused.unwrap_or_else(|| panic!("{label}: 20M were written under a 10M limit"));
    assert_eq!(refused.raw_os_error(), Some(over_limit_errno(fs)), "{label}: {refused}");
    assert!((8 * MIB..=10 * MIB).contains(&written), "{label}: wrote {written} bytes under a 10M limit");
    let full = control.get(&a).expect("get");
    assert!((9 * MIB..=10 * MIB).contains(&full.used.0), "{label}: {full:?}");
    assert!(full.available().is_some_and(|left| left.0 < MIB), "{label}: {full:?}");
    // The file system itself is not full: outside the project, writes go on.
    let (outside, err) = fill(&mnt.join("outside"), bytes(4));
    assert!(err.is_none() && outside == 4 * MIB, "{label}: {err:?}");
    std::fs::remove_file(mnt.join("outside")).unwrap();

    // Setting again keeps the ID and changes the limit: the write goes on.
    assert_eq!(control.set(&a, Limits { size: Some(bytes(30)), inodes: None }).unwrap(), project);
    let (_, err) = fill(&a.join("big"), bytes(4));
    assert!(err.is_none(), "{label}: after raising the limit: {err:?}");

    // A subdirectory made later is in the project; given its own quota, it gets its own ID.
    let sub = a.join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(control.project_of(&sub).unwrap(), project, "{label}: inherited");
    let own = control.set(&sub, Limits { size: Some(bytes(1)), inodes: None }).expect("set sub");
    assert_ne!(own, project, "{label}: an inherited ID is not taken over");
    assert_eq!(control.project_of(&a).unwrap(), project);

    // Inode limits: the directory itself counts as one.
    let few = mnt.join("few");
    std::fs::create_dir(&few).unwrap();
    control.set(&few, Limits { size: None, inodes: Some(4) }).expect("set inodes");
    let dir = few.clone();
    let (made, err) = without_sys_resource(move || {
        let made = (0..10).take_while(|n| std::fs::write(dir.join(n.to_string()), b"x").is_ok()).count();
        (made, std::fs::write(dir.join("more"), b"x").unwrap_err())
    });
    assert_eq!(made, 3, "{label}: 4 inodes: the directory and 3 files");
    assert_eq!(err.raw_os_error(), Some(over_limit_errno(fs)), "{label}: {err}");

    // Clearing gives the tree back to project 0 and frees the ID.
    let cleared = control.clear(&few).expect("clear").expect("had a project");
    assert_eq!(control.project_of(&few).unwrap(), ProjectId(0));
    assert_eq!(control.project_of(&few.join("0")).unwrap(), ProjectId(0));
    let dir = few.clone();
    without_sys_resource(move || std::fs::write(dir.join("more"), b"x")).expect("no inode limit any more");
    assert!(!control.list().unwrap().iter().any(|q| q.project == cleared && q.size_limit.is_some()));
    let no_quota = control.get(&few).unwrap_err().to_string();
    assert!(no_quota.contains("no project quota"), "{no_quota}");
    println!("{label}: limits enforced (over the limit: {refused})");
}

/// Many processes' worth of `set` at once (threads, each with its own lock file handle),
/// and an ID that someone else gave a quota to without berth: no two directories share one.
fn ids_never_collide(mnt: &Path) {
    let control = Control::for_path(mnt).unwrap();
    let foreign = (FIRST_PROJECT_ID..).find(|id| !control.list().unwrap().iter().any(|q| q.project.0 == *id)).unwrap();
    berth_quota::sys::set_limits(control.device(), ProjectId(foreign), MIB, 0).expect("a quota set by someone else");
    let workers: Vec<_> = (0..8)
        .map(|n| {
            let dir = mnt.join(format!("par{n}"));
            std::thread::spawn(move || {
                std::fs::create_dir(&dir).unwrap();
                let control = Control::for_path(&dir).unwrap();
                control.set(&dir, Limits { size: Some(bytes(1)), inodes: None }).unwrap()
            })
        })
        .collect();
    let ids: BTreeSet<ProjectId> = workers.into_iter().map(|w| w.join().expect("set in a thread")).collect();
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert!(!ids.contains(&ProjectId(foreign)), "the foreign ID {foreign} was handed out: {ids:?}");
    berth_quota::sys::set_limits(control.device(), ProjectId(foreign), 0, 0).unwrap();
    for n in 0..8 {
        control.clear(&mnt.join(format!("par{n}"))).unwrap();
    }
}

fn berth_quota(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-quota")).args(args).output().expect("run berth-quota")
}

fn ok(args: &[&str]) -> String {
    let output = berth_quota(args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}"))
}

fn cli_sets_gets_lists_and_clears(fs: Fs, mnt: &Path) {
    let label = fs.name();
    let d = mnt.join("cli");
    std::fs::create_dir(&d).unwrap();
    let ds = d.to_str().unwrap();
    let said = ok(&["set", ds, "--size", "2M", "--inodes", "50"]);
    assert!(said.starts_with(&format!("{ds}: project ")) && said.contains("size 2M") && said.contains("50 inodes"), "{said}");
    let (written, err) = fill(&d.join("f"), bytes(3));
    assert_eq!(err.and_then(|e| e.raw_os_error()), Some(over_limit_errno(fs)), "{label}: 3M under a 2M quota set by the CLI");
    assert!(written <= 2 * MIB);

    let got = json(&["get", ds, "--json"]);
    assert_eq!(got[0]["SizeLimit"], 2 * MIB, "{got}");
    assert_eq!(got[0]["InodeLimit"], 50);
    assert_eq!(got[0]["Path"], ds);
    assert!(got[0]["Used"].as_u64().is_some_and(|u| u >= MIB), "{got}");
    let table = ok(&["get", ds]);
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("2M") && l.ends_with(ds)), "{table}");

    let listed = json(&["ls", mnt.to_str().unwrap(), "--json"]);
    let paths: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|q| q["Path"].as_str()).collect();
    for dir in ["a", "a/sub", "cli"] {
        let wanted = mnt.join(dir);
        assert!(paths.contains(&wanted.to_str().unwrap()), "{label}: {dir} in {paths:?}");
    }

    let cleared = ok(&["clear", ds]);
    assert!(cleared.contains("freed"), "{cleared}");
    let (_, err) = fill(&d.join("f"), bytes(2));
    assert!(err.is_none(), "{label}: no limit after clear: {err:?}");
    let refused = berth_quota(&["get", ds]);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.starts_with("berth quota: ") && message.contains("no project quota"), "{message}");
    println!("{label}: CLI ok");
}

/// The records are on the file system: after a remount, IDs and limits are all there.
fn records_survive_a_remount(fs: Fs, scratch: &Scratch) {
    let mnt = scratch.join("mnt");
    let before = Control::for_path(&mnt).unwrap().get(&mnt.join("a")).unwrap();
    assert!(mnt.join(RECORDS_FILE).is_file());
    nix::mount::umount2(&mnt, nix::mount::MntFlags::empty()).expect("unmount");
    mount_image(&scratch.join("fs.img"), &mnt, fs, "prjquota");
    let control = Control::for_path(&mnt).unwrap();
    let after = control.get(&mnt.join("a")).unwrap();
    assert_eq!((after.project, after.size_limit), (before.project, before.size_limit));
    // Setting again after the remount keeps the ID: the record still names the directory.
    assert_eq!(control.set(&mnt.join("a"), Limits { size: Some(bytes(30)), inodes: None }).unwrap(), before.project);
}

fn quotas_are_refused_clearly_without_prjquota() {
    let scratch = Scratch::new("quota-off");
    let mnt = scratch.join("mnt");
    make_image(&scratch.join("fs.img"), Fs::Xfs, Fs::Xfs.min_size());
    mount_image(&scratch.join("fs.img"), &mnt, Fs::Xfs, "");
    let err = Control::for_path(&mnt).unwrap_err();
    assert!(matches!(err, QuotaError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("mount it with -o prjquota"), "{err}");
    let output = berth_quota(&["set", mnt.to_str().unwrap(), "--size", "1M"]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(message.contains("not mounted with project quotas") && message.contains(mnt.to_str().unwrap()), "{message}");
    println!("without prjquota: {err}");
}

// ---------------------------------------------------------------------------------------
// `berth-quota set` killed at any instant

/// Killed rounds; every other one changes the limits of a directory that has a quota.
const KILL_ROUNDS: usize = 16;
/// Files in each directory, so that putting the tree into the project takes a while.
const TREE_FILES: usize = 200;

/// `berth-quota set` SIGKILLed at a uniformly random instant of its run (spread over the
/// median of uninterrupted runs; the seed is printed, `BERTH_KILL_SEED` replays it), then
/// run again: the project has the limits asked for and holds the whole tree, and once the
/// quota is cleared nothing is left: no limited project in `xfs_quota`'s report, no record,
/// no staged records file.
fn set_killed_at_random_instants() {
    let mut dice = KillDice::new("set_killed_at_random_instants");
    let scratch = Scratch::new("quota-kill");
    let mnt = scratch.join("mnt");
    make_image(&scratch.join("fs.img"), Fs::Xfs, Fs::Xfs.min_size());
    mount_image(&scratch.join("fs.img"), &mnt, Fs::Xfs, "prjquota");
    let mut runs: Vec<Duration> = (0..5)
        .map(|n| {
            let dir = tree(&mnt, &format!("calib{n}"));
            let took = timed_set(&dir, "7M", "900");
            clear_and_delete(&dir);
            took
        })
        .collect();
    runs.sort();
    let within = runs[runs.len() / 2];
    let mut interrupted = 0;
    for round in 0..KILL_ROUNDS {
        let context = format!("round {round} (seed {})", dice.seed);
        let dir = tree(&mnt, &format!("k{round}"));
        let ds = dir.to_str().unwrap();
        if round % 2 == 1 {
            ok(&["set", ds, "--size", "5M", "--inodes", "1000"]);
        }
        interrupted += usize::from(set_killed_at(&dir, dice.instant(within)));
        ok(&["set", ds, "--size", "7M", "--inodes", "900"]);
        let limited = limited_projects(&mnt);
        assert_eq!(limited.len(), 1, "{context}: one project with limits: {limited:?}");
        let fields: Vec<&str> = limited[0].split_whitespace().collect();
        let (hard_kib, inodes_used, inode_hard) = (fields[3], fields[6], fields[8]);
        assert_eq!((hard_kib, inode_hard), ("7168", "900"), "{context}: the limits asked for: {}", limited[0]);
        assert_eq!(inodes_used, (TREE_FILES + 2).to_string(), "{context}: the whole tree is in the project: {}", limited[0]);
        clear_and_delete(&dir);
        assert!(limited_projects(&mnt).is_empty(), "{context}: after clear: {:?}", limited_projects(&mnt));
    }
    let records = std::fs::read_to_string(mnt.join(RECORDS_FILE)).unwrap_or_default();
    let recorded = serde_json::from_str::<serde_json::Value>(&records).map(|r| r["projects"].clone()).unwrap_or_default();
    assert_eq!(recorded, serde_json::json!({}), "no records left: {records}");
    let staged: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(staged.is_empty(), "staged files left at the file system's root: {staged:?}");
    assert!(interrupted > 0, "no kill fell inside a run (seed {})", dice.seed);
    println!(
        "berth-quota set killed: {interrupted}/{KILL_ROUNDS} rounds interrupted; an uninterrupted run takes {:.1} ms",
        within.as_secs_f64() * 1e3
    );
}

/// `MNT/NAME` with a subdirectory and `TREE_FILES` small files in the two.
fn tree(mnt: &Path, name: &str) -> std::path::PathBuf {
    let dir = mnt.join(name);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for n in 0..TREE_FILES {
        let parent = if n % 2 == 0 { dir.clone() } else { dir.join("sub") };
        std::fs::write(parent.join(format!("f{n}")), b"x").unwrap();
    }
    dir
}

fn timed_set(dir: &Path, size: &str, inodes: &str) -> Duration {
    let started = Instant::now();
    ok(&["set", dir.to_str().unwrap(), "--size", size, "--inodes", inodes]);
    started.elapsed()
}

/// Starts `berth-quota set DIR --size 7M --inodes 900` and SIGKILLs it `at` after its
/// start; whether it was still running then.
fn set_killed_at(dir: &Path, at: Duration) -> bool {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-quota"))
        .args(["set", dir.to_str().unwrap(), "--size", "7M", "--inodes", "900"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start berth-quota");
    std::thread::sleep(at.saturating_sub(started.elapsed()));
    let _ = child.kill();
    child.wait().expect("wait for berth-quota").signal() == Some(libc::SIGKILL)
}

fn clear_and_delete(dir: &Path) {
    ok(&["clear", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(dir).unwrap();
}
