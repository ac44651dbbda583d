//! On this machine's kernel (no XFS quota, no device-mapper), the `xfsquota` and `thin`
//! drivers refuse clearly, through the endpoint and the CLI as a user meets them, and leave
//! nothing behind. Privileged: the base without quotas is a tmpfs mounted in a temp dir.
//! What they do where the kernel has what they need is in `lab_quota_thin.rs`.

mod common;

use common::{require_root, TempDir, TestServer};
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// A tmpfs (no project quotas) at `dir/base`, unmounted by the temp dir's guard.
fn tmpfs_base(dir: &TempDir) -> std::path::PathBuf {
    let base = dir.join("base");
    std::fs::create_dir(&base).expect("mkdir base");
    nix::mount::mount(Some("tmpfs"), &base, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=8m")).expect("mount a tmpfs");
    base
}

#[test]
fn privileged_xfsquota_on_a_base_without_project_quotas_is_refused_naming_the_fix() {
    require_root("privileged_xfsquota_on_a_base_without_project_quotas_is_refused_naming_the_fix");
    let dir = TempDir::new("xq-refused");
    let base = tmpfs_base(&dir);

    let server = TestServer::start("xq-refused-ep");
    let mut client = server.connect();
    let create = json!({"Name": "q", "Opts": {"type": "xfsquota", "base": base, "size": "8M"}});
    let refused = client.post("/VolumeDriver.Create", &create.to_string());
    assert_eq!(refused.status, 400, "{refused:?}");
    for part in ["\"base\"", "project quotas are not available", "tmpfs", "need XFS, or ext4"] {
        assert!(refused.err().contains(part), "{:?} should mention {part:?}", refused.err());
    }
    assert_eq!(client.post("/VolumeDriver.List", "").body["Volumes"], json!([]));
    assert!(std::fs::read_dir(base.as_path()).expect("list base").next().is_none(), "nothing made in the base");

    let missing = json!({"Name": "q", "Opts": {"type": "xfsquota", "base": dir.join("nope"), "size": "8M"}});
    let refused = client.post("/VolumeDriver.Create", &missing.to_string());
    assert_eq!(refused.status, 400);
    assert!(refused.err().contains("not an existing directory"), "{refused:?}");

    let state = dir.join("state");
    let output = Command::new(env!("CARGO_BIN_EXE_berth-volume"))
        .args(["create", "q", "--driver", "xfsquota", "-o", &format!("base={}", base.display()), "-o", "size=8M"])
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run berth-volume");
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.starts_with("berth volume: ") && message.contains("need XFS, or ext4"), "{message}");
    assert!(std::fs::read_dir(state.join("volumes")).expect("list").next().is_none(), "no half-made volume");
}

#[test]
fn privileged_thin_without_device_mapper_is_refused_and_leaves_nothing() {
    require_root("privileged_thin_without_device_mapper_is_refused_and_leaves_nothing");
    if Path::new("/dev/mapper/control").exists() {
        // The refusal can only be seen on a kernel without device-mapper (as this project's
        // machines are); where it is present the lab tests' thin volumes run here as well.
        eprintln!("this kernel has device-mapper: the refusal without it cannot be shown here");
        return;
    }
    let server = TestServer::start("thin-refused");
    let mut client = server.connect();
    let refused = client.post("/VolumeDriver.Create", r#"{"Name":"t","Opts":{"type":"thin","size":"64M"}}"#);
    assert_eq!(refused.status, 500, "{refused:?}");
    assert!(
        refused.err().contains("the thin driver cannot work on this machine: device-mapper is not available")
            && refused.err().contains("/dev/mapper/control"),
        "{refused:?}"
    );
    assert_eq!(client.post("/VolumeDriver.List", "").body["Volumes"], json!([]));
    let made: Vec<_> = std::fs::read_dir(server.state.join("volumes")).expect("list").collect();
    assert!(made.is_empty(), "{made:?}");
    assert!(!server.state.join("thin").exists(), "no pool is made without device-mapper");
}
