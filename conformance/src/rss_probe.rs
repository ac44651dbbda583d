//! Peak RSS of plugin invocations, measured by `berth-rss-probe` (see that binary for why a
//! process of its own): every plugin of a set is linked, under its own name, to the probe in
//! a directory given to runtimes as CNI_PATH; the probes log each invocation's peak.

use crate::plugins::PluginSet;
use crate::TestHost;
use berth_util::tool::is_executable;
use std::path::PathBuf;

pub struct RssProbe {
    dir: PathBuf,
    log: PathBuf,
}

impl RssProbe {
    /// Links for every plugin of `set`, in `host`'s directory. The probes find the real
    /// plugins and their log through the environment, set here for the plugins this process
    /// starts: call it before the process has other threads.
    pub fn new(host: &TestHost, set: &PluginSet) -> RssProbe {
        let exe = std::env::current_exe().expect("own path");
        let probe = exe.with_file_name("berth-rss-probe");
        assert!(probe.is_file(), "{} is missing: cargo build --release --bins", probe.display());
        let dir = host.dir.path().join("rss-probe");
        std::fs::create_dir_all(&dir).expect("probe directory");
        for entry in std::fs::read_dir(&set.dir).expect("plugin directory").flatten() {
            if is_executable(&entry.path()) {
                std::os::unix::fs::symlink(&probe, dir.join(entry.file_name())).expect("probe link");
            }
        }
        let log = host.dir.path().join("rss-probe.log");
        std::env::set_var("BERTH_RSS_PROBE_PATH", std::env::join_paths(set.cni_path()).expect("CNI_PATH"));
        std::env::set_var("BERTH_RSS_PROBE_LOG", &log);
        RssProbe { dir, log }
    }

    /// The CNI_PATH that runs the set's plugins through the probes.
    pub fn cni_path(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }

    /// The largest peak RSS (kB) of the invocations since the last call; the log restarts.
    pub fn take_peak_kb(&self) -> i64 {
        let log = std::fs::read_to_string(&self.log).expect("the probes' log: no plugin ran through them");
        let _ = std::fs::remove_file(&self.log);
        log.lines().filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok()).max().expect("a probed plugin")
    }
}
