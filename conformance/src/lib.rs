//! Test fixtures and the CNI conformance suite, for berth's plugins and the reference ones.
//!
//! Everything here needs root: it creates network namespaces. Nothing touches the machine's
//! own interfaces: plugins run inside a throwaway "host" namespace ([`TestHost`]) and
//! containers are further namespaces beside it, all removed when the fixture is dropped.

pub mod conform;
pub mod dns;
pub mod dnsmasq;
pub mod bench;
pub mod docker;
pub mod echo;
mod fixture;
pub mod image;
pub mod kill;
pub mod lab;
pub mod ovs;
pub mod plugins;
pub mod podman;
pub mod process;
pub mod rss_probe;
pub mod throughput;

pub use fixture::{require_root, Container, Outside, TestHost};

use berth_cni::spec::{RunResult, Version, SUPPORTED};
use std::path::Path;

/// The cniVersions both berth and `plugin` speak (asks the plugin with VERSION).
pub fn versions_of(plugin: &Path) -> Vec<&'static str> {
    let theirs = berth_cni::exec::plugin_versions(plugin).unwrap_or_else(|e| panic!("VERSION of {}: {e}", plugin.display()));
    SUPPORTED.iter().copied().filter(|v| theirs.iter().any(|t| t == v)).collect()
}

/// Parses an ADD's stdout, checking it is written in the version that was asked for: before
/// 1.0.0 every address carries its "version" ("4" or "6"), from 1.0.0 on none does.
pub fn parse_result(stdout: &[u8], version: &str) -> RunResult {
    parse_result_as(stdout, version, true)
}

/// As [`parse_result`]; with `strict` false the "version" tags are not checked (the reference
/// loopback plugin v1.1.1 leaves them out of 0.3.x/0.4.0 results).
pub fn parse_result_as(stdout: &[u8], version: &str, strict: bool) -> RunResult {
    let raw: serde_json::Value = serde_json::from_slice(stdout).expect("ADD prints JSON");
    assert_eq!(raw["cniVersion"], version, "result version");
    if strict {
        let tagged = raw["ips"].as_array().is_some_and(|ips| ips.iter().all(|ip| ip.get("version").is_some()));
        let v = Version::parse(version).expect("known version");
        assert_eq!(tagged, v < Version::V1_0_0, "ips carry \"version\" exactly before 1.0.0: {raw}");
    }
    RunResult::from_value(&raw).expect("result decodes")
}

/// Polls `done` until it holds or `timeout` passes; for effects the kernel applies
/// asynchronously (a deleted namespace's veths go away in a workqueue).
pub fn eventually(timeout: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
