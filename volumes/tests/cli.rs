//! `berth volume` as a user types it (through the `berth-volume` binary), on a temp state dir.

mod common;

use common::TempDir;
use std::path::Path;
use std::process::{Command, Output};

fn berth_volume(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-volume")).args(args).arg("--state-dir").arg(state).output().expect("run berth-volume")
}

fn ok(state: &Path, args: &[&str]) -> String {
    let output = berth_volume(state, args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails(state: &Path, args: &[&str]) -> String {
    let output = berth_volume(state, args);
    assert_eq!(output.status.code(), Some(1), "{args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn named_volume_from_create_to_rm() {
    let dir = TempDir::new("cli-named");
    let state = dir.join("state");
    assert_eq!(ok(&state, &["create", "notes"]), "notes\n");
    let listed = ok(&state, &["ls"]);
    assert!(
        listed.lines().nth(1).is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["named", "notes", "0"]),
        "{listed}"
    );
    let mountpoint = ok(&state, &["mount", "notes", "--id", "job-1"]);
    assert_eq!(mountpoint.trim(), state.join("volumes/notes/_data").display().to_string());
    std::fs::write(Path::new(mountpoint.trim()).join("a.txt"), "12345").expect("write");

    let inspected: serde_json::Value = serde_json::from_str(&ok(&state, &["inspect", "notes"])).expect("JSON");
    assert_eq!(inspected[0]["Name"], "notes");
    assert_eq!(inspected[0]["Driver"], "named");
    assert_eq!(inspected[0]["MountIDs"], serde_json::json!(["job-1"]));
    assert!(inspected[0]["Usage"]["Used"].as_u64().is_some_and(|used| used >= 4096), "{inspected}");

    let refused = fails(&state, &["rm", "notes"]);
    assert!(refused.contains("in use by mount ID(s) job-1"), "{refused}");
    let wrong_id = fails(&state, &["unmount", "notes", "--id", "job-2"]);
    assert!(wrong_id.contains("not mounted for ID job-2") && wrong_id.contains("job-1"), "{wrong_id}");
    ok(&state, &["unmount", "notes", "--id", "job-1"]);
    assert_eq!(ok(&state, &["rm", "notes"]), "notes\n");
    assert_eq!(ok(&state, &["ls", "-q"]), "");
}

#[test]
fn bad_input_is_refused_with_a_message_naming_it() {
    let dir = TempDir::new("cli-bad");
    let state = dir.join("state");
    let cases: &[(&[&str], &str)] = &[
        (&["create", "../escape"], "\"../escape\""),
        (&["create", "v", "--driver", "zfs"], "\"zfs\""),
        (&["create", "v", "--driver", "loop"], "\"size\""),
        (&["create", "v", "--driver", "loop", "-o", "size=12Q"], "\"12Q\""),
        (&["create", "v", "--driver", "named", "-o", "size=1G", "-o", "uid=5"], "size, uid"),
        (&["create", "v", "--driver", "bind", "-o", "source=relative"], "absolute"),
        (&["inspect", "ghost"], "no such volume: ghost"),
        (&["mount", "ghost"], "no such volume: ghost"),
    ];
    for (args, expected) in cases {
        let message = fails(&state, args);
        assert!(message.starts_with("berth volume: ") && message.contains(expected), "{args:?}: {message}");
    }
    assert_eq!(ok(&state, &["ls", "-q"]), "", "nothing was created");
}
