//! Where the plugin binaries under test live, and the berth / reference pairs.

use std::path::PathBuf;

/// The reference plugins from Debian's containernetworking-plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// The newest reference plugins (v1.9.1, built from source): `REF_PLUGINS_DIR`, else
/// `shared/ref-plugins` beside the checkout (where CI and the sessions have it).
pub fn reference_v191_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("REF_PLUGINS_DIR") {
        return PathBuf::from(dir);
    }
    let beside = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ref-plugins");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/ref-plugins")
}

/// The directory cargo built berth's binaries into (`target/debug` or `target/release`),
/// found from the running executable; `BERTH_BIN_DIR` overrides it.
pub fn berth_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current executable");
    let mut dir = exe.parent().expect("executable has a directory").to_path_buf();
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let probe = dir.join("berth-bridge");
    assert!(
        probe.is_file(),
        "{} is missing: build the plugins first (`cargo build --workspace --bins`) or set BERTH_BIN_DIR",
        probe.display()
    );
    dir
}

/// A set of plugins that do the same job, so one suite can run over berth and the reference.
#[derive(Debug, Clone)]
pub struct PluginSet {
    pub label: &'static str,
    pub dir: PathBuf,
    pub bridge: &'static str,
    pub host_local: &'static str,
    pub static_ipam: &'static str,
    pub loopback: &'static str,
}

impl PluginSet {
    pub fn berth() -> PluginSet {
        PluginSet {
            label: "berth",
            dir: berth_dir(),
            bridge: "berth-bridge",
            host_local: "berth-host-local",
            static_ipam: "berth-static",
            loopback: "berth-none",
        }
    }

    pub fn reference() -> PluginSet {
        let dir = PathBuf::from(REFERENCE_DIR);
        assert!(
            dir.join("bridge").is_file(),
            "the reference plugins are missing: apt-get install containernetworking-plugins"
        );
        PluginSet { label: "reference", dir, bridge: "bridge", host_local: "host-local", static_ipam: "static", loopback: "loopback" }
    }

    pub fn cni_path(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}
