//! Docker 20.10 (Debian's `docker.io`) as a real client of berth: containers wired by berth,
//! volumes served by berth's endpoint.
//!
//! A [`DockerLab`] is a dockerd of its own inside a throwaway host network namespace H (a
//! [`TestHost`]), with its data root, exec root, pid file and socket in the lab's temporary
//! folder, vfs storage, and its containers under a cgroup parent named after the lab. By
//! default it runs with `--bridge none --iptables=false`, so it neither makes `docker0` nor
//! touches any firewall; [`DockerLab::with_bridge`] lets a test have Docker's own bridge (in H).
//! Tests drive Docker as a user does, through the CLI at `/usr/bin/docker -H unix://SOCKET`
//! (another `docker` may come first in PATH).
//!
//! Dropping the lab, even when a test panics, removes every container, stops dockerd (and the
//! containerd it started), kills what is left in the lab's cgroups, unmounts what dockerd left
//! under its folders, and removes the cgroups, the folders and the namespaces.

use crate::process::{in_cgroup, mentions, processes, remove_cgroups, run_client, succeeded, text};
use crate::{eventually, image, TestHost};
use berth_netns::NetNs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The Docker CLI of Debian's docker.io (not whatever `docker` comes first in PATH).
pub const DOCKER: &str = "/usr/bin/docker";
/// The image every lab has: busybox-static and the applets the tests use.
pub const IMAGE: &str = "localhost/berth-bb:latest";
/// The longest one docker command may take before the test fails instead of hanging CI.
const DOCKER_DEADLINE: Duration = Duration::from_secs(120);
const INSTALL_HINT: &str = "apt-get install -y $(cat conformance/TEST-PACKAGES scripts/test-packages.txt)";

/// How the lab's dockerd is started.
#[derive(Debug, Clone, Copy, Default)]
struct DaemonOptions {
    /// Docker's own `docker0` bridge and its iptables rules (in H).
    own_bridge: bool,
}

/// A dockerd of its own, with containers in a throwaway host namespace. Needs root.
pub struct DockerLab {
    daemon: Option<Child>,
    options: DaemonOptions,
    /// The cgroup parent of this lab's containers.
    cgroup_parent: String,
    /// Dropped last: its namespace and its temp dir (the lab's folders) go after dockerd.
    pub host: TestHost,
}

impl DockerLab {
    /// A dockerd with `--bridge none --iptables=false`: containers get only what berth gives.
    pub fn new() -> DockerLab {
        Self::start(DaemonOptions::default())
    }

    /// A dockerd with its own bridge and iptables rules, inside H.
    pub fn with_bridge() -> DockerLab {
        Self::start(DaemonOptions { own_bridge: true })
    }

    fn start(options: DaemonOptions) -> DockerLab {
        crate::require_root();
        require_tools();
        let host = TestHost::new();
        let cgroup_parent = format!("/{}", host.name);
        let mut lab = DockerLab { daemon: None, options, cgroup_parent, host };
        for dir in ["root", "exec", "out", "image"] {
            std::fs::create_dir_all(lab.path(dir)).unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
        }
        lab.start_daemon();
        lab.import_image();
        lab
    }

    /// A path in the lab's folder.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.host.dir.path().join(relative)
    }

    /// The daemon's socket, for `DOCKER_HOST=unix://...` (what `berth` resolves names through).
    pub fn socket(&self) -> PathBuf {
        self.path("docker.sock")
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn start_daemon(&mut self) {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host.path().display()))
            .arg("dockerd")
            .arg("--data-root")
            .arg(self.path("root"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("docker.pid"))
            .arg("-H")
            .arg(self.docker_host())
            .args(["--storage-driver", "vfs", "--cgroup-parent", &self.cgroup_parent]);
        if !self.options.own_bridge {
            cmd.args(["--bridge", "none", "--iptables=false", "--ip-masq=false"]);
        }
        let log = std::fs::File::create(self.path("dockerd.log")).expect("create dockerd.log");
        let log2 = log.try_clone().expect("dup dockerd.log");
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        self.daemon = Some(cmd.spawn().unwrap_or_else(|e| panic!("start dockerd: {e}; {INSTALL_HINT}")));
        let ready = eventually(Duration::from_secs(30), || {
            self.try_docker(&["version", "--format", "{{.Server.Version}}"]).is_ok_and(|o| o.status.success())
        });
        if !ready {
            let log = std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
            panic!("dockerd did not answer within 30 s:\n{log}");
        }
    }

    /// Stops dockerd (SIGTERM, as `systemctl stop docker` does) and starts it again on the
    /// same folders: what a restarted daemon keeps.
    pub fn restart_daemon(&mut self) {
        self.stop_daemon();
        self.start_daemon();
    }

    fn stop_daemon(&mut self) {
        let Some(mut daemon) = self.daemon.take() else { return };
        // dockerd runs under nsenter, which execs it: the child is dockerd itself.
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        let stopped = eventually(Duration::from_secs(20), || daemon.try_wait().is_ok_and(|s| s.is_some()));
        if !stopped {
            eprintln!("cleanup: dockerd did not stop within 20 s; killing it");
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }

    /// `tar | docker import` of a rootfs made of busybox-static and applet links.
    fn import_image(&self) {
        let tarball = image::busybox_tarball(&self.path("image")).unwrap_or_else(|e| panic!("{e}"));
        self.ok(&["import", &tarball.display().to_string(), IMAGE]);
    }

    fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("-H").arg(self.docker_host()).args(args);
        cmd
    }

    /// Runs `docker ARGS`, or says why it could not finish.
    pub fn try_docker(&self, args: &[&str]) -> Result<Output, String> {
        run_client("docker", self.docker_command(args), args, &self.path("out"), DOCKER_DEADLINE)
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.try_docker(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `docker ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded("docker", args, &self.docker(args))
    }

    /// `docker ARGS`, which must fail; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(!out.status.success(), "docker {} succeeded: {}", args.join(" "), text(&out.stdout));
        text(&out.stderr)
    }

    /// Starts `sleep 600` as `name` with `--network NETWORK` (`none`, `container:web`, ...),
    /// allowed to ping; returns the container ID.
    pub fn start_sleeper(&self, name: &str, network: &str, extra: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", network, "--cap-add", "NET_RAW"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "600"]);
        self.ok(&args).trim().to_string()
    }

    pub fn exec(&self, name: &str, command: &[&str]) -> Output {
        let mut full = vec!["exec", name];
        full.extend_from_slice(command);
        self.docker(&full)
    }

    /// Whether one ping from inside `name` to `to` is answered within two seconds.
    pub fn pings(&self, name: &str, to: std::net::IpAddr) -> bool {
        self.exec(name, &["ping", "-c", "1", "-W", "2", &to.to_string()]).status.success()
    }

    /// `docker inspect -f FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name]).trim().to_string()
    }

    /// The PID of a running container's first process.
    pub fn pid_of(&self, name: &str) -> u32 {
        let pid: u32 = self.inspect(name, "{{.State.Pid}}").parse().unwrap_or(0);
        assert!(pid > 0, "{name} is not running");
        pid
    }

    /// The network namespace of a running container.
    pub fn netns_of(&self, name: &str) -> NetNs {
        let pid = self.pid_of(name);
        NetNs::open(format!("/proc/{pid}/ns/net")).unwrap_or_else(|e| panic!("netns of {name}: {e}"))
    }

    fn remove_all_containers(&self) {
        let Ok(listed) = self.try_docker(&["ps", "-aq"]) else { return };
        let ids: Vec<String> = text(&listed.stdout).split_whitespace().map(str::to_string).collect();
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        if let Err(e) = self.try_docker(&args) {
            eprintln!("cleanup: {e}");
        }
    }

    /// Processes of this lab still running: containerd and its shims (their command lines
    /// name the lab's folders), containers (in the lab's cgroups).
    fn leftover_processes(&self) -> Vec<i32> {
        let dir = self.host.dir.path().display().to_string();
        processes(|pid| in_cgroup(pid, &self.cgroup_parent) || mentions(pid, &dir))
    }

    /// What dockerd left mounted under the lab's folders (container rootfs, netns files).
    fn unmount_leftovers(&self) {
        let dir = self.host.dir.path().display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> =
            mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&dir)).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Default for DockerLab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            self.remove_all_containers();
        }
        self.stop_daemon();
        // containerd and its shims outlive dockerd's SIGTERM for a moment; containers whose
        // removal failed are still in the lab's cgroups.
        let mut left = self.leftover_processes();
        for pid in &left {
            // SAFETY: kill has no memory-safety preconditions; these are processes this lab started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if !eventually(Duration::from_secs(10), || {
            left = self.leftover_processes();
            left.is_empty()
        }) {
            eprintln!("cleanup: processes of the docker lab still running: {left:?}");
        }
        self.unmount_leftovers();
        remove_cgroups(&self.cgroup_parent);
        // Then `host`: the namespace, and the temp dir with the lab's folders.
    }
}

fn require_tools() {
    for tool in ["dockerd", "containerd", "runc", "nsenter", "tar"] {
        assert!(berth_util::tool::find(tool).is_some(), "the docker tests need {tool}: {INSTALL_HINT}");
    }
    assert!(Path::new(DOCKER).is_file(), "the docker tests need {DOCKER} (docker.io): {INSTALL_HINT}");
    assert!(Path::new("/bin/busybox").is_file(), "the docker tests need /bin/busybox: {INSTALL_HINT}");
}
