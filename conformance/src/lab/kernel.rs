//! Debian's stock kernel for the lab, through apt: `apt-cache depends linux-image-amd64`
//! names the package, `apt-get download` fetches it, `dpkg -x` unpacks it, `depmod -b`
//! indexes its modules. Prepared once into `CACHE/VERSION/` (built beside it, then renamed
//! into place, so a half-made one is never used):
//!
//! - `vmlinuz`
//! - `modules/VERSION/...` (with modules.dep; shared with the VM as its /lib/modules)
//! - `initrd.cpio` (rebuilt whenever the lab's init script or modules change)

use super::{initramfs, LabError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The metapackage whose dependency names the current kernel.
const META: &str = "linux-image-amd64";

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub version: String,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// The folder holding `VERSION/`, mounted as the VM's /lib/modules.
    pub modules: PathBuf,
}

impl Kernel {
    fn at(dir: &Path, version: &str) -> Kernel {
        Kernel {
            version: version.to_string(),
            vmlinuz: dir.join("vmlinuz"),
            initrd: dir.join("initrd.cpio"),
            modules: dir.join("modules"),
        }
    }
}

/// The kernel to use: `BERTH_LAB_KERNEL` if set, else one already prepared in `cache`,
/// else the one apt names; prepared when missing. The caller holds the cache lock.
pub fn ensure(cache: &Path) -> Result<Kernel, LabError> {
    let version = match std::env::var("BERTH_LAB_KERNEL") {
        Ok(v) if !v.is_empty() => v,
        _ => match prepared(cache) {
            Some(v) => v,
            None => current_version()?,
        },
    };
    let dir = cache.join(&version);
    if !dir.join("vmlinuz").is_file() {
        prepare(cache, &version)?;
    }
    let kernel = Kernel::at(&dir, &version);
    // Built every time (a few milliseconds), so a changed init script is never stale.
    let initrd = initramfs::build(&kernel.modules.join(&version), &super::busybox()?)?;
    if std::fs::read(&kernel.initrd).ok().as_deref() != Some(initrd.as_slice()) {
        // Replaced whole: a VM booting meanwhile (another process) reads the old or the new one.
        berth_util::fs::write_durably(&kernel.initrd, &initrd)?;
    }
    Ok(kernel)
}

/// The newest kernel already prepared in the cache.
fn prepared(cache: &Path) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".part") && e.path().join("vmlinuz").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort_by_key(|v| version_key(v));
    found.pop()
}

/// `6.1.0-56-amd64` sorts by its numbers.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect()
}

/// `linux-image-6.1.0-56-amd64` -> `6.1.0-56-amd64`, as apt names it now.
fn current_version() -> Result<String, LabError> {
    let ask = || -> Result<Option<String>, LabError> {
        let out = output(Command::new("apt-cache").args(["depends", META]), "apt-cache")?;
        Ok(out.lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends:")?.trim();
            dep.strip_prefix("linux-image-").filter(|v| v.ends_with("-amd64")).map(str::to_string)
        }))
    };
    if let Some(v) = ask()? {
        return Ok(v);
    }
    // A fresh machine may not have read its package lists yet.
    output(Command::new("apt-get").args(["update", "-qq"]), "apt-get")?;
    ask()?.ok_or_else(|| LabError::Prepare(format!("apt-cache depends {META} names no linux-image package")))
}

fn prepare(cache: &Path, version: &str) -> Result<(), LabError> {
    let started = std::time::Instant::now();
    eprintln!("berth-lab: preparing kernel {version} in {} (once)", cache.display());
    let work = cache.join(format!("{version}.part"));
    let _ = std::fs::remove_dir_all(&work);
    mkdir(&work)?;
    let package = format!("linux-image-{version}");
    let download = |w: &Path| output(Command::new("apt-get").args(["download", "-qq", &package]).current_dir(w), "apt-get");
    if download(&work).is_err() {
        // The lists may name a version the mirror no longer has: read them again, once.
        output(Command::new("apt-get").args(["update", "-qq"]), "apt-get")?;
        download(&work)?;
    }
    let deb = std::fs::read_dir(&work)
        .map_err(|err| LabError::Io { what: format!("list {}", work.display()), err })?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| LabError::Prepare(format!("apt-get download {package} left no .deb")))?;
    let root = work.join("root");
    output(Command::new("dpkg").arg("-x").arg(&deb).arg(&root), "dpkg")?;
    remove_file(&deb)?;
    output(Command::new("depmod").arg("-b").arg(&root).arg(version), "depmod")?;
    rename(&root.join("boot").join(format!("vmlinuz-{version}")), &work.join("vmlinuz"))?;
    rename(&root.join("lib/modules"), &work.join("modules"))?;
    let _ = std::fs::remove_dir_all(&root);

    let dir = cache.join(version);
    let _ = std::fs::remove_dir_all(&dir);
    rename(&work, &dir)?;
    eprintln!("berth-lab: kernel {version} ready in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs a tool to completion; its output, or an error carrying its stderr.
fn output(cmd: &mut Command, tool: &str) -> Result<String, LabError> {
    let out = cmd.output().map_err(|err| super::missing_or_io(tool, err))?;
    if !out.status.success() {
        return Err(LabError::Prepare(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mkdir(p: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(p).map_err(|err| LabError::Io { what: format!("mkdir {}", p.display()), err })
}

fn rename(from: &Path, to: &Path) -> Result<(), LabError> {
    std::fs::rename(from, to)
        .map_err(|err| LabError::Io { what: format!("rename {} to {}", from.display(), to.display()), err })
}

fn remove_file(p: &Path) -> Result<(), LabError> {
    std::fs::remove_file(p).map_err(|err| LabError::Io { what: format!("remove {}", p.display()), err })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_wins() {
        let mut v = ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-10-amd64"];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v.last(), Some(&"6.1.0-56-amd64"));
    }
}
