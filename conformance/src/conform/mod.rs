//! berth-conform: runs any CNI plugin binary through the spec in throwaway namespaces and
//! reports every check as pass, fail or skip, with the SPEC.md section it comes from.
//!
//! Each cniVersion the plugin claims gets a fresh [`TestHost`]; the plugin's kind (by its
//! executable's name, [`kinds::KINDS`]) says how to configure it, or `--config` does.

mod checks;
mod invoke;
pub mod kinds;
mod lifecycle;
pub mod report;
mod state;

use berth_cni::spec::{Version, SUPPORTED};
use kinds::Role;
use report::{fail, Report, Verdict};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const S_VERSION: &str = "Section 2: Execution Protocol (VERSION)";
pub const S_ERROR: &str = "Section 5: Result Types (Error, well-known error codes)";
pub const S_PARAMS: &str = "Section 2: Execution Protocol (Parameters); Section 5: Error codes";

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A configuration to use instead of the kind's own (its cniVersion is replaced).
    pub config: Option<Value>,
    /// The cniVersions to run, instead of every one the plugin claims.
    pub versions: Option<Vec<String>>,
    /// For a chained (meta) plugin: the main plugin to chain after.
    pub main: Option<PathBuf>,
}

/// The plugin under test and how to drive it.
pub struct Target {
    pub plugin: PathBuf,
    pub type_name: String,
    pub kind: Option<&'static kinds::Kind>,
    pub role: Role,
    pub ifname: &'static str,
    pub user_conf: Option<Value>,
    /// The plugin's own folder first, so its IPAM and main plugin are its siblings.
    pub cni_path: Vec<PathBuf>,
    /// For a meta plugin, the main plugin it is chained after.
    pub main: Option<PathBuf>,
}

/// Runs every check on `plugin`.
pub fn conform(plugin: &Path, opts: &Options) -> Report {
    let kind = kinds::kind_of(plugin);
    let role = kind.map_or(Role::Interface, |k| k.role);
    let mut report = Report::new(&plugin.display().to_string(), &format!("{role:?}"));
    if !plugin.is_file() {
        report.push("plugin", "-", S_VERSION, fail(format!("{} is not a file", plugin.display())));
        return report;
    }
    if kind.is_none() && opts.config.is_none() {
        let reason = "unknown plugin kind: pass --config FILE with a configuration for it";
        report.push("configuration", "-", S_PARAMS, fail(reason));
        return report;
    }
    let target = target(plugin, kind, role, opts);
    if let Some(reason) = kind.and_then(|k| k.unavailable).and_then(|f| f()) {
        report.skip("all checks", "-", S_VERSION, reason);
        return report;
    }
    if role == Role::Meta && target.main.is_none() {
        report.skip("all checks", "-", S_VERSION, "a chained plugin needs a main plugin: pass --main PLUGIN");
        return report;
    }
    let Some(claimed) = version_check(&target, &mut report) else { return report };
    let versions = versions_to_run(&claimed, opts, &mut report);
    for (i, version) in versions.iter().enumerate() {
        lifecycle::run_version(&target, version, i + 1 == versions.len(), &mut report);
    }
    report
}

fn target(plugin: &Path, kind: Option<&'static kinds::Kind>, role: Role, opts: &Options) -> Target {
    let dir = plugin.parent().map(Path::to_path_buf).unwrap_or_default();
    let main = opts.main.clone().or_else(|| kinds::sibling(&dir, &["bridge", "berth-bridge"]));
    let mut cni_path = vec![dir];
    if let Some(main_dir) = main.as_ref().and_then(|m| m.parent()).filter(|d| !cni_path.iter().any(|p| p == d)) {
        cni_path.push(main_dir.to_path_buf());
    }
    Target {
        type_name: plugin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        plugin: plugin.to_path_buf(),
        kind,
        role,
        ifname: kind.map_or("eth0", |k| k.ifname),
        user_conf: opts.config.clone(),
        cni_path,
        main: if role == Role::Meta { main } else { None },
    }
}

/// VERSION: the plugin's claimed versions, checked as Section 5 ("Version") describes them.
fn version_check(t: &Target, report: &mut Report) -> Option<Vec<String>> {
    let host = crate::TestHost::new();
    let call = invoke::Call { command: Some("VERSION"), container_id: None, netns: None, ifname: None, cni_path: &t.cni_path };
    let outcome = invoke::run(&t.plugin, &call, br#"{"cniVersion":"1.1.0"}"#, &host.ns).and_then(|reply| {
        let info = reply.json()?;
        let claimed: Vec<String> = info["supportedVersions"]
            .as_array()
            .ok_or_else(|| format!("no supportedVersions list: {info}"))?
            .iter()
            .map(|v| v.as_str().map(String::from).ok_or_else(|| format!("{v} is not a version string")))
            .collect::<Result<_, _>>()?;
        if let Some(bad) = claimed.iter().find(|v| Version::parse(v).is_err()) {
            return Err(format!("{bad:?} is not a semantic version"));
        }
        if !info["cniVersion"].is_string() {
            return Err(format!("no cniVersion in the answer: {info}"));
        }
        Ok(claimed)
    });
    match outcome {
        Ok(claimed) => {
            report.push("VERSION", "-", S_VERSION, Ok(format!("claims {}", claimed.join(", "))));
            Some(claimed)
        }
        Err(e) => {
            report.push("VERSION", "-", S_VERSION, Err(Verdict::Fail(e)));
            None
        }
    }
}

/// The claimed versions berth-conform can check (0.3.0 and later), or those asked for.
fn versions_to_run(claimed: &[String], opts: &Options, report: &mut Report) -> Vec<String> {
    let mut run = Vec::new();
    for v in claimed {
        let asked = opts.versions.as_ref().is_none_or(|list| list.contains(v));
        if !asked {
            continue;
        }
        if SUPPORTED.contains(&v.as_str()) {
            run.push(v.clone());
        } else {
            report.skip("all checks", v, S_VERSION, "results before 0.3.0 are not checked by berth-conform");
        }
    }
    for v in opts.versions.iter().flatten().filter(|v| !claimed.contains(v)) {
        report.skip("all checks", v, S_VERSION, "asked for, but the plugin does not claim it in VERSION");
    }
    run
}
