//! Open vSwitch for one test: ovsdb-server and ovs-vswitchd started in a test host's network
//! namespace with everything they write in a temporary directory, killed at the end. The
//! openvswitch datapath is a module this machine's kernel lacks: tests using this run in the
//! kernel lab (`lab::in_lab`).

use crate::{eventually, TestHost};
use berth_ovs::vswitch::Vswitch;
use serde_json::json;
use std::process::{Child, Stdio};
use std::time::Duration;

/// ovsdb-server and ovs-vswitchd for one test, in `host`'s namespace, with everything they
/// write in a temporary directory. Killed on drop (before the namespace goes).
pub struct OvsDaemons {
    children: Vec<(&'static str, Child)>,
    dir: tempfile::TempDir,
}

impl OvsDaemons {
    pub fn start(host: &TestHost) -> OvsDaemons {
        for module in ["openvswitch", "8021q"] {
            let status = std::process::Command::new("modprobe").arg(module).status().expect("run modprobe");
            assert!(status.success(), "modprobe {module}: {status}");
        }
        let dir = tempfile::Builder::new().prefix("berth-ovs-").tempdir().expect("temp dir");
        let mut daemons = OvsDaemons { children: Vec::new(), dir };
        let db = daemons.path("conf.db");
        let status = std::process::Command::new("ovsdb-tool")
            .args(["create", &db, "/usr/share/openvswitch/vswitch.ovsschema"])
            .status()
            .expect("run ovsdb-tool (apt-get install openvswitch-switch)");
        assert!(status.success(), "ovsdb-tool create: {status}");

        let remote = format!("--remote=punix:{}", daemons.path("db.sock"));
        daemons.spawn(host, "ovsdb-server", &[&db, &remote]);
        let endpoint = daemons.endpoint();
        assert!(
            eventually(Duration::from_secs(20), || Vswitch::connect(&endpoint).is_ok()),
            "ovsdb-server did not open {endpoint}"
        );
        // `ovs-vsctl init`: the one Open_vSwitch row.
        daemons
            .ovsdb()
            .transact(&[json!({"op": "insert", "table": "Open_vSwitch", "row": {}})])
            .expect("initialise the database");

        daemons.spawn(host, "ovs-vswitchd", &[&endpoint]);
        // Up once it has applied a configuration change.
        let mut ovs = daemons.ovsdb();
        let results = ovs
            .transact(&[
                json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]}),
                json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}),
            ])
            .expect("bump next_cfg");
        let cfg = results[1]["rows"][0]["next_cfg"].as_i64().expect("next_cfg");
        ovs.wait_applied(cfg, Duration::from_secs(60), None).unwrap_or_else(|e| panic!("ovs-vswitchd did not come up: {e}"));
        daemons
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// In the foreground (no --detach), so dropping the handle can kill it.
    fn spawn(&mut self, host: &TestHost, daemon: &'static str, args: &[&str]) {
        let mut cmd = std::process::Command::new(daemon);
        cmd.args(args)
            .arg(format!("--unixctl={}", self.path(&format!("{daemon}.ctl"))))
            .arg(format!("--pidfile={}", self.path(&format!("{daemon}.pid"))))
            .arg(format!("--log-file={}", self.path(&format!("{daemon}.log"))))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, self.dir.path());
        }
        host.ns.prepare_command(&mut cmd).expect("run in the test host");
        if daemon == "ovs-vswitchd" {
            with_clock_ahead(&mut cmd);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {daemon}: {e}"));
        self.children.push((daemon, child));
    }

    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.path("db.sock"))
    }

    pub fn ovsdb(&self) -> Vswitch {
        Vswitch::connect(&self.endpoint()).expect("connect to the test's ovsdb-server")
    }

    /// ovs-vsctl on this test's database, as an administrator would run it.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("ovs-vsctl")
            .arg(format!("--db={}", self.endpoint()))
            .args(args)
            .output()
            .expect("run ovs-vsctl");
        assert!(out.status.success(), "ovs-vsctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Names of the rows of `table` (Port, Interface, Bridge).
    pub fn names(&self, table: &str) -> Vec<String> {
        let results =
            self.ovsdb().transact(&[json!({"op": "select", "table": table, "where": [], "columns": ["name"]})]).unwrap();
        let mut names: Vec<String> =
            berth_ovs::ovsdb::rows(&results[0]).iter().filter_map(|r| r["name"].as_str().map(str::to_string)).collect();
        names.sort();
        names
    }
}

impl Drop for OvsDaemons {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for daemon in ["ovs-vswitchd", "ovsdb-server"] {
                let log = std::fs::read_to_string(self.path(&format!("{daemon}.log"))).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- {daemon}.log (tail)\n{}", lines[lines.len().saturating_sub(30)..].join("\n"));
            }
        }
        for (daemon, child) in self.children.iter_mut().rev() {
            if let Err(e) = child.kill().and_then(|()| child.wait().map(drop)) {
                eprintln!("cleanup: cannot stop {daemon}: {e}");
            }
        }
    }
}

/// Makes `cmd` run with its CLOCK_MONOTONIC a minute ahead, in a time namespace of its own.
///
/// ovs-vswitchd 3.1 counts the CPUs as 0 while its monotonic clock is below 10 s (it
/// refreshes the count every 10 s, starting from 0) and so, in per-CPU upcall dispatch,
/// starts no handler: no packet would ever get a flow. The lab's VM is younger than that when
/// the test starts; this spares waiting for it.
fn with_clock_ahead(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only raw syscalls on static strings between fork and exec. The namespace made
    // by unshare is for the children; setns puts this (single-threaded) process in it.
    unsafe {
        cmd.pre_exec(|| {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWTIME) != 0 {
                return fail();
            }
            let offsets = libc::open(c"/proc/self/timens_offsets".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let line = b"monotonic 60 0\n";
            if offsets < 0 || libc::write(offsets, line.as_ptr().cast(), line.len()) != line.len() as isize {
                return fail();
            }
            libc::close(offsets);
            let ns = libc::open(c"/proc/self/ns/time_for_children".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if ns < 0 || libc::setns(ns, libc::CLONE_NEWTIME) != 0 {
                return fail();
            }
            libc::close(ns);
            Ok(())
        });
    }
}

