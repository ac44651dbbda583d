//! A real DHCP server for the DHCP tests and benchmark: dnsmasq (Debian `dnsmasq-base`) in
//! the foreground inside a test namespace, its lease file and log in a scratch directory;
//! and the guard that stops a DHCP lease keeper started by a plugin. Both stop on drop, even
//! when a test fails.

use crate::eventually;
use berth_netns::NetNs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A dnsmasq serving DHCP (no DNS) on one interface.
pub struct Dnsmasq {
    child: Option<Child>,
    ns_path: PathBuf,
    args: Vec<String>,
    pub lease_file: PathBuf,
    pub log_file: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq in the namespace at `ns_path`, on `interface` (which must have an
    /// address in the range's subnet), handing out `range` (`"10.0.0.50,10.0.0.150"`) for
    /// two minutes (dnsmasq's shortest lease); `extra` adds options (`--dhcp-option=...`).
    pub fn start(ns_path: &Path, interface: &str, range: &str, dir: &Path, extra: &[&str]) -> Dnsmasq {
        let lease_file = dir.join("dnsmasq.leases");
        let log_file = dir.join("dnsmasq.log");
        let mut args: Vec<String> = [
            "--conf-file=/dev/null",
            "--keep-in-foreground",
            "--port=0",
            "--bind-interfaces",
            "--user=root",
            "--no-ping",
            "--dhcp-authoritative",
            "--log-dhcp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--interface={interface}"));
        args.push(format!("--dhcp-range={range},2m"));
        args.push(format!("--dhcp-leasefile={}", lease_file.display()));
        args.push(format!("--log-facility={}", log_file.display()));
        args.push(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Dnsmasq { child: None, ns_path: ns_path.to_path_buf(), args, lease_file, log_file };
        server.restart();
        server
    }

    /// Starts it again (after [`Dnsmasq::stop`]) with the same options and lease file.
    pub fn restart(&mut self) {
        self.stop();
        let ns = NetNs::open(&self.ns_path).expect("dnsmasq's namespace");
        let mut cmd = Command::new("dnsmasq");
        cmd.args(&self.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        ns.prepare_command(&mut cmd).expect("namespace handle");
        let before = self.log().matches("started, version").count();
        let child = cmd.spawn().expect("run dnsmasq (apt-get install dnsmasq-base)");
        self.child = Some(child);
        // Ready once it has logged its start and its DHCP range.
        let ready = eventually(Duration::from_secs(5), || {
            let log = self.log();
            log.matches("started, version").count() > before && log.rsplit("started, version").next().is_some_and(|l| l.contains("DHCP, IP range"))
        });
        assert!(ready, "dnsmasq did not start: {}", self.log());
    }

    /// Kills it; its lease file stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The addresses the lease file holds now.
    pub fn leased(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.lease_file).unwrap_or_default();
        text.lines().filter_map(|l| l.split_whitespace().nth(2)).map(str::to_string).collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// How many DHCPACKs the log shows for `address` (the first one and every renewal).
    pub fn acks(&self, address: &str) -> usize {
        self.log().lines().filter(|l| l.contains("DHCPACK(") && l.contains(&format!(" {address} "))).count()
    }

    pub fn released(&self, address: &str) -> bool {
        self.log().lines().any(|l| l.contains("DHCPRELEASE(") && l.contains(&format!(" {address} ")))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops the lease keeper listening on `socket` (started detached by a plugin, so nobody's
/// child: found by its pid file) and removes its socket, state and lock, on drop.
pub struct KeeperGuard {
    pub socket: PathBuf,
}

impl KeeperGuard {
    pub fn new(socket: PathBuf) -> KeeperGuard {
        KeeperGuard { socket }
    }

    fn file(&self, suffix: &str) -> PathBuf {
        PathBuf::from(format!("{}.{suffix}", self.socket.display()))
    }

    /// The running keeper's process ID, from its pid file.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.file("pid")).ok()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// The lease files the keeper holds.
    pub fn state_files(&self) -> usize {
        std::fs::read_dir(self.file("leases")).map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count()).unwrap_or(0)
    }

    /// Kills the keeper (SIGKILL: it must survive that) and waits until it is gone.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            assert!(eventually(Duration::from_secs(5), || !alive(pid)), "keeper {pid} did not die");
        }
    }
}

impl Drop for KeeperGuard {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.file("leases"));
        for path in [self.socket.clone(), self.file("pid"), self.file("lock")] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether `pid` runs (a zombie waiting for init does not).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).is_some_and(|state| state != "Z"))
}
