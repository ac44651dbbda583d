//! What berth's volume endpoint adds to a Docker user's volume cycle: `docker volume create`,
//! `docker run -v VOL:/data`, `docker rm`, `docker volume rm`, with berth's `named` driver and
//! with Docker's own `local` driver, interleaved in the same run on the same dockerd (a
//! `DockerLab`: its own daemon in a throwaway namespace). Root; needs docker.io and a built
//! `berth-volume` next to this binary (or in BERTH_BIN_DIR).
//!
//! `berth-bench-docker-volumes [CYCLES]` (default 30 per driver).

use berth_conformance::bench::percentile;
use berth_conformance::docker::{DockerLab, IMAGE};
use berth_conformance::plugins::berth_dir;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `berth-volume serve` registered with dockerd under a name of its own; stopped and
/// unregistered on drop.
struct Endpoint {
    name: String,
    spec: PathBuf,
    server: Child,
    dir: PathBuf,
}

impl Endpoint {
    fn start(lab: &DockerLab) -> Endpoint {
        let name = format!("berth-bench-{}", std::process::id());
        let dir = lab.path("berth");
        let socket = dir.join("berth.sock");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let server = Command::new(berth_dir().join("berth-volume"))
            .args(["serve", "--quiet", "--socket"])
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start berth-volume serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "berth-volume serve did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::create_dir_all("/etc/docker/plugins").expect("mkdir /etc/docker/plugins");
        let spec = Path::new("/etc/docker/plugins").join(format!("{name}.spec"));
        std::fs::write(&spec, format!("unix://{}\n", socket.display())).expect("write the plugin spec");
        Endpoint { name, spec, server, dir }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spec);
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGTERM) };
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One cycle as a user types it; its wall time.
fn cycle(lab: &DockerLab, driver: &str, n: usize) -> Duration {
    let volume = format!("bench-{driver}-{n}");
    let container = format!("c-{volume}");
    let mount = format!("{volume}:/data");
    let start = Instant::now();
    lab.ok(&["volume", "create", "-d", driver, &volume]);
    lab.ok(&["run", "--name", &container, "-v", &mount, IMAGE, "true"]);
    lab.ok(&["rm", &container]);
    lab.ok(&["volume", "rm", &volume]);
    start.elapsed()
}

fn main() {
    let cycles: usize = std::env::args().nth(1).map(|a| a.parse().expect("CYCLES is a number")).unwrap_or(30);
    let lab = DockerLab::new();
    let berth = Endpoint::start(&lab);
    // One warm-up of each: the first run of a daemon loads the image and the plugin.
    cycle(&lab, "local", 0);
    cycle(&lab, &berth.name, 0);
    let (mut local, mut ours) = (Vec::new(), Vec::new());
    for n in 1..=cycles {
        local.push(cycle(&lab, "local", n));
        ours.push(cycle(&lab, &berth.name, n));
    }
    local.sort();
    ours.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("docker volume cycle (create, run -v, rm, volume rm), {cycles} cycles each, interleaved");
    println!("{:<14} {:>10} {:>10}", "driver", "median ms", "p90 ms");
    for (label, times) in [("local", &local), ("berth named", &ours)] {
        println!("{label:<14} {:>10.1} {:>10.1}", ms(percentile(times, 0.5)), ms(percentile(times, 0.9)));
    }
    let ratio = ms(percentile(&ours, 0.5)) / ms(percentile(&local, 0.5));
    println!("berth / local (median): {ratio:.3} ({:+.1}%)", (ratio - 1.0) * 100.0);
}
