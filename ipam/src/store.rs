//! The on-disk allocation store, laid out as the reference host-local lays it out so the same
//! tools (and the reference plugin itself) can read it:
//!
//! ```text
//! DATADIR/NETWORK/
//!     lock                  flock(2)ed exclusively for the whole of every operation
//!     10.0.0.2              one file per allocated address: "CONTAINERID\r\nIFNAME"
//!     fd00::2
//!     last_reserved_ip.0    the address last handed out from range set 0 (round-robin cursor)
//! ```
//!
//! A [`Store`] holds the lock from [`Store::open`] until it is dropped; a process that dies
//! holding it releases it with its file descriptor. The reference plugin locks the same file,
//! so the two can even share a directory.
//!
//! Crash safety (an ADD SIGKILLed at any instant):
//! - an allocation file appears complete or not at all: its content is written to an unnamed
//!   file (O_TMPFILE; a `.tmp-PID` file where that is unsupported), which is then hard-linked
//!   to the address's name. `link(2)` is atomic and fails if the name exists, so it is also
//!   the "create exclusively" step;
//! - `last_reserved_ip.N` is written in place, as the reference does: a torn cursor only
//!   restarts the round robin at the range start;
//! - an owner's index (`.owner-HASH`) is marked incomplete before an ADD reserves anything and
//!   completed after; DEL trusts a complete index and reads every allocation file otherwise,
//!   so an address reserved by a killed ADD is found either way;
//! - a temporary file left by a killed writer is garbage: temporary files only exist while
//!   their writer holds the lock, so whoever holds the lock next deletes any it finds;
//! - reads are tolerant anyway (files written by other tools, or by the reference plugin,
//!   which writes in place): an allocation file whose content is not an owner (empty, say)
//!   still keeps its address taken, and GC releases it since it belongs to no attachment; an
//!   unreadable `last_reserved_ip.N` only restarts the round-robin at the range start.
//!
//! Nothing is fsync'ed, as in the reference: the store survives the process dying, not
//! necessarily the machine (data directories are often on tmpfs anyway).

use crate::config::StoreConf;
use berth_cni::error::Context;
use berth_cni::{CniError, CniResult};
use berth_util::fs::LockFile;
use berth_util::hash::fnv1a64;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "lock";
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const TEMP_PREFIX: &str = ".tmp-";
/// Owner index files: `.owner-HASH` lists the addresses one attachment holds, so an ADD finds
/// a container's existing addresses without reading every allocation file. The allocation
/// files stay the truth: an index entry counts only while its file names the owner.
const INDEX_PREFIX: &str = ".owner-";
/// Present once every allocation of the directory is indexed (berth made it, or indexed what
/// another tool left there); until then an ADD reads every allocation file once.
const INDEXED_MARKER: &str = ".owner-indexes";
/// The last line of an index that lists every address of its owner.
const INDEX_COMPLETE: &str = ".";
/// What separates the container ID from the interface name in an allocation file.
const SEPARATOR: &str = "\r\n";
/// An index's line naming the boot its owner's addresses were allocated in. Allocation files
/// keep the reference's format (its DEL must still find them); the boot is berth's own note.
const BOOT_PREFIX: &str = "boot:";
/// Where the kernel tells which boot this is.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// An owner's index file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Its addresses that the owner still holds.
    pub ips: Vec<IpAddr>,
    /// Written by an ADD that finished: the owner holds no other address. An ADD marks the
    /// index incomplete before it reserves anything, so one killed half-way leaves it so.
    pub complete: bool,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    /// `None` in files written by host-local before CNI 0.7, which held the ID alone.
    pub ifname: Option<String>,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Owner {
        Owner { container_id: container_id.trim().to_string(), ifname: Some(ifname.to_string()) }
    }

    /// Reads an allocation file's content; `None` when it names no container.
    pub fn parse(content: &str) -> Option<Owner> {
        let (id, ifname) = match content.split_once(SEPARATOR) {
            Some((id, ifname)) => (id.trim(), Some(ifname.trim().to_string())),
            None => (content.trim(), None),
        };
        (!id.is_empty()).then(|| Owner { container_id: id.to_string(), ifname })
    }

    fn encode(&self) -> String {
        format!("{}{SEPARATOR}{}", self.container_id, self.ifname.as_deref().unwrap_or_default())
    }

    /// Whether this is the attachment `(container_id, ifname)`; an owner recorded without an
    /// interface name matches on the container ID alone, as in the reference.
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        let same_ifname = match &self.ifname {
            Some(i) => i == ifname,
            None => true,
        };
        self.container_id == container_id.trim() && same_ifname
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ifname {
            Some(ifname) => write!(f, "container {} ({ifname})", self.container_id),
            None => write!(f, "container {}", self.container_id),
        }
    }
}

/// One allocated address as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    /// `None` when the file names no owner (written by something else, or damaged).
    pub owner: Option<Owner>,
}

/// A network's directory, locked for as long as the value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: LockFile,
}

impl Store {
    /// Creates the network's directory if needed and takes its lock.
    pub fn open(conf: &StoreConf) -> CniResult<Store> {
        let dir = conf.data_dir.join(&conf.network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .io_context(|| format!("cannot create the network directory {}", dir.display()))?;
        Self::lock(dir)?.ok_or_else(|| CniError::io("network directory vanished", conf.data_dir.display()))
    }

    /// Takes the lock of an existing network directory; `None` when there is no directory,
    /// hence nothing allocated.
    pub fn open_existing(conf: &StoreConf) -> CniResult<Option<Store>> {
        Self::lock(conf.data_dir.join(&conf.network))
    }

    fn lock(dir: PathBuf) -> CniResult<Option<Store>> {
        // No network directory: open_existing's "nothing here".
        let Some(lock) = LockFile::acquire_in_existing_dir(&dir.join(LOCK_FILE))? else { return Ok(None) };
        Ok(Some(Store { dir, _lock: lock }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Every allocated address with its owner (reads every allocation file: DEL and GC).
    pub fn allocations(&self) -> CniResult<Vec<Allocation>> {
        let mut out = Vec::new();
        for ip in self.taken()? {
            let path = self.path_of(ip);
            match fs::read(&path) {
                Ok(bytes) => out.push(Allocation { ip, owner: Owner::parse(&String::from_utf8_lossy(&bytes)) }),
                // Gone meanwhile, or a directory named like an address: no allocation.
                Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::IsADirectory => {}
                Err(e) => return Err(CniError::io(format!("cannot read the allocation file {}", path.display()), e)),
            }
        }
        out.sort_by_key(|a| a.ip);
        Ok(out)
    }

    /// The allocated addresses, from the directory's names alone (no allocation file is
    /// opened: what an ADD needs). Also deletes what killed writers left behind.
    pub fn taken(&self) -> CniResult<std::collections::HashSet<IpAddr>> {
        let entries = fs::read_dir(&self.dir).io_context(|| format!("cannot list {}", self.dir.display()))?;
        let mut out = std::collections::HashSet::new();
        for entry in entries {
            let entry = entry.io_context(|| format!("cannot list {}", self.dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                // We hold the lock, so its writer is gone; it never counted as an allocation.
                let _ = fs::remove_file(entry.path());
            } else if let Ok(ip) = name.parse::<IpAddr>() {
                // Not `lock`, `last_reserved_ip.N` or an owner index.
                out.insert(ip);
            }
        }
        Ok(out)
    }

    /// Who holds `ip`, read from its allocation file.
    pub fn owner_of(&self, ip: IpAddr) -> Option<Owner> {
        let bytes = fs::read(self.path_of(ip)).ok()?;
        Owner::parse(&String::from_utf8_lossy(&bytes))
    }

    /// What `owner`'s index says, each address confirmed by its allocation file. `None` when
    /// there is no index (nothing allocated since the directory was indexed, or a store
    /// written by another tool: DEL and GC still find those by reading every file) or when
    /// it cannot be trusted (a hash collision, damage).
    pub fn index(&self, owner: &Owner) -> Option<Index> {
        let text = fs::read_to_string(self.index_path(owner)).ok()?;
        let (recorded, lines) = parse_index(&text);
        if recorded.as_ref() != Some(owner) {
            return None;
        }
        let lines: Vec<&str> = lines.collect();
        let complete = lines.last() == Some(&INDEX_COMPLETE);
        let id = &owner.container_id;
        let ifname = owner.ifname.as_deref().unwrap_or_default();
        let ips = lines
            .iter()
            .filter_map(|l| l.trim().parse::<IpAddr>().ok())
            .filter(|ip| self.owner_of(*ip).is_some_and(|o| o.is(id, ifname)))
            .collect();
        Some(Index { ips, complete })
    }

    /// Every address `owner` holds, from its index when that is complete, else read from
    /// every allocation file.
    pub fn held_by(&self, owner: &Owner) -> CniResult<Vec<IpAddr>> {
        if let Some(Index { ips, complete: true }) = self.index(owner) {
            return Ok(ips);
        }
        let id = &owner.container_id;
        let ifname = owner.ifname.as_deref().unwrap_or_default();
        Ok(self.allocations()?.into_iter().filter(|a| a.owner.as_ref().is_some_and(|o| o.is(id, ifname))).map(|a| a.ip).collect())
    }

    /// Indexes the allocations of a directory berth has not indexed yet (written by the
    /// reference host-local, or by an older berth), once.
    pub fn ensure_indexed(&self) -> CniResult<()> {
        let marker = self.dir.join(INDEXED_MARKER);
        if marker.exists() {
            return Ok(());
        }
        let mut by_owner: std::collections::BTreeMap<String, (Owner, Vec<IpAddr>)> = Default::default();
        for a in self.allocations()? {
            if let Some(owner) = a.owner.filter(|o| o.ifname.is_some()) {
                by_owner.entry(owner.encode()).or_insert_with(|| (owner, vec![])).1.push(a.ip);
            }
        }
        for (owner, ips) in by_owner.values() {
            self.write_index(owner, ips)?;
        }
        fs::write(&marker, b"").io_context(|| format!("cannot write {}", marker.display()))
    }

    /// Records which addresses `owner` holds, all of them ([`INDEX_COMPLETE`]). Written in
    /// place: a torn index fails the owner check or lacks its end, and counts as incomplete.
    pub fn write_index(&self, owner: &Owner, ips: &[IpAddr]) -> CniResult<()> {
        self.write_index_text(owner, ips, true)
    }

    /// Records, before an ADD reserves anything, that `owner` may soon hold addresses the
    /// index does not list yet (`ips` are those it holds now): a DEL after that ADD was
    /// killed reads every allocation file.
    pub fn write_pending_index(&self, owner: &Owner, ips: &[IpAddr]) -> CniResult<()> {
        self.write_index_text(owner, ips, false)
    }

    fn write_index_text(&self, owner: &Owner, ips: &[IpAddr], complete: bool) -> CniResult<()> {
        let mut text = owner.encode();
        if let Some(boot) = boot_id() {
            text += SEPARATOR;
            text += BOOT_PREFIX;
            text += boot;
        }
        for ip in ips {
            text += SEPARATOR;
            text += &ip.to_string();
        }
        if complete {
            text += SEPARATOR;
            text += INDEX_COMPLETE;
        }
        let path = self.index_path(owner);
        overwrite(&path, text.as_bytes()).io_context(|| format!("cannot write {}", path.display()))
    }

    /// Forgets `owner`'s index; fine when there is none.
    pub fn remove_index(&self, owner: &Owner) {
        let _ = fs::remove_file(self.index_path(owner));
    }

    /// Removes every index whose owner `keep` rejects (GC).
    pub fn prune_indexes(&self, keep: impl Fn(&Owner) -> bool) -> CniResult<()> {
        for (path, text) in self.index_files()? {
            if !parse_index(&text).0.is_some_and(|o| keep(&o)) {
                let _ = fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Every owner index of the directory, with its content.
    fn index_files(&self) -> CniResult<Vec<(PathBuf, String)>> {
        let entries = fs::read_dir(&self.dir).io_context(|| format!("cannot list {}", self.dir.display()))?;
        Ok(entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(INDEX_PREFIX) && n != INDEXED_MARKER))
            .map(|e| (e.path(), fs::read_to_string(e.path()).unwrap_or_default()))
            .collect())
    }

    /// Releases the addresses of owners whose index says they were allocated in an earlier
    /// boot: their containers died with it (the reference host-local never frees those, and
    /// runs out). Owners without a recorded boot (indexed from another tool's files) are kept.
    /// How many addresses were freed.
    pub fn free_earlier_boots(&self) -> CniResult<usize> {
        let Some(current) = boot_id() else { return Ok(0) };
        let mut freed = 0;
        for (path, text) in self.index_files()? {
            let (owner, mut lines) = parse_index(&text);
            let boot = lines.next().and_then(|l| l.strip_prefix(BOOT_PREFIX));
            let (Some(owner), Some(boot)) = (owner, boot) else { continue };
            if boot == current {
                continue;
            }
            let id = &owner.container_id;
            let ifname = owner.ifname.as_deref().unwrap_or_default();
            for ip in lines.filter_map(|l| l.trim().parse::<IpAddr>().ok()) {
                if self.owner_of(ip).is_some_and(|o| o.is(id, ifname)) {
                    self.release(ip)?;
                    freed += 1;
                }
            }
            let _ = fs::remove_file(path);
        }
        Ok(freed)
    }

    fn index_path(&self, owner: &Owner) -> PathBuf {
        // Stable across releases (index files on disk are named by it); collisions are caught
        // by the owner line.
        let hash = fnv1a64([owner.encode().as_bytes()]);
        self.dir.join(format!("{INDEX_PREFIX}{hash:016x}"))
    }

    /// Records `ip` as `owner`'s; `false` when the address is already taken.
    pub fn reserve(&self, ip: IpAddr, owner: &Owner) -> CniResult<bool> {
        let target = self.path_of(ip);
        let content = owner.encode();
        // An unnamed file (O_TMPFILE), linked in when written: one change to a directory that
        // grows with the containers, instead of create, link and unlink.
        let linked = match self.unnamed_file(content.as_bytes()) {
            Ok(file) => {
                let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
                nix::unistd::linkat(nix::fcntl::AT_FDCWD, source.as_str(), nix::fcntl::AT_FDCWD, &target, nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW)
                    .map_err(std::io::Error::from)
            }
            // File systems without O_TMPFILE: a named temporary file, linked, then removed.
            Err(_) => {
                let tmp = self.write_temp(content.as_bytes())?;
                let linked = fs::hard_link(&tmp, &target);
                let _ = fs::remove_file(&tmp);
                linked
            }
        };
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(CniError::io(format!("cannot create the allocation file {}", target.display()), e)),
        }
    }

    /// Forgets `ip`'s allocation; fine when there is none.
    pub fn release(&self, ip: IpAddr) -> CniResult<()> {
        let path = self.path_of(ip);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(CniError::io(format!("cannot remove the allocation file {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// The address last handed out from range set `set`, if recorded and readable.
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let text = fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"))).ok()?;
        text.trim().parse().ok()
    }

    /// Written in place, as the reference does: a torn cursor reads as none, which only
    /// restarts the round robin at the range start.
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> CniResult<()> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        overwrite(&path, ip.to_string().as_bytes()).io_context(|| format!("cannot write {}", path.display()))
    }

    fn unnamed_file(&self, content: &[u8]) -> std::io::Result<File> {
        let mut f = OpenOptions::new().write(true).mode(0o644).custom_flags(nix::libc::O_TMPFILE).open(&self.dir)?;
        f.write_all(content)?;
        Ok(f)
    }

    fn write_temp(&self, content: &[u8]) -> CniResult<PathBuf> {
        let tmp = self.dir.join(format!("{TEMP_PREFIX}{}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .io_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(content).io_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(tmp)
    }
}

/// An index's owner (its first two lines) and the lines after it.
fn parse_index(text: &str) -> (Option<Owner>, std::str::Split<'_, &'static str>) {
    let mut lines = text.split(SEPARATOR);
    let owner = Owner::parse(&format!("{}{SEPARATOR}{}", lines.next().unwrap_or_default(), lines.next().unwrap_or_default()));
    (owner, lines)
}

/// This boot's ID, read once per process; `None` where the kernel does not say.
fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| fs::read_to_string(BOOT_ID_PATH).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .as_deref()
}

/// Replaces a small file's content in place. Not `fs::write`: truncating to zero makes ext4
/// free the block (a discard on SSD-backed disks) and start writeback when the file is closed
/// (its `auto_da_alloc` heuristic), which cost an ADD more than the rest of its file work.
/// Shrinking to the new length frees nothing.
fn overwrite(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create(true).truncate(false).mode(0o644).open(path)?;
    f.write_all(content)?;
    f.set_len(content.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn store(tmp: &TempDir) -> Store {
        Store::open(&StoreConf { network: "net".into(), data_dir: tmp.path().into() }).unwrap()
    }

    #[test]
    fn owners_read_back_and_match() {
        let o = Owner::new("c1", "eth0");
        assert_eq!(Owner::parse(&o.encode()), Some(o.clone()));
        assert!(o.is("c1", "eth0") && !o.is("c1", "eth1") && !o.is("c2", "eth0"));
        // Pre-0.7 files: the ID alone, any interface.
        let legacy = Owner::parse("c1\n").unwrap();
        assert!(legacy.is("c1", "eth1"));
        assert_eq!(Owner::parse(""), None);
        assert_eq!(Owner::parse("  \r\neth0"), None);
    }

    #[test]
    fn reserve_is_exclusive_and_laid_out_like_the_reference() {
        let tmp = TempDir::new();
        let s = store(&tmp);
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(s.reserve(ip, &Owner::new("c1", "eth0")).unwrap());
        assert!(!s.reserve(ip, &Owner::new("c2", "eth0")).unwrap());
        assert_eq!(fs::read(s.dir().join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        s.set_last_reserved(0, ip).unwrap();
        assert_eq!(fs::read_to_string(s.dir().join("last_reserved_ip.0")).unwrap(), "10.0.0.2");
        assert_eq!(s.last_reserved(0), Some(ip));
        assert_eq!(s.last_reserved(1), None);
        let mut names: Vec<_> = fs::read_dir(s.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["10.0.0.2", "last_reserved_ip.0", "lock"]);
        s.release(ip).unwrap();
        s.release(ip).unwrap();
        assert!(s.allocations().unwrap().is_empty());
    }

    #[test]
    fn reads_tolerate_what_a_crash_or_another_tool_leaves() {
        let tmp = TempDir::new();
        let s = store(&tmp);
        fs::write(s.dir().join(".tmp-99999"), "c9\r\neth0").unwrap();
        fs::write(s.dir().join("10.0.0.3"), "").unwrap();
        fs::write(s.dir().join("10.0.0.4"), "old-id").unwrap();
        fs::write(s.dir().join("last_reserved_ip.0"), "10.0.").unwrap();
        fs::write(s.dir().join("README"), "not an address").unwrap();
        let found = s.allocations().unwrap();
        assert_eq!(
            found,
            [
                Allocation { ip: "10.0.0.3".parse().unwrap(), owner: None },
                Allocation {
                    ip: "10.0.0.4".parse().unwrap(),
                    owner: Some(Owner { container_id: "old-id".into(), ifname: None })
                },
            ]
        );
        assert!(!s.dir().join(".tmp-99999").exists(), "leftover temporary file is swept");
        assert_eq!(s.last_reserved(0), None);
    }

    #[test]
    fn index_file_names_stay_what_earlier_releases_wrote() {
        let tmp = TempDir::new();
        let s = store(&tmp);
        // FNV-1a 64 of "c1\r\neth0": existing stores hold index files under this name.
        assert_eq!(s.index_path(&Owner::new("c1", "eth0")), s.dir().join(".owner-44ee69187b69bb13"));
    }

    #[test]
    fn missing_directory_is_nothing_to_open() {
        let tmp = TempDir::new();
        let conf = StoreConf { network: "absent".into(), data_dir: tmp.path().into() };
        assert!(Store::open_existing(&conf).unwrap().is_none());
        assert!(!tmp.path().join("absent").exists());
    }
}
