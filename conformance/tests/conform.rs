//! berth-conform's own checks, on plugins whose outcome is known. Needs root.

use berth_conformance::conform::report::Outcome;
use berth_conformance::conform::{conform, Options};
use berth_conformance::plugins::berth_dir;

#[test]
fn berth_none_and_host_local_pass_every_check() {
    for name in ["berth-none", "berth-host-local"] {
        let report = conform(&berth_dir().join(name), &Options::default());
        let failed: Vec<_> = report.checks.iter().filter(|c| c.outcome == Outcome::Fail).collect();
        assert!(failed.is_empty(), "{name}: {failed:#?}");
        assert!(report.checks.iter().any(|c| c.check == "nothing left after DEL" && c.outcome == Outcome::Pass));
    }
}

#[test]
fn an_unknown_plugin_without_a_configuration_fails_with_the_reason() {
    let report = conform(std::path::Path::new("/bin/true"), &Options::default());
    assert!(report.failed());
    assert!(report.checks[0].reason.contains("--config"), "{:?}", report.checks);
}

#[test]
fn only_the_versions_asked_for_run() {
    let opts = Options { versions: Some(vec!["1.0.0".into()]), ..Default::default() };
    let report = conform(&berth_dir().join("berth-none"), &opts);
    assert!(report.checks.iter().all(|c| c.version == "1.0.0" || c.version == "-"), "{:?}", report.checks);
}
