//! podman 4 as a real CNI runtime for berth's plugins.
//!
//! A [`PodmanLab`] is a podman of its own whose containers live inside a throwaway host
//! network namespace H (a [`TestHost`]): every podman command runs as
//! `nsenter --net=/var/run/netns/H podman ...`, so podman creates its container namespaces from
//! H and runs the CNI plugins there; bridges, veths and firewall rules land in H, never on the
//! machine. H is wired to an "outside" namespace ([`TestHost::outside`]): published ports are
//! reached from there, and there masquerade shows ([`crate::echo`] tells the source it saw).
//!
//! podman is pointed at berth with a CONTAINERS_CONF file (the machine's /etc is never
//! edited): `network_backend = "cni"`, `cni_plugin_dirs` = the freshly built berth plugins then
//! /usr/lib/cni (the reference portmap, firewall and tuning), `network_config_dir` in the lab.
//! Besides `--root`, `--runroot` and `--tmpdir`, podman 4.3 and its helpers write to fixed
//! places whatever those say: the CNI result cache and host-local's default `dataDir` under
//! /var/lib/cni, a blob cache under /var/lib/containers, container namespaces under /run/netns,
//! runc's state under /run/runc, the lock segment /dev/shm/libpod_lock, and cgroups for every
//! container and its conmon. So all podman commands of a lab run in one private mount namespace,
//! held open by a helper process, with the lab's own folders mounted on /var/lib and /run and a
//! tmpfs on /dev/shm; containers get a cgroup parent named after the lab. Dropping the lab, even
//! when a test panics, removes the containers, the networks, every process started in that
//! mount namespace or cgroup, the cgroups, the folders and the namespaces.
//!
//! The image ([`IMAGE`], made of busybox-static) is imported once per test process into a
//! shared read-only image store (`vfs.imagestore`) that is removed when the process exits.

use crate::plugins::{berth_dir, REFERENCE_DIR};
use crate::process::{in_cgroup, processes, remove_cgroups, run_client, run_with_deadline, succeeded, text};
use crate::{eventually, image, Outside, TestHost};
use berth_netlink::{Link, Netlink};
use berth_netns::NetNs;
use ipnet::IpNet;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The image every lab can run: busybox-static and the applets the tests use.
pub const IMAGE: &str = "localhost/berth-bb:latest";
/// The longest a podman command may take before the test fails instead of hanging CI.
const PODMAN_DEADLINE: Duration = Duration::from_secs(120);
const INSTALL_HINT: &str = "apt-get install -y $(cat conformance/TEST-PACKAGES scripts/test-packages.txt)";

/// A podman with its own storage, configuration and private state, running containers in a
/// throwaway host namespace next to an outside namespace. Needs root.
pub struct PodmanLab {
    /// Holds the private mount namespace every podman command of this lab enters.
    helper: Option<Child>,
    /// `mnt:[inode]` of that namespace, to find the processes started in it.
    mount_ns: String,
    /// The cgroup parent of this lab's containers (conmon goes to `PARENT/conmon`).
    cgroup_parent: String,
    /// The namespace playing the rest of the world, wired to H.
    pub outside: Outside,
    /// Dropped last: its namespaces and its temp dir (the lab's folders) go after podman.
    pub host: TestHost,
}

impl PodmanLab {
    pub fn new() -> PodmanLab {
        crate::require_root();
        require_tools();
        image_store();
        let host = TestHost::new();
        let outside = host.outside();
        let cgroup_parent = format!("/{}", host.name);
        let mut lab = PodmanLab { helper: None, mount_ns: String::new(), cgroup_parent, outside, host };
        for dir in ["net.d", "varlib", "run", "root", "runroot", "tmp", "out"] {
            std::fs::create_dir_all(lab.path(dir)).unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
        }
        let network = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{}\"]\nnetwork_config_dir = \"{}\"\n",
            berth_dir().display(),
            REFERENCE_DIR,
            lab.path("net.d").display(),
        );
        let base = base_conf(&lab.path("tmp"));
        std::fs::write(lab.path("containers.conf"), format!("{base}{network}")).expect("write containers.conf");
        // For a plain `podman` (no --root, --runroot, --tmpdir) asking about the lab's
        // containers: the same places, in the configuration files.
        let client = format!("{base}tmp_dir = \"{}\"\n{network}", lab.path("tmp").display());
        std::fs::write(lab.path("client-containers.conf"), client).expect("write client-containers.conf");
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n[storage.options]\nadditionalimagestores = [\"{}\"]\n",
            lab.path("root").display(),
            lab.path("runroot").display(),
            image_store().display()
        );
        std::fs::write(lab.path("client-storage.conf"), storage).expect("write client-storage.conf");
        lab.start_helper();
        lab
    }

    /// `program` run where the lab's podman runs (its mount namespace and H), where a plain
    /// `podman` finds the lab's containers (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF): what a
    /// tool that asks podman about containers, such as `berth attach`, sees.
    pub fn command_inside(&self, program: &Path) -> Command {
        let helper = self.helper.as_ref().expect("the lab's mount namespace is up");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", helper.id()))
            .arg(format!("--net={}", self.host.path().display()))
            .arg(program)
            .env("CONTAINERS_CONF", self.path("client-containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("client-storage.conf"));
        cmd
    }

    /// A path in the lab's folder.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.host.dir.path().join(relative)
    }

    /// The private mount namespace: the lab's `varlib` on /var/lib, `run` on /run (with an
    /// empty netns folder), a tmpfs on /dev/shm. The helper dies with the thread that made it.
    fn start_helper(&mut self) {
        let script = r#"mount --bind "$1" /var/lib && mount --bind "$2" /run && mkdir -p /run/netns &&
            mount -t tmpfs -o mode=1777 berth-podman-shm /dev/shm && echo ready && exec sleep infinity"#;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "slave", "--", "sh", "-c", script, "sh"])
            .arg(self.path("varlib"))
            .arg(self.path("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut helper = cmd.spawn().unwrap_or_else(|e| panic!("start unshare (util-linux): {e}; {INSTALL_HINT}"));
        let mut line = String::new();
        let stdout = helper.stdout.take().expect("helper stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = helper.kill();
            let mut err = String::new();
            if let Some(mut stderr) = helper.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            let _ = helper.wait();
            panic!("cannot set up podman's private mount namespace: {err}");
        }
        let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", helper.id()));
        self.helper = Some(helper);
        let ns = ns.expect("the helper's mount namespace");
        self.mount_ns = ns.display().to_string();
        let own = std::fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        assert_ne!(ns, own, "the helper must hold a mount namespace of its own");
    }

    fn podman_command(&self, args: &[&str]) -> Command {
        let helper = self.helper.as_ref().expect("the lab's mount namespace is up");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", helper.id()))
            .arg(format!("--net={}", self.host.path().display()))
            .arg("podman")
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .args(["--storage-driver", "vfs", "--storage-opt"])
            .arg(format!("vfs.imagestore={}", image_store().display()))
            .args(args)
            .env("CONTAINERS_CONF", self.path("containers.conf"));
        cmd
    }

    /// Runs `podman ARGS` in the lab, or says why it could not finish.
    pub fn try_podman(&self, args: &[&str]) -> Result<Output, String> {
        run_client("podman", self.podman_command(args), args, &self.path("out"), PODMAN_DEADLINE)
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        self.try_podman(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `podman ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded("podman", args, &self.podman(args))
    }

    /// `podman run --pull never --cgroup-parent LAB ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["run", "--pull", "never", "--cgroup-parent", &self.cgroup_parent];
        full.extend_from_slice(args);
        self.podman(&full)
    }

    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman run {} failed ({}): {}", args.join(" "), out.status, text(&out.stderr));
        text(&out.stdout)
    }

    /// Starts `sleep 600` as `name` on `networks` (podman's `--network a,b`), allowed to ping;
    /// returns the container ID.
    pub fn start_sleeper(&self, name: &str, networks: &str) -> String {
        self.run_ok(&["-d", "--name", name, "--network", networks, "--cap-add", "NET_RAW", IMAGE, "sleep", "600"])
            .trim()
            .to_string()
    }

    pub fn exec(&self, name: &str, command: &[&str]) -> Output {
        let mut full = vec!["exec", name];
        full.extend_from_slice(command);
        self.podman(&full)
    }

    /// Whether one ping from inside `name` to `to` is answered within two seconds.
    pub fn pings(&self, name: &str, to: IpAddr) -> bool {
        self.exec(name, &["ping", "-c", "1", "-W", "2", &to.to_string()]).status.success()
    }

    /// `podman inspect NAME`, the container's object.
    pub fn inspect(&self, name: &str) -> Value {
        let out = self.ok(&["inspect", "--type", "container", name]);
        let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("podman inspect {name}: {e}: {out}"));
        all[0].clone()
    }

    /// The address podman reports for `name` on `network`.
    pub fn address_on(&self, name: &str, network: &str) -> IpAddr {
        self.network_setting(name, network, "IPAddress")
    }

    pub fn gateway_on(&self, name: &str, network: &str) -> IpAddr {
        self.network_setting(name, network, "Gateway")
    }

    fn network_setting(&self, name: &str, network: &str, key: &str) -> IpAddr {
        let settings = &self.inspect(name)["NetworkSettings"]["Networks"][network];
        let value = settings[key].as_str().unwrap_or_default();
        value.parse().unwrap_or_else(|_| panic!("podman inspect {name}: no {key} on {network}: {settings}"))
    }

    /// The network namespace of a running container, by its PID.
    pub fn netns_of(&self, name: &str) -> NetNs {
        let pid = self.inspect(name)["State"]["Pid"].as_u64().unwrap_or(0);
        assert!(pid > 0, "{name} is not running");
        NetNs::open(format!("/proc/{pid}/ns/net")).unwrap_or_else(|e| panic!("netns of {name}: {e}"))
    }

    /// The host end (in H) of the veth whose container end is `ifname` in `name`.
    pub fn host_end(&self, name: &str, ifname: &str) -> Link {
        let mut nl = Netlink::open_in(&self.netns_of(name)).expect("netlink in the container");
        let inside = nl.link_by_name(ifname).expect("links").unwrap_or_else(|| panic!("{name} has no {ifname}"));
        let peer = inside.peer_index.unwrap_or_else(|| panic!("{name}'s {ifname} is not a veth"));
        self.host.netlink().link_by_index(peer).expect("links").unwrap_or_else(|| panic!("no host end for {name}'s {ifname}"))
    }

    /// The veths in H that lead to containers (not the one to the outside).
    pub fn host_veths(&self) -> Vec<Link> {
        let mut hnl = self.host.netlink();
        let uplink = IpAddr::from(self.outside.host_v4);
        let addresses = hnl.addresses(None).expect("addresses in H");
        let uplinks: Vec<u32> = addresses.iter().filter(|(_, a)| a.addr() == uplink).map(|(index, _)| *index).collect();
        let links = hnl.links().expect("links in H");
        links.into_iter().filter(|l| l.kind.as_deref() == Some("veth") && !uplinks.contains(&l.index)).collect()
    }

    /// Writes `conflist` into podman's network config dir as `NAME.conflist`.
    pub fn write_network(&self, conflist: &Value) {
        let name = conflist["name"].as_str().expect("a conflist has a name");
        let text = serde_json::to_string_pretty(conflist).expect("serialize conflist");
        std::fs::write(self.network_file(name), text).expect("write conflist");
    }

    /// The conflist of network `name`, as it is on disk.
    pub fn network_conf(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.network_file(name)).unwrap_or_else(|e| panic!("read {name}.conflist: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.conflist: {e}"))
    }

    /// `podman network create NAME` (podman writes a conflist for the reference plugins); the
    /// conflist it wrote.
    pub fn create_network(&self, name: &str) -> Value {
        self.ok(&["network", "create", name]);
        self.network_conf(name)
    }

    fn network_file(&self, name: &str) -> PathBuf {
        self.path("net.d").join(format!("{name}.conflist"))
    }

    /// The first subnet of the network's IPAM ranges.
    pub fn subnet_of(&self, network: &str) -> IpNet {
        let conf = self.network_conf(network);
        let subnet = conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"].as_str().unwrap_or_default();
        subnet.parse().unwrap_or_else(|_| panic!("{network} has no IPAM subnet: {conf}"))
    }

    /// The addresses host-local (berth's or the reference) holds for `network`, from its
    /// default `dataDir` (/var/lib/cni/networks, the lab's own here).
    pub fn allocations(&self, network: &str) -> Vec<IpAddr> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir(network)) else { return Vec::new() };
        entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
    }

    /// The container ID host-local recorded for `address`.
    pub fn allocation_owner(&self, network: &str, address: IpAddr) -> Option<String> {
        let text = std::fs::read_to_string(self.ipam_dir(network).join(address.to_string())).ok()?;
        text.lines().next().map(|l| l.trim().to_string())
    }

    fn ipam_dir(&self, network: &str) -> PathBuf {
        self.path("varlib/cni/networks").join(network)
    }

    /// The results podman's libcni caches (`NETWORK-CONTAINERID-IFNAME`) until DEL.
    pub fn cached_results(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path("varlib/cni/results")) else { return Vec::new() };
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    }

    /// The network namespaces podman holds (in the lab's own /run/netns).
    pub fn podman_netns(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path("run/netns")) else { return Vec::new() };
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    }

    /// An HTTP GET of `/` from the outside namespace to the host's address on `port`: the
    /// body, or why there is none.
    pub fn http_get_from_outside(&self, port: u16, timeout: Duration) -> std::io::Result<String> {
        let ns = NetNs::open(&self.outside.world.path).map_err(std::io::Error::other)?;
        let to = SocketAddr::from((self.outside.host_v4, port));
        let mut stream = ns.run(|| TcpStream::connect_timeout(&to, timeout)).map_err(std::io::Error::other)??;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: berth\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.lines().next().is_some_and(|l| l.contains(" 200 ")) => {
                Ok(body.to_string())
            }
            _ => Err(std::io::Error::other(format!("not an HTTP 200 answer: {response:?}"))),
        }
    }

    /// Network names of the conflists in the lab's config dir.
    fn network_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path("net.d")) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "conflist"))
            .filter_map(|e| {
                let conf: Value = serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
                conf["name"].as_str().map(str::to_string)
            })
            .collect()
    }

    /// Processes this lab started that are still there: anything in its mount namespace but
    /// the helper (podman, conmon, plugins), anything in its cgroups (containers).
    fn leftover_processes(&self) -> Vec<i32> {
        let helper = self.helper.as_ref().map(|h| h.id() as i32);
        processes(|pid| {
            let in_ns = !self.mount_ns.is_empty()
                && std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns.display().to_string() == self.mount_ns);
            Some(pid) != helper && (in_ns || in_cgroup(pid, &self.cgroup_parent))
        })
    }

}

impl Default for PodmanLab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PodmanLab {
    fn drop(&mut self) {
        if self.helper.is_some() {
            // Containers first (their teardown runs the plugins' DEL), then the networks.
            if let Err(e) = self.try_podman(&["rm", "--all", "--force", "--time", "0"]) {
                eprintln!("cleanup: {e}");
            }
            for name in self.network_names() {
                let _ = self.try_podman(&["network", "rm", "--force", &name]);
            }
        }
        let mut left = self.leftover_processes();
        for pid in &left {
            // SAFETY: kill has no memory-safety preconditions; these are processes this lab started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if !eventually(Duration::from_secs(10), || {
            left = self.leftover_processes();
            left.is_empty()
        }) {
            eprintln!("cleanup: processes of the podman lab still running: {left:?}");
        }
        if let Some(mut helper) = self.helper.take() {
            let _ = helper.kill();
            let _ = helper.wait();
        }
        remove_cgroups(&self.cgroup_parent);
        // Then `outside` and `host`: the namespaces, and the temp dir with the lab's folders.
    }
}

/// The conflist podman wrote for the reference plugins, with berth's in their place: only
/// `type` changes (`bridge` → `berth-bridge`, `host-local` → `berth-host-local`, also inside
/// `ipam`); the rest of the chain (portmap, firewall, tuning) stays the reference plugins'.
pub fn berth_types(conflist: &Value) -> Value {
    fn rename(kind: &mut Value) {
        let berth = match kind.as_str() {
            Some("bridge") => "berth-bridge",
            Some("host-local") => "berth-host-local",
            _ => return,
        };
        *kind = Value::from(berth);
    }
    let mut out = conflist.clone();
    if let Some(plugins) = out["plugins"].as_array_mut() {
        for plugin in plugins {
            rename(&mut plugin["type"]);
            if let Some(ipam) = plugin.get_mut("ipam") {
                rename(&mut ipam["type"]);
            }
        }
    }
    out
}

/// As [`berth_types`], and berth-bridge takes the `portMappings` capability itself: the
/// reference `portmap` entry is dropped (declaring the capability on both would map twice).
pub fn berth_types_own_ports(conflist: &Value) -> Value {
    let mut out = berth_types(conflist);
    if let Some(plugins) = out["plugins"].as_array_mut() {
        plugins.retain(|p| p["type"] != "portmap");
        for plugin in plugins.iter_mut().filter(|p| p["type"] == "berth-bridge") {
            plugin["capabilities"] = serde_json::json!({"portMappings": true});
        }
    }
    out
}

/// The graph root holding [`IMAGE`], imported once per test process and removed at its exit.
pub fn image_store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-podman-images-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = import_image(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("cannot import {IMAGE}: {e}");
        }
        let _ = IMAGE_STORE_DIR.set(dir.clone());
        // SAFETY: registers a plain function without arguments, run once at exit.
        unsafe { libc::atexit(remove_image_store) };
        dir.join("root")
    })
}

static IMAGE_STORE_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_image_store() {
    if let Some(dir) = IMAGE_STORE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `podman import` of a rootfs made of /bin/busybox (busybox-static) and applet links. It
/// runs in a private mount namespace with tmpfs on /var/lib (podman's blob cache), /run and
/// /dev/shm, so it leaves nothing outside `dir`.
fn import_image(dir: &Path) -> Result<(), String> {
    for sub in ["tmp", "net.d"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
    }
    let tarball = image::busybox_tarball(dir)?;
    // The network settings too: podman sets up its network backend even to import, and would
    // otherwise leave a cni.lock in /etc/cni/net.d.
    let conf = dir.join("containers.conf");
    let settings = format!(
        "{}[network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}\"\n",
        base_conf(&dir.join("tmp")),
        dir.join("net.d").display()
    );
    std::fs::write(&conf, settings).map_err(|e| format!("write {}: {e}", conf.display()))?;
    let mut import = Command::new("unshare");
    import
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            r#"mount -t tmpfs berth-podman /var/lib && mount -t tmpfs berth-podman /run &&
            mount -t tmpfs -o mode=1777 berth-podman /dev/shm && exec "$@""#,
        )
        .args(["sh", "podman", "--root"])
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .args(["--storage-driver", "vfs", "import"])
        .arg(&tarball)
        .arg(IMAGE)
        .env("CONTAINERS_CONF", &conf);
    let imported = run_with_deadline(import, &dir.join("import"), PODMAN_DEADLINE)?;
    if !imported.status.success() {
        return Err(format!("podman import: {}", text(&imported.stderr)));
    }
    Ok(())
}

/// What works on this kind of host (runc, cgroupfs, lowered ulimits: see the shared notes),
/// with podman's temporary copies in `tmp`.
fn base_conf(tmp: &Path) -> String {
    format!(
        r#"[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "{}"
"#,
        tmp.display()
    )
}

fn require_tools() {
    for tool in ["podman", "runc", "nsenter", "unshare", "tar", "iptables"] {
        assert!(berth_util::tool::find(tool).is_some(), "the podman tests need {tool}: {INSTALL_HINT}");
    }
    assert!(Path::new("/bin/busybox").is_file(), "the podman tests need /bin/busybox: {INSTALL_HINT}");
    assert!(Path::new(REFERENCE_DIR).join("portmap").is_file(), "the podman tests need the reference plugins: {INSTALL_HINT}");
}
