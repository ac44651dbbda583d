//! Privileged end-to-end tests (root): podman 4 as the real client of `berth-volume serve`,
//! for `loop`, `named` and `bind` volumes. What a user sees is asserted: the write past
//! the size fails inside the container, data outlives the container and a restart of the
//! server, and `podman volume rm` leaves no loop device, mount or file behind.
//!
//! Each test has its own podman (CONTAINERS_CONF in a temp dir, its own --root, --runroot
//! and --tmpdir, vfs storage so podman makes no overlay mounts, an image imported from
//! busybox-static) and its own server. Packages: volumes/TEST-PACKAGES.

mod common;

use common::{loop_devices_under, mounts_under, require_root, wait_until, ServeProcess, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const APPLETS: &[&str] = &["sh", "cat", "echo", "dd", "ls", "sleep", "df", "sync", "test"];
const IMAGE: &str = "localhost/berth-bb:latest";

struct PodmanLab {
    server: Option<ServeProcess>,
    socket: PathBuf,
    state: PathBuf,
    conf: PathBuf,
    dir: TempDir,
}

impl PodmanLab {
    /// `tag` names the temp dir: short, since podman refuses a runroot over 50 characters.
    fn new(test: &str, tag: &str) -> PodmanLab {
        require_root(test);
        for tool in ["podman", "runc"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
            assert!(
                found.is_ok_and(|o| o.status.success()),
                "{test} needs {tool}: apt-get install -y $(cat volumes/TEST-PACKAGES)"
            );
        }
        let dir = TempDir::new(tag);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir rootfs");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox (apt-get install busybox-static)");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
        }
        let socket = dir.join("berth.sock");
        let state = dir.join("state");
        let conf = dir.join("containers.conf");
        let net = dir.join("net.d");
        std::fs::create_dir_all(&net).expect("mkdir net.d");
        // Lowered ulimits, runc and cgroupfs: what works on this host (shared notes); the
        // CNI config dir in the temp dir so podman leaves nothing in /etc.
        let settings = format!(
            r#"[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[network]
network_backend = "cni"
network_config_dir = "{net}"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[engine.volume_plugins]
berth = "{socket}"
"#,
            net = net.display(),
            socket = socket.display()
        );
        std::fs::write(&conf, settings).expect("write containers.conf");
        let server = ServeProcess::start(&socket, &state, &dir.join("server.log"));
        let lab = PodmanLab { server: Some(server), socket, state, conf, dir };
        lab.import_image(&rootfs);
        lab
    }

    /// `podman import` of the rootfs. podman 4.3 keeps a blob cache in /var/lib/containers
    /// whatever --root says, so the import runs in a private mount namespace with a tmpfs
    /// on /var/lib: the cache vanishes with it and nothing is left on the host.
    fn import_image(&self, rootfs: &Path) {
        let tarball = self.dir.join("rootfs.tar");
        let tar = Command::new("tar").arg("-C").arg(rootfs).arg("-cf").arg(&tarball).arg(".").status().expect("tar");
        assert!(tar.success(), "tar of the rootfs");
        let tarball = tarball.display().to_string();
        let imported = self.podman_in(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount -t tmpfs berth-podman-cache /var/lib && exec "$@""#)
                .args(["sh", "podman"]),
            &["import", &tarball, IMAGE],
        );
        assert!(imported.status.success(), "podman import: {}", String::from_utf8_lossy(&imported.stderr));
    }

    fn podman(&self, args: &[&str]) -> Output {
        self.podman_in(&mut Command::new("podman"), args)
    }

    /// Runs `command` (podman, or a wrapper that ends in podman) with this lab's settings.
    fn podman_in(&self, command: &mut Command, args: &[&str]) -> Output {
        command
            .env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("run podman")
    }

    /// Runs podman and requires success, returning stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.podman(args);
        assert!(
            output.status.success(),
            "podman {args:?} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.server_log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `podman run --name NAME --network none -v VOLUME IMAGE sh -c SCRIPT`.
    fn run(&self, name: &str, volume: &str, script: &str) -> Output {
        self.podman(&["run", "--name", name, "--network", "none", "-v", volume, IMAGE, "sh", "-c", script])
    }

    fn server_log(&self) -> String {
        self.server.as_ref().map(ServeProcess::log_text).unwrap_or_default()
    }

    /// SIGTERM, a clean exit, and a new server on the same state.
    fn restart_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            assert!(server.terminate(), "server exits cleanly on SIGTERM: {}", server.log_text());
            assert!(server.log_text().contains("SIGTERM received"), "{}", server.log_text());
        }
        self.server = Some(ServeProcess::start(&self.socket, &self.state, &self.dir.join("server-2.log")));
    }

    fn assert_nothing_left(&self, volume: &str) {
        assert_eq!(self.ok(&["volume", "ls", "-q"]).trim(), "", "podman lists no volume");
        wait_until("loop devices detached", Duration::from_secs(5), || loop_devices_under(&self.dir.path).is_empty());
        assert_eq!(mounts_under(&self.state), Vec::<PathBuf>::new(), "no mount left under the state dir");
        let leftovers: Vec<String> = std::fs::read_dir(self.state.join("volumes"))
            .expect("volumes dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(leftovers.is_empty(), "no volume directory left: {leftovers:?}");
        assert!(!self.state.join("locks").join(format!("{volume}.lock")).exists(), "no lock file left");
    }
}

impl Drop for PodmanLab {
    fn drop(&mut self) {
        // Containers first (they hold volumes), then volumes while the server still answers.
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["volume", "rm", "--all", "--force"]);
        if let Some(mut server) = self.server.take() {
            server.terminate();
        }
        // `dir`'s own drop then unmounts, detaches and deletes whatever is left.
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn privileged_podman_loop_volume_limits_size_keeps_data_and_cleans_up() {
    let mut lab = PodmanLab::new("privileged_podman_loop_volume", "pm-loop");
    lab.ok(&["volume", "create", "--driver", "berth", "-o", "type=loop", "-o", "size=64M", "v1"]);
    assert!(lab.state.join("volumes/v1/disk.img").exists());

    let filled = lab.run("writer", "v1:/data", "echo hello > /data/keep.txt && dd if=/dev/zero of=/data/big bs=1M count=80");
    assert!(!filled.status.success(), "writing 80M into a 64M volume must fail");
    assert!(stderr(&filled).contains("No space left on device"), "inside the container: {}", stderr(&filled));
    lab.ok(&["rm", "writer"]);
    wait_until("volume unmounted after the container", Duration::from_secs(5), || {
        mounts_under(&lab.state).is_empty() && loop_devices_under(&lab.dir.path).is_empty()
    });

    // A server restart while a container holds the volume: the mount stays, data too.
    lab.ok(&["run", "-d", "--name", "holder", "--network", "none", "-v", "v1:/data", IMAGE, "sleep", "600"]);
    lab.restart_server();
    assert_eq!(lab.ok(&["exec", "holder", "cat", "/data/keep.txt"]).trim(), "hello");
    lab.ok(&["rm", "--force", "--time", "0", "holder"]);

    let reader = lab.run("reader", "v1:/data", "cat /data/keep.txt && ls /data");
    assert!(reader.status.success(), "{}", stderr(&reader));
    assert!(stdout(&reader).starts_with("hello\n") && stdout(&reader).contains("big"), "{}", stdout(&reader));
    lab.ok(&["rm", "reader"]);

    lab.ok(&["volume", "rm", "v1"]);
    lab.assert_nothing_left("v1");
}

#[test]
fn privileged_podman_named_volume_outlives_containers_and_server_restarts() {
    let mut lab = PodmanLab::new("privileged_podman_named_volume", "pm-named");
    lab.ok(&["volume", "create", "--driver", "berth", "-o", "type=named", "notes"]);
    let wrote = lab.run("writer", "notes:/data", "echo 'kept across restarts' > /data/note");
    assert!(wrote.status.success(), "{}", stderr(&wrote));
    lab.ok(&["rm", "writer"]);
    assert_eq!(
        std::fs::read_to_string(lab.state.join("volumes/notes/_data/note")).expect("data on the host"),
        "kept across restarts\n"
    );

    lab.restart_server();
    let read = lab.run("reader", "notes:/data", "cat /data/note");
    assert_eq!(stdout(&read), "kept across restarts\n", "{}", stderr(&read));
    lab.ok(&["rm", "reader"]);

    let inspect = lab.ok(&["volume", "inspect", "notes"]);
    assert!(inspect.contains("\"Driver\": \"berth\""), "{inspect}");
    lab.ok(&["volume", "rm", "notes"]);
    lab.assert_nothing_left("notes");
}

#[test]
fn privileged_podman_bind_volume_shares_a_host_dir_read_write_or_read_only() {
    let lab = PodmanLab::new("privileged_podman_bind_volume", "pm-bind");
    let host = lab.dir.join("host-dir");
    std::fs::create_dir(&host).expect("mkdir host dir");
    std::fs::write(host.join("from-host"), "host data\n").expect("write host file");
    let source = format!("source={}", host.display());
    lab.ok(&["volume", "create", "--driver", "berth", "-o", "type=bind", "-o", &source, "shared"]);
    lab.ok(&["volume", "create", "--driver", "berth", "-o", "type=bind", "-o", &source, "-o", "ro=true", "frozen"]);

    let wrote = lab.run("writer", "shared:/data", "cat /data/from-host && echo container > /data/from-container");
    assert_eq!(stdout(&wrote), "host data\n", "{}", stderr(&wrote));
    assert_eq!(std::fs::read_to_string(host.join("from-container")).expect("visible on the host"), "container\n");

    let refused = lab.run("reader", "frozen:/data", "cat /data/from-container && echo no > /data/nope");
    assert_eq!(stdout(&refused), "container\n");
    assert!(!refused.status.success(), "a write into a read-only bind volume fails");
    assert!(stderr(&refused).contains("Read-only file system"), "{}", stderr(&refused));
    assert!(!host.join("nope").exists());

    lab.ok(&["rm", "writer", "reader"]);
    lab.ok(&["volume", "rm", "shared", "frozen"]);
    lab.assert_nothing_left("shared");
    assert!(!lab.state.join("locks/frozen.lock").exists());
    let kept: Vec<_> = std::fs::read_dir(&host).expect("host dir kept").collect();
    assert_eq!(kept.len(), 2, "removing bind volumes leaves the host dir and its files alone");
    assert!(Path::new(&host).join("from-host").exists());
}
