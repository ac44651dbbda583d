//! The lease keeper (`berth-dhcp daemon`): one per host, it keeps every lease the plugin
//! obtained alive until DEL releases it or the container's namespace is gone. Its state is
//! one file per lease, replaced atomically before it answers, and read again when it
//! restarts: a keeper killed and restarted renews what it held. The files are not fsynced:
//! after a reboot their containers are gone, and an fsync per ADD cost 1-12 ms on disk.
//!
//! Threads: the main one accepts connections (a short-lived thread each), a scheduler wakes
//! when the next lease is due and starts a short-lived thread per renewal, so a server that
//! does not answer delays no other lease.

use crate::error::{KeeperCode, Result};
use crate::lease::{now, Lease};
use crate::proto::{Answer, Ask, Paths, MAX_MESSAGE};
use crate::renewal::{self, Outcome};
use berth_util::fs::write_atomically;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Threads do little (a socket, a few messages): a small stack keeps the keeper's RSS low.
const STACK: usize = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Bound,
    /// The latest renewal failed (why); the lease has not run out yet.
    Failing(String),
    /// The lease ran out without a renewal.
    Expired(String),
}

struct Held {
    lease: Lease,
    health: Health,
    /// Unix seconds of the next renewal attempt.
    next: u64,
    /// A renewal is under way.
    busy: bool,
}

pub struct Keeper {
    paths: Paths,
    leases: Mutex<HashMap<String, Held>>,
    wake: Condvar,
}

/// Runs the keeper for `socket` in the foreground until killed; returns at once when another
/// keeper holds its lock.
pub fn serve(socket: &Path) -> std::io::Result<()> {
    let paths = Paths::new(socket);
    let dir = berth_util::fs::parent_of(socket);
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&paths.lock)?;
    let _lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => held,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(()),
        Err((_, e)) => return Err(e.into()),
    };
    let keeper = Arc::new(Keeper { leases: Mutex::new(load(&paths.state_dir)), paths, wake: Condvar::new() });
    // The lock is ours, so a socket file there is a dead keeper's.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::write(&keeper.paths.pid, format!("{}\n", std::process::id()))?;
    eprintln!("berth-dhcp keeper: listening on {}, {} lease(s) held", socket.display(), keeper.state().len());
    let scheduler = Arc::clone(&keeper);
    spawn(move || scheduler.schedule())?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let keeper = Arc::clone(&keeper);
        if let Err(e) = spawn(move || keeper.answer(stream)) {
            eprintln!("berth-dhcp keeper: cannot start a thread: {e}");
        }
    }
    Ok(())
}

fn spawn(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().stack_size(STACK).spawn(f).map(drop)
}

/// The leases of a previous run; each is renewed at once, the restarted keeper having
/// missed whatever fell due while it was away.
fn load(dir: &Path) -> HashMap<String, Held> {
    let mut leases = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return leases };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            // A staging file of a keeper killed mid-write (this one holds the lock now).
            if path.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp.")) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice::<Lease>(&b).map_err(|e| e.to_string())) {
            Ok(lease) => {
                leases.insert(lease.owner.key(), Held { lease, health: Health::Bound, next: 0, busy: false });
            }
            Err(e) => eprintln!("berth-dhcp keeper: ignoring {}: {e}", path.display()),
        }
    }
    leases
}

impl Keeper {
    fn state(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        // A thread that panicked holding the lock left the map whole: every change is one insert or remove.
        self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn answer(&self, mut stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut body = Vec::new();
        let answer = match (&mut stream).take(MAX_MESSAGE).read_to_end(&mut body) {
            Err(e) => Answer::refused(KeeperCode::Failed, format!("cannot read the request: {e}")),
            Ok(_) => match serde_json::from_slice::<Ask>(&body) {
                Ok(ask) => self.handle(ask),
                Err(e) => Answer::refused(KeeperCode::Failed, format!("cannot decode the request: {e}")),
            },
        };
        let _ = stream.write_all(&serde_json::to_vec(&answer).unwrap_or_default());
    }

    fn handle(&self, ask: Ask) -> Answer {
        match ask {
            Ask::Hold { lease } => self.hold(*lease),
            Ask::Release { key } => {
                let released = self.forget(&key);
                match released.map(|lease| renewal::release(&lease)) {
                    Some(Err(e)) => Answer::refused(KeeperCode::Failed, format!("lease forgotten, but DHCPRELEASE failed: {e}")),
                    _ => Answer::ok(),
                }
            }
            Ask::Check { key } => match self.state().get(&key) {
                None => Answer::refused(KeeperCode::Unknown, "no lease is held for this container and interface"),
                Some(held) => health_answer(held),
            },
            Ask::Status { network } => {
                let state = self.state();
                let failing = state.values().filter(|h| h.lease.owner.network == network).find(|h| h.health != Health::Bound);
                failing.map_or_else(Answer::ok, health_answer)
            }
            Ask::Gc { network, keep } => {
                let stale: Vec<String> =
                    self.state().iter().filter(|(k, h)| h.lease.owner.network == network && !keep.contains(k)).map(|(k, _)| k.clone()).collect();
                for lease in stale.iter().filter_map(|key| self.forget(key)) {
                    if let Err(e) = renewal::release(&lease) {
                        eprintln!("berth-dhcp keeper: GC released {}, but DHCPRELEASE failed: {e}", lease.address);
                    }
                }
                Answer::ok()
            }
        }
    }

    fn hold(&self, lease: Lease) -> Answer {
        let key = lease.owner.key();
        let mut state = self.state();
        if let Err(e) = self.persist(&key, &lease) {
            return Answer::refused(KeeperCode::Failed, e.to_string());
        }
        let next = lease.renew_at();
        state.insert(key, Held { lease, health: Health::Bound, next, busy: false });
        self.wake.notify_all();
        Answer::ok()
    }

    /// Removes the lease from memory and disk, returning it.
    fn forget(&self, key: &str) -> Option<Lease> {
        let held = self.state().remove(key)?;
        let _ = std::fs::remove_file(self.paths.state_dir.join(format!("{key}.json")));
        Some(held.lease)
    }

    fn persist(&self, key: &str, lease: &Lease) -> Result<()> {
        let bytes = serde_json::to_vec(lease).unwrap_or_default();
        Ok(write_atomically(&self.paths.state_dir.join(format!("{key}.json")), &bytes)?)
    }

    /// The scheduler: starts the renewals that are due, then sleeps until the next one (or
    /// until a new lease or a finished renewal wakes it).
    fn schedule(self: Arc<Self>) {
        let mut state = self.state();
        loop {
            let t = now();
            for (key, held) in state.iter_mut().filter(|(_, h)| !h.busy && h.next <= t) {
                held.busy = true;
                let (keeper, key, lease) = (Arc::clone(&self), key.clone(), held.lease.clone());
                if spawn(move || keeper.renewed(&key, renewal::renew(&lease))).is_err() {
                    held.busy = false;
                }
            }
            let next = state.values().filter(|h| !h.busy).map(|h| h.next).min();
            let wait = next.map_or(Duration::from_secs(3600), |n| Duration::from_secs(n.saturating_sub(t).max(1)));
            state = self.wake.wait_timeout(state, wait).map(|(s, _)| s).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Records a renewal's outcome, unless the lease was released meanwhile.
    fn renewed(&self, key: &str, outcome: Outcome) {
        let mut state = self.state();
        let Some(held) = state.get_mut(key) else { return };
        held.busy = false;
        match outcome {
            Outcome::Renewed(grant) => {
                held.lease.renewed(grant);
                held.health = Health::Bound;
                held.next = held.lease.renew_at();
                let lease = held.lease.clone();
                if let Err(e) = self.persist(key, &lease) {
                    eprintln!("berth-dhcp keeper: renewed {}, but cannot record it: {e}", lease.address);
                }
            }
            Outcome::Failed(e) => {
                let lease = &held.lease;
                let why = format!("the lease of {} on {} was not renewed: {e}", lease.address, lease.owner.ifname);
                held.health = if now() >= lease.expires_at() { Health::Expired(why) } else { Health::Failing(why) };
                held.next = now() + renewal::retry_after(lease);
            }
            Outcome::Gone(why) => {
                eprintln!("berth-dhcp keeper: forgetting the lease of {}: {why}", held.lease.address);
                state.remove(key);
                let _ = std::fs::remove_file(self.paths.state_dir.join(format!("{key}.json")));
            }
        }
        self.wake.notify_all();
    }
}

fn health_answer(held: &Held) -> Answer {
    match &held.health {
        Health::Bound => Answer::ok(),
        Health::Failing(why) => {
            let left = held.lease.expires_at().saturating_sub(now());
            Answer::refused(KeeperCode::NotRenewed, format!("{why} (it runs out in {left} s)"))
        }
        Health::Expired(why) => Answer::refused(KeeperCode::NotRenewed, format!("{why}; it has run out")),
    }
}

const USAGE: &str = "usage: berth-dhcp daemon [--socket PATH]\n\
    Keeps the leases of berth-dhcp alive (the plugin starts it when it is not running).\n\
    --socket PATH   where to listen (default /run/berth/dhcp.sock; the `daemonSocketPath` of the plugin's configuration)";

/// `berth-dhcp daemon [--socket PATH] [--detach]`: the process's exit status.
pub fn main(args: &[String]) -> i32 {
    let mut socket = std::path::PathBuf::from(crate::config::DEFAULT_SOCKET);
    let mut detach = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--socket" | "-socketpath" => match rest.next() {
                Some(path) => socket = path.into(),
                None => return usage("--socket needs a path"),
            },
            "--detach" => detach = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    if detach && !detached() {
        return 0;
    }
    match serve(&socket) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-dhcp daemon: {}: {e}", socket.display());
            1
        }
    }
}

fn usage(why: &str) -> i32 {
    eprintln!("berth-dhcp daemon: {why}\n{USAGE}");
    2
}

/// Leaves the caller's session and forks: `false` in the parent, which exits so the plugin
/// that started it can reap it at once; `true` in the child, the keeper, which nobody waits for.
fn detached() -> bool {
    // SAFETY: called at the start of `main`, before any thread exists, so the child's copy
    // of the process is consistent.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => false,
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::unistd::setsid();
            true
        }
        Err(e) => {
            eprintln!("berth-dhcp daemon: cannot fork: {e}");
            false
        }
    }
}
