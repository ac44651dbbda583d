//! Privileged end-to-end tests (root): Docker 20.10 (Debian's docker.io) as the real client of
//! `berth-volume serve`, the client the Docker volume plugin protocol was made for.
//!
//! Each test has a dockerd of its own (conformance's `DockerLab`: a throwaway network
//! namespace, its own data root and socket), its own endpoint, and a plugin spec file
//! `/etc/docker/plugins/NAME.spec` with a name of its own, removed on drop, through which
//! dockerd finds the endpoint. What a user sees is asserted: two containers see each other's
//! writes, `:ro` refuses writes, a volume in use cannot be removed, a loop volume refuses a
//! write past its size inside the container, data survives restarts of the endpoint and of
//! dockerd, and nothing is left mounted afterwards.

mod common;

use berth_conformance::docker::{DockerLab, IMAGE};
use common::{loop_devices_under, mounts_under, ServeProcess, TempDir};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where dockerd looks for plugin spec files (machine-wide: names must be unique).
const SPEC_DIR: &str = "/etc/docker/plugins";

/// A running endpoint, registered with Docker under a name of its own.
struct Endpoint {
    name: String,
    spec: PathBuf,
    server: Option<ServeProcess>,
    socket: PathBuf,
    state: PathBuf,
    dir: TempDir,
}

impl Endpoint {
    fn start() -> Endpoint {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("berth-t{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = TempDir::new("docker-vol");
        let (socket, state) = (dir.join("berth.sock"), dir.join("state"));
        std::fs::create_dir_all(SPEC_DIR).expect("mkdir /etc/docker/plugins");
        let spec = Path::new(SPEC_DIR).join(format!("{name}.spec"));
        std::fs::write(&spec, format!("unix://{}\n", socket.display())).expect("write the plugin spec");
        let mut endpoint = Endpoint { name, spec, server: None, socket, state, dir };
        endpoint.serve();
        endpoint
    }

    fn serve(&mut self) {
        let log = self.dir.join("serve.log");
        self.server = Some(ServeProcess::start(&self.socket, &self.state, &log));
    }

    /// SIGTERM, then a new process on the same socket and state.
    fn restart(&mut self) {
        let mut old = self.server.take().expect("running");
        assert!(old.terminate(), "the endpoint stops cleanly on SIGTERM: {}", old.log_text());
        self.serve();
    }

    fn volumes_dir(&self) -> PathBuf {
        self.state.join("volumes")
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spec);
        // The server goes first (SIGTERM), then the TempDir unmounts and detaches leftovers.
        self.server.take();
    }
}

/// The lab's dockerd and the endpoint; dropped dockerd first (its containers release their
/// mounts), then the endpoint.
struct Fixture {
    docker: DockerLab,
    berth: Endpoint,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { docker: DockerLab::new(), berth: Endpoint::start() }
    }

    /// `docker volume create -d NAME OPTIONS VOLUME`.
    fn create(&self, volume: &str, options: &[&str]) {
        let mut args = vec!["volume", "create", "-d", &self.berth.name];
        for option in options {
            args.extend_from_slice(&["-o", option]);
        }
        args.push(volume);
        self.docker.ok(&args);
    }

    /// A container holding `volume` at /data (`:ro` and the like in `mode`).
    fn holder(&self, name: &str, volume: &str, mode: &str) {
        let mount = format!("{volume}:/data{mode}");
        self.docker.ok(&["run", "-d", "--name", name, "-v", &mount, IMAGE, "sleep", "600"]);
    }

    fn sh(&self, container: &str, script: &str) -> std::process::Output {
        self.docker.exec(container, &["sh", "-c", script])
    }

    fn sh_ok(&self, container: &str, script: &str) -> String {
        let out = self.sh(container, script);
        assert!(out.status.success(), "{container}: {script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn assert_nothing_mounted(&self) {
        let dir = &self.berth.volumes_dir();
        assert!(mounts_under(dir).is_empty(), "still mounted: {:?}", mounts_under(dir));
        assert!(loop_devices_under(dir).is_empty(), "loop devices left: {:?}", loop_devices_under(dir));
    }
}

/// Shared by two containers at once, read-only where asked, not removable while in use.
fn shared_read_only_and_guarded(fx: &Fixture, volume: &str, options: &[&str]) {
    fx.create(volume, options);
    fx.holder("w1", volume, "");
    fx.holder("w2", volume, "");
    fx.sh_ok("w1", "echo from-w1 > /data/one");
    assert_eq!(fx.sh_ok("w2", "cat /data/one"), "from-w1", "{volume}: w2 sees w1's write");
    fx.sh_ok("w2", "echo from-w2 > /data/two");
    assert_eq!(fx.sh_ok("w1", "cat /data/two"), "from-w2", "{volume}: w1 sees w2's write");

    fx.holder("reader", volume, ":ro");
    assert_eq!(fx.sh_ok("reader", "cat /data/one"), "from-w1");
    let refused = fx.sh("reader", "echo x > /data/three");
    assert!(!refused.status.success(), "{volume}: a write through :ro succeeded");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Read-only"), "{}", String::from_utf8_lossy(&refused.stderr));

    let in_use = fx.docker.fails(&["volume", "rm", volume]);
    assert!(in_use.contains("in use"), "{volume}: {in_use}");
    fx.docker.ok(&["rm", "-f", "w1", "w2", "reader"]);
    fx.docker.ok(&["volume", "rm", volume]);
    fx.assert_nothing_mounted();
}

#[test]
fn named_bind_and_loop_volumes_are_shared_read_only_and_guarded_under_docker() {
    let fx = Fixture::new();
    shared_read_only_and_guarded(&fx, "shared-named", &[]);
    let source = fx.berth.dir.join("bind-source");
    std::fs::create_dir_all(&source).unwrap();
    shared_read_only_and_guarded(&fx, "shared-bind", &["type=bind", &format!("source={}", source.display())]);
    assert_eq!(std::fs::read_to_string(source.join("one")).unwrap().trim(), "from-w1", "a bind volume writes its source");
    assert!(source.join("two").exists(), "removing a bind volume keeps its source's data");
    shared_read_only_and_guarded(&fx, "shared-loop", &["type=loop", "size=16M"]);
}

#[test]
fn docker_inspect_ls_prune_anonymous_and_bad_options() {
    let fx = Fixture::new();
    fx.create("kept", &["type=loop", "size=16M"]);
    let inspect: serde_json::Value = serde_json::from_str(&fx.docker.ok(&["volume", "inspect", "kept"])).unwrap();
    let kept = &inspect[0];
    assert_eq!(kept["Driver"], fx.berth.name.as_str());
    let mountpoint = kept["Mountpoint"].as_str().unwrap_or_default();
    assert!(mountpoint.starts_with(&fx.berth.volumes_dir().display().to_string()), "Mountpoint as the local driver shows it: {kept}");
    assert_eq!(kept["Options"]["size"], "16M", "{kept}");
    assert!(kept["CreatedAt"].as_str().is_some_and(|c| !c.is_empty()), "{kept}");

    // `--volume-driver` makes the volumes of `-v NAME:/path` berth's, created on first use.
    fx.docker.ok(&["run", "--rm", "--volume-driver", &fx.berth.name, "-v", "implicit:/data", IMAGE, "sh", "-c", "echo hi > /data/f"]);
    let listed = fx.docker.ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    for volume in ["kept", "implicit"] {
        assert!(listed.contains(&format!("{} {volume}", fx.berth.name)), "{volume} listed: {listed}");
    }

    // Docker 20.10 prunes only its own `local` driver's volumes ("Remove all unused local
    // volumes"): a plugin's volumes stay, unused or not, and `docker volume rm` removes them.
    fx.holder("user", "kept", "");
    fx.docker.ok(&["volume", "create", "docker-local"]);
    fx.docker.ok(&["volume", "prune", "-f"]);
    let listed = fx.docker.ok(&["volume", "ls", "-q"]);
    assert!(!listed.contains("docker-local"), "prune ran: {listed}");
    assert!(listed.contains("kept") && listed.contains("implicit"), "prune leaves a plugin's volumes: {listed}");
    fx.docker.ok(&["volume", "rm", "implicit"]);
    assert!(fx.docker.fails(&["volume", "rm", "kept"]).contains("in use"));
    fx.docker.ok(&["rm", "-f", "user"]);
    fx.docker.ok(&["volume", "rm", "kept"]);
    assert!(!fx.docker.ok(&["volume", "ls", "-q"]).contains("kept"));

    let bad = fx.docker.fails(&["volume", "create", "-d", &fx.berth.name, "-o", "type=loop", "-o", "size=lots", "bad"]);
    assert!(bad.contains("size"), "berth's message reaches the docker user: {bad}");
    fx.assert_nothing_mounted();
}

#[test]
fn data_outlives_restarts_of_the_endpoint_and_of_dockerd_and_a_loop_volume_has_a_size() {
    let mut fx = Fixture::new();
    fx.create("disk", &["type=loop", "size=16M"]);
    fx.holder("holder", "disk", "");
    fx.sh_ok("holder", "echo kept > /data/f");
    let full = fx.sh("holder", "dd if=/dev/zero of=/data/big bs=1M count=32");
    assert!(!full.status.success(), "a write past 16M must fail");
    assert!(String::from_utf8_lossy(&full.stderr).contains("No space left"), "{}", String::from_utf8_lossy(&full.stderr));
    fx.sh_ok("holder", "rm /data/big");

    fx.berth.restart();
    assert_eq!(fx.sh_ok("holder", "cat /data/f"), "kept", "the holder keeps its data while the endpoint restarts");
    fx.docker.ok(&["rm", "-f", "holder"]);
    fx.assert_nothing_mounted();

    fx.docker.restart_daemon();
    let listed = fx.docker.ok(&["volume", "ls", "-q"]);
    assert!(listed.contains("disk"), "the volume is listed after dockerd restarted: {listed}");
    let again = fx.docker.ok(&["run", "--rm", "-v", "disk:/data", IMAGE, "cat", "/data/f"]);
    assert_eq!(again.trim(), "kept");
    fx.docker.ok(&["volume", "rm", "disk"]);
    fx.assert_nothing_mounted();
}
