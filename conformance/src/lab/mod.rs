//! The kernel lab: runs a command as root under Debian's stock kernel in a qemu VM, for
//! what this machine's kernel lacks (8021q, dummy, ipvlan, device-mapper, XFS quota, the
//! openvswitch datapath) — all loadable there with `modprobe`.
//!
//! ```no_run
//! let out = berth_conformance::lab::Lab::ensure()?.run(&["/usr/sbin/modprobe", "8021q"])?;
//! assert_eq!(out.status, 0, "{}", out.stderr);
//! # Ok::<(), berth_conformance::lab::LabError>(())
//! ```
//!
//! How: the kernel package comes through apt and is cached with its modules and a small
//! initramfs under `target/kernel-lab/` (see [`kernel`]); each run boots
//! `qemu-system-x86_64 -accel tcg -cpu max` (KVM hangs on this kind of machine) with three
//! 9p shares: the host's `/` read-only (the VM writes to a tmpfs overlay on it, so the
//! host's files are never changed), the modules, and a fresh results folder. The initramfs
//! (see [`initramfs`]) chroots into the overlay with proc, sys, dev, devpts, tmp and run
//! mounted, runs the command from the results folder's `run.sh`, and writes its exit
//! status, stdout and stderr there. The VM has no network device and no host device.
//!
//! Tests that need the lab are named `lab_*`; the pattern is to boot the lab from the test
//! and run the same test binary inside it with `BERTH_IN_LAB=1` ([`run_test_inside`]).

mod initramfs;
mod kernel;

pub use kernel::Kernel;

use berth_util::fs::{FileError, LockFile};
use berth_util::tool;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Set to `1` in the environment of every command the lab runs.
pub const IN_LAB_VAR: &str = "BERTH_IN_LAB";

/// Host environment variables handed on to the command when set.
const PASSED_ON: &[&str] = &["RUST_BACKTRACE", "RUST_LOG", "BERTH_BIN_DIR", crate::kill::SEED_VAR];

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether this process runs inside the lab.
pub fn in_lab() -> bool {
    std::env::var(IN_LAB_VAR).is_ok_and(|v| v == "1")
}

#[derive(Debug)]
pub enum LabError {
    /// A tool the lab needs is not installed.
    Missing { tool: String, package: &'static str },
    Io { what: String, err: std::io::Error },
    /// Fetching or preparing the kernel failed.
    Prepare(String),
    /// The VM ran longer than allowed and was killed.
    Timeout { after: Duration, console: String },
    /// The VM stopped without the command's exit status (boot failure, kernel panic).
    NoStatus { console: String, qemu: String },
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Missing { tool, package } => write!(
                f,
                "kernel lab: {tool} is missing: apt-get install {package} (conformance/TEST-PACKAGES lists what the lab needs)"
            ),
            LabError::Io { what, err } => write!(f, "kernel lab: {what}: {err}"),
            LabError::Prepare(msg) => write!(f, "kernel lab: {msg}"),
            LabError::Timeout { after, console } => {
                write!(f, "kernel lab: the VM was killed after {after:?}; console:\n{}", tail(console))
            }
            LabError::NoStatus { console, qemu } => {
                write!(f, "kernel lab: the VM stopped without an exit status; qemu: {qemu}; console:\n{}", tail(console))
            }
        }
    }
}

impl std::error::Error for LabError {}

impl From<FileError> for LabError {
    fn from(e: FileError) -> LabError {
        LabError::Io { what: format!("{} {}", e.what, e.path.display()), err: e.source }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// What a command did inside the lab.
#[derive(Debug, Clone)]
pub struct LabOutput {
    /// Its exit status (128 + N when killed by signal N, as the shell reports it).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// The VM's serial console (kernel messages).
    pub console: String,
    /// From starting qemu to its exit.
    pub elapsed: Duration,
    /// The VM's uptime when the command started (kernel boot and init).
    pub booted_after: Option<Duration>,
}

impl LabOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

impl fmt::Display for LabOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exit status {} after {:.1}s", self.status, self.elapsed.as_secs_f64())?;
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

/// A prepared kernel lab.
#[derive(Debug, Clone)]
pub struct Lab {
    pub kernel: Kernel,
    cache: PathBuf,
    qemu: PathBuf,
}

impl Lab {
    /// Checks the tools, and fetches and prepares the kernel on first use (about 400 MiB
    /// under `target/kernel-lab/`, reused afterwards). `BERTH_LAB_DIR` moves the cache,
    /// `BERTH_LAB_KERNEL` picks a kernel version.
    pub fn ensure() -> Result<Lab, LabError> {
        let qemu = tool::find("qemu-system-x86_64")
            .ok_or(LabError::Missing { tool: "qemu-system-x86_64".into(), package: "qemu-system-x86" })?;
        busybox()?;
        for (tool, package) in [("depmod", "kmod"), ("dpkg", "dpkg"), ("apt-get", "apt")] {
            if tool::find(tool).is_none() {
                return Err(LabError::Missing { tool: tool.into(), package });
            }
        }
        let cache = cache_dir();
        // Creates the cache directory too.
        let _lock = LockFile::acquire(&cache.join("prepare.lock"))?;
        let kernel = kernel::ensure(&cache)?;
        Ok(Lab { kernel, cache, qemu })
    }

    /// A command to run in the lab; `run` it, or set more first.
    pub fn command<S: AsRef<str>>(&self, argv: &[S]) -> LabCommand<'_> {
        LabCommand {
            lab: self,
            argv: argv.iter().map(|a| a.as_ref().to_string()).collect(),
            env: Vec::new(),
            cwd: std::env::current_dir().ok(),
            timeout: DEFAULT_TIMEOUT,
            memory_mib: 2048,
            cpus: 2,
        }
    }

    /// Runs `argv` in a fresh VM and returns its exit status and output.
    pub fn run<S: AsRef<str>>(&self, argv: &[S]) -> Result<LabOutput, LabError> {
        self.command(argv).run()
    }
}

/// One run in the lab: argv, environment, working directory, limits.
pub struct LabCommand<'a> {
    lab: &'a Lab,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    memory_mib: u32,
    cpus: u32,
}

impl LabCommand<'_> {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
    /// Where the command starts (the host path; default: the caller's current directory).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
    /// How long the VM may run before it is killed (default 10 minutes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn run(self) -> Result<LabOutput, LabError> {
        if self.argv.is_empty() {
            return Err(LabError::Prepare("no command to run".into()));
        }
        let results = RunDir::new(&self.lab.cache.join("runs"))?;
        results.write("run.sh", self.script().as_bytes())?;
        let qemu = self.qemu_command(&results)?;
        // One VM at a time on this machine: two would halve each other's emulated CPUs.
        let _vm_lock = LockFile::acquire(&self.lab.cache.join("vm.lock"))?;
        let started = Instant::now();
        let mut vm = Vm::start(qemu)?;
        if !vm.wait_until(started + self.timeout)? {
            return Err(LabError::Timeout { after: self.timeout, console: results.read("console.log") });
        }
        results.output(started.elapsed())
    }

    /// qemu booting the lab's kernel with the three 9p shares (see the module's description),
    /// its serial console and its own output logged in the results folder.
    fn qemu_command(&self, results: &RunDir) -> Result<Command, LabError> {
        let kernel = &self.lab.kernel;
        for path in [&results.path, &kernel.modules] {
            if path.to_string_lossy().contains(',') {
                return Err(LabError::Prepare(format!("{} contains a comma, which qemu's -virtfs cannot take", path.display())));
            }
        }
        let mut cmd = Command::new(&self.lab.qemu);
        cmd.args(["-accel", "tcg", "-cpu", "max", "-m", &self.memory_mib.to_string(), "-smp", &self.cpus.to_string()]);
        cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-nic", "none"]);
        cmd.arg("-kernel").arg(&kernel.vmlinuz).arg("-initrd").arg(&kernel.initrd);
        cmd.args(["-append", "console=ttyS0 panic=-1 quiet"]);
        cmd.arg("-serial").arg(format!("file:{}", results.path.join("console.log").display()));
        cmd.args(["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"]);
        cmd.arg("-virtfs")
            .arg(format!("local,path={},mount_tag=modules,security_model=none,readonly=on", kernel.modules.display()));
        cmd.arg("-virtfs").arg(format!("local,path={},mount_tag=results,security_model=none", results.path.display()));
        let log = results.create("qemu.log")?;
        let log2 = log.try_clone().map_err(|err| LabError::Io { what: "dup qemu log".into(), err })?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        // SAFETY: prctl is async-signal-safe. qemu dies with this thread, even if the test
        // process is killed.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// `run.sh`: the environment, the directory, then the command, every word quoted.
    fn script(&self) -> String {
        let mut s = String::from("#!/bin/sh\n");
        s += "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n";
        s += &format!("export {IN_LAB_VAR}=1\n");
        let passed = PASSED_ON.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)));
        for (k, v) in passed.chain(self.env.iter().cloned()) {
            s += &format!("export {k}={}\n", quote(&v));
        }
        if let Some(cwd) = &self.cwd {
            s += &format!("cd {} || exit 125\n", quote(&cwd.display().to_string()));
        }
        s += "exec";
        for arg in &self.argv {
            s += " ";
            s += &quote(arg);
        }
        s + "\n"
    }
}

/// Runs the test `name` of the running test binary inside the lab (with `BERTH_IN_LAB=1`,
/// which makes the test run its inner body) and returns what it did.
pub fn run_test_inside(name: &str) -> Result<LabOutput, LabError> {
    let exe = std::env::current_exe().map_err(|err| LabError::Io { what: "find the test binary".into(), err })?;
    let lab = Lab::ensure()?;
    let argv = [exe.display().to_string(), "--exact".into(), name.into(), "--nocapture".into(), "--test-threads=1".into()];
    lab.run(&argv)
}

/// As [`run_test_inside`], and panics (showing everything) unless the inner test passed.
pub fn assert_test_passes_inside(name: &str) -> LabOutput {
    let out = run_test_inside(name).unwrap_or_else(|e| panic!("{name} in the kernel lab: {e}"));
    assert!(
        out.success() && out.stdout.contains("1 passed"),
        "{name} failed in the kernel lab:\n{out}\n--- console (tail)\n{}",
        tail(&out.console)
    );
    out
}

/// POSIX shell single quotes.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_end(&mut buf));
    String::from_utf8_lossy(&buf).into_owned()
}

/// `target/kernel-lab`, next to the build outputs, or `BERTH_LAB_DIR`.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_LAB_DIR") {
        return PathBuf::from(dir);
    }
    // Cargo marks its target directory with CACHEDIR.TAG; binaries run from inside it.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()) {
            return target.join("kernel-lab");
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kernel-lab")
}

/// A statically linked busybox (package busybox-static): the initramfs has no libc.
fn busybox() -> Result<PathBuf, LabError> {
    let missing = || LabError::Missing { tool: "a static /bin/busybox".into(), package: "busybox-static" };
    let path = PathBuf::from("/bin/busybox");
    let elf = std::fs::read(&path).map_err(|_| missing())?;
    if has_interpreter(&elf) {
        return Err(missing());
    }
    Ok(path)
}

/// Whether an ELF64 file names a dynamic loader (a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize);
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return true;
    };
    (0..phnum).any(|i| elf.get(phoff + i * phentsize..phoff + i * phentsize + 4) == Some(&3u32.to_le_bytes()[..]))
}

fn missing_or_io(tool: &str, err: std::io::Error) -> LabError {
    if err.kind() == std::io::ErrorKind::NotFound {
        let package = match tool {
            "qemu-system-x86_64" => "qemu-system-x86",
            "depmod" => "kmod",
            "apt-get" | "apt-cache" => "apt",
            _ => "dpkg",
        };
        LabError::Missing { tool: tool.into(), package }
    } else {
        LabError::Io { what: format!("run {tool}"), err }
    }
}

/// The qemu process: killed and reaped on drop, whatever happened.
struct Vm(Option<Child>);

impl Vm {
    fn start(mut qemu: Command) -> Result<Vm, LabError> {
        let child = qemu.spawn().map_err(|err| missing_or_io("qemu-system-x86_64", err))?;
        Ok(Vm(Some(child)))
    }

    /// Waits for qemu to exit; `Ok(false)` when the deadline passed first.
    fn wait_until(&mut self, deadline: Instant) -> Result<bool, LabError> {
        let Some(child) = self.0.as_mut() else { return Ok(true) };
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    self.0 = None;
                    return Ok(true);
                }
                Ok(None) if Instant::now() >= deadline => return Ok(false),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(err) => return Err(LabError::Io { what: "wait for qemu".into(), err }),
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A run's results folder, removed afterwards unless `BERTH_LAB_KEEP=1`.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn new(parent: &Path) -> Result<RunDir, LabError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = parent.join(format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|err| LabError::Io { what: format!("mkdir {}", path.display()), err })?;
        Ok(RunDir { path })
    }

    fn write(&self, name: &str, contents: &[u8]) -> Result<(), LabError> {
        let path = self.path.join(name);
        std::fs::write(&path, contents).map_err(|err| LabError::Io { what: format!("write {}", path.display()), err })
    }

    fn create(&self, name: &str) -> Result<File, LabError> {
        let path = self.path.join(name);
        File::create(&path).map_err(|err| LabError::Io { what: format!("create {}", path.display()), err })
    }

    /// A file the run left, empty when there is none.
    fn read(&self, name: &str) -> String {
        read_lossy(&self.path.join(name))
    }

    /// What the command did, from the files the VM's init wrote (`elapsed`: qemu's run time).
    fn output(&self, elapsed: Duration) -> Result<LabOutput, LabError> {
        let Some(status) = self.read("status").trim().parse::<i32>().ok() else {
            return Err(LabError::NoStatus { console: self.read("console.log"), qemu: self.read("qemu.log").trim().to_string() });
        };
        let booted_after =
            self.read("boot-uptime").split_whitespace().next().and_then(|s| s.parse::<f64>().ok()).map(Duration::from_secs_f64);
        Ok(LabOutput {
            status,
            stdout: self.read("stdout"),
            stderr: self.read("stderr"),
            console: self.read("console.log"),
            elapsed,
            booted_after,
        })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::env::var("BERTH_LAB_KEEP").is_ok_and(|v| v == "1") {
            eprintln!("berth-lab: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn static_busybox_has_no_interpreter() {
        if let Ok(elf) = std::fs::read("/bin/sh") {
            assert!(has_interpreter(&elf), "/bin/sh is dynamically linked on Debian");
        }
    }
}
