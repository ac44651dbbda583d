//! The lab's initramfs: busybox-static, the modules that mount the host's root over 9p
//! with an overlay, and an `/init` that runs the command and powers off. Written as a
//! newc cpio archive (uncompressed: the kernel takes it as it is).

use super::LabError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What the init script needs, besides what is built into Debian's kernel.
const ROOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Mount options of every 9p share (9p2000.L over virtio, large messages).
const P9: &str = "trans=virtio,version=9p2000.L,msize=512000";

/// `/init`. The 9p shares are tagged `hostroot` (the host's `/`, read-only), `modules`
/// (this kernel's modules, read-only) and `results` (read-write: run.sh in, status and
/// output out). The kernel's own module loader (`/proc/sys/kernel/modprobe`) runs in the
/// initramfs's root, so it gets a wrapper that runs the host's modprobe in the chroot.
fn init_script(modules: &[String]) -> String {
    let insmods: String =
        modules.iter().map(|m| format!("insmod /modules/{m} || fail \"insmod {m}\"\n")).collect();
    format!(
        r#"#!/bin/busybox sh
# berth kernel lab: runs /berth-lab/run.sh chrooted into an overlay of the host's root.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{ echo "berth-lab init: $* failed"; poweroff -f; }}
{insmods}mkdir -p /mnt/lower /mnt/rw /mnt/root /mnt/results
mount -t 9p -o {P9} results /mnt/results || fail "mount the results share"
mount -t 9p -o {P9},ro,cache=loose hostroot /mnt/lower || fail "mount the host root"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw
mkdir /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /mnt/root || fail "mount the overlay"
R=/mnt/root
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
# /tmp stays the overlay's (writable, the host's copy untouched): a checkout or a test's
# scratch files under the host's /tmp must be visible inside.
mount -t tmpfs tmpfs $R/run
mkdir -p $R/lib/modules
mount -t 9p -o {P9},ro modules $R/lib/modules || fail "mount the modules"
mkdir -p $R/berth-lab
mount --bind /mnt/results $R/berth-lab
printf '#!/bin/sh\nexec chroot /mnt/root /sbin/modprobe "$@"\n' > /bin/lab-modprobe
chmod 755 /bin/lab-modprobe
echo /bin/lab-modprobe > /proc/sys/kernel/modprobe
cat /proc/uptime > /mnt/results/boot-uptime
chroot $R /bin/sh /berth-lab/run.sh > /mnt/results/stdout 2> /mnt/results/stderr
echo $? > /mnt/results/status.part && mv /mnt/results/status.part /mnt/results/status
sync
poweroff -f
"#
    )
}

/// Builds the initramfs for the kernel whose modules (with modules.dep) are in `moddir`.
pub fn build(moddir: &Path, busybox: &Path) -> Result<Vec<u8>, LabError> {
    let order = module_order(moddir, ROOT_MODULES)?;
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "mnt", "modules"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &read(busybox)?);
    let mut names = Vec::new();
    for rel in &order {
        let path = moddir.join(rel);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.ends_with(".ko") {
            return Err(LabError::Prepare(format!(
                "{} is compressed; the lab's busybox insmod takes only plain .ko files",
                path.display()
            )));
        }
        cpio.file(&format!("modules/{name}"), 0o644, &read(&path)?);
        names.push(name);
    }
    cpio.file("init", 0o755, init_script(&names).as_bytes());
    Ok(cpio.finish())
}

fn read(path: &Path) -> Result<Vec<u8>, LabError> {
    std::fs::read(path).map_err(|err| LabError::Io { what: format!("read {}", path.display()), err })
}

/// The modules `wanted` and everything they depend on, each after its dependencies, as
/// paths relative to `moddir` (from modules.dep, as modprobe reads it).
pub fn module_order(moddir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>, LabError> {
    let dep_file = moddir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_file)
        .map_err(|err| LabError::Io { what: format!("read {}", dep_file.display()), err })?;
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    let mut by_name: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let Some((module, rest)) = line.split_once(':') else { continue };
        deps.insert(module.to_string(), rest.split_whitespace().map(str::to_string).collect());
        by_name.insert(module_name(module), module.to_string());
    }
    fn visit(m: &str, deps: &HashMap<String, Vec<String>>, out: &mut Vec<String>) {
        if out.iter().any(|o| o == m) {
            return;
        }
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, out);
        }
        out.push(m.to_string());
    }
    let mut out = Vec::new();
    for name in wanted {
        let path = by_name.get(&name.replace('-', "_")).ok_or_else(|| {
            LabError::Prepare(format!("module {name} is not in {} (built in, or another kernel?)", dep_file.display()))
        })?;
        visit(path, &deps, &mut out);
    }
    Ok(out.into_iter().map(PathBuf::from).collect())
}

/// `kernel/fs/9p/9p.ko` -> `9p`; `-` and `_` are the same to the kernel.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// A newc ("070701") cpio archive, in memory.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, 2, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, 1, (0, 0), data);
    }
    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [self.ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() & 3 != 0 {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\nkernel/net/9p/9pnet.ko:\nkernel/fs/netfs/netfs.ko:\nkernel/fs/overlayfs/overlay.ko:\n",
        )
        .unwrap();
        let order = module_order(dir.path(), &["9p", "overlay"]).unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(&p.to_string_lossy())).collect();
        assert_eq!(names, ["9pnet", "netfs", "9p", "overlay"]);
        assert!(module_order(dir.path(), &["nope"]).is_err());
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("bin/x", 0o755, b"hello");
        let out = c.finish();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
