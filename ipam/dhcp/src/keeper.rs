//! The lease keeper (`berth-dhcp daemon`): one per host, it keeps every lease the plugin
//! obtained alive until DEL releases it or the container's namespace is gone. Its state is
//! one file per attachment, replaced atomically before it answers, and read again when it
//! restarts: a keeper killed and restarted renews what it held. The files are not fsynced:
//! after a reboot their containers are gone, and an fsync per ADD cost 1-12 ms on disk.
//!
//! An attachment's record is first *pending* (the plugin is about to send its DHCPREQUEST,
//! after which the server may commit the lease at any instant), then *held* once the plugin
//! hands the lease over. A pending record is released like a lease (DEL, GC), and by the
//! keeper itself once its ADD can no longer hand it over: an ADD killed in between leaves
//! nothing at the server that nobody will release.
//!
//! Threads: the main one accepts connections (a short-lived thread each), a scheduler wakes
//! when the next lease is due (or a pending record is abandoned) and starts a short-lived
//! thread per renewal or release, so a server that does not answer delays no other lease.

use crate::error::{KeeperCode, Result};
use crate::lease::{now, Claim, Lease, Owner, Pending};
use crate::proto::{Answer, Ask, Paths, MAX_MESSAGE};
use crate::renewal::{self, Outcome};
use berth_util::fs::write_atomically;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
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

/// What the keeper knows of an attachment.
enum Record {
    Pending(Pending),
    Held(Held),
}

impl Record {
    fn owner(&self) -> &Owner {
        match self {
            Record::Pending(p) => &p.endpoint.owner,
            Record::Held(h) => &h.lease.endpoint.owner,
        }
    }

    fn claim(&self) -> Claim<'_> {
        match self {
            Record::Pending(p) => p.claim(),
            Record::Held(h) => h.lease.claim(),
        }
    }

    /// When the scheduler must next act on it, unless something is under way.
    fn due(&self) -> Option<u64> {
        match self {
            Record::Pending(p) => Some(p.abandon_at),
            Record::Held(h) => (!h.busy).then_some(h.next),
        }
    }
}

/// A state file as read back: a lease file of any version is a bare lease.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Stored {
    Held(Lease),
    Pending(Pending),
}

pub struct Keeper {
    paths: Paths,
    records: Mutex<HashMap<String, Record>>,
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
    let keeper = Arc::new(Keeper::new(paths));
    // The lock is ours, so a socket file there is a dead keeper's.
    let _ = std::fs::remove_file(socket);
    let listener = berth_util::unix::bind(socket)?;
    std::fs::write(&keeper.paths.pid, format!("{}\n", std::process::id()))?;
    eprintln!("berth-dhcp keeper: listening on {}, {} record(s) held", socket.display(), keeper.state().len());
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

/// The records of a previous run. Each lease is renewed at once, the restarted keeper having
/// missed whatever fell due while it was away; each pending record waits for its ADD's Hold
/// as before.
fn load(dir: &Path) -> HashMap<String, Record> {
    let mut records = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return records };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            // A staging file of a keeper killed mid-write (this one holds the lock now).
            if path.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp.")) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let read = std::fs::read(&path).map_err(|e| e.to_string());
        let record = match read.and_then(|b| serde_json::from_slice::<Stored>(&b).map_err(|e| e.to_string())) {
            Ok(Stored::Held(lease)) => Record::Held(Held { lease, health: Health::Bound, next: 0, busy: false }),
            Ok(Stored::Pending(pending)) => Record::Pending(pending),
            Err(e) => {
                eprintln!("berth-dhcp keeper: ignoring {}: {e}", path.display());
                continue;
            }
        };
        records.insert(record.owner().key(), record);
    }
    records
}

impl Keeper {
    /// The keeper of `paths`, with the records a previous one left there.
    fn new(paths: Paths) -> Keeper {
        Keeper { records: Mutex::new(load(&paths.state_dir)), paths, wake: Condvar::new() }
    }

    fn state(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // A thread that panicked holding the lock left the map whole: every change is one insert or remove.
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
            Ask::Pending { pending } => self.pend(*pending),
            Ask::Hold { lease, attempt } => self.hold(*lease, attempt),
            Ask::Release { key } => match self.take(&key).map(|record| self.give_back(&key, &record)) {
                Some(Err(e)) => Answer::refused(KeeperCode::Failed, format!("lease forgotten, but DHCPRELEASE failed: {e}")),
                _ => Answer::ok(),
            },
            Ask::Check { key } => match self.state().get(&key) {
                Some(Record::Held(held)) => health_answer(held),
                // A pending record: its ADD never finished.
                _ => Answer::refused(KeeperCode::Unknown, "no lease is held for this container and interface"),
            },
            Ask::Status { network } => {
                let state = self.state();
                let mut held = state.values().filter_map(|r| match r {
                    Record::Held(h) if h.lease.endpoint.owner.network == network => Some(h),
                    _ => None,
                });
                held.find(|h| h.health != Health::Bound).map_or_else(Answer::ok, health_answer)
            }
            Ask::Gc { network, keep } => {
                let stale: Vec<String> = self
                    .state()
                    .iter()
                    .filter(|(k, r)| r.owner().network == network && !keep.contains(k))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in stale {
                    let Some(record) = self.take(&key) else { continue };
                    if let Err(e) = self.give_back(&key, &record) {
                        eprintln!("berth-dhcp keeper: GC forgot {}, but DHCPRELEASE failed: {e}", record.claim().address);
                    }
                }
                Answer::ok()
            }
        }
    }

    /// Records the address an ADD is about to request. A record of the same attachment is
    /// replaced, not released: the new exchange is the same client's at the server.
    fn pend(&self, pending: Pending) -> Answer {
        let key = pending.endpoint.owner.key();
        let mut state = self.state();
        if let Err(e) = self.persist(&key, &pending) {
            return Answer::refused(KeeperCode::Failed, e.to_string());
        }
        state.insert(key, Record::Pending(pending));
        // The scheduler may have to wake for its abandon time.
        self.wake.notify_all();
        Answer::ok()
    }

    fn hold(&self, lease: Lease, attempt: Option<u64>) -> Answer {
        let key = lease.endpoint.owner.key();
        let mut state = self.state();
        match (attempt, state.get(&key)) {
            (Some(a), Some(Record::Pending(p))) if p.attempt == a => {}
            (None, _) => {}
            (Some(_), None) => {
                drop(state);
                // A DEL or GC took the pending record while the ADD ran: the runtime wants
                // no lease there. This one may have been committed after their release.
                let _ = renewal::release(&lease.claim());
                return Answer::refused(
                    KeeperCode::Unknown,
                    "the attachment was deleted while its ADD ran; the lease is given back",
                );
            }
            (Some(_), Some(_)) => {
                return Answer::refused(
                    KeeperCode::Superseded,
                    "another ADD of this container and interface took over its lease",
                );
            }
        }
        if let Err(e) = self.persist(&key, &lease) {
            return Answer::refused(KeeperCode::Failed, e.to_string());
        }
        let next = lease.renew_at();
        state.insert(key, Record::Held(Held { lease, health: Health::Bound, next, busy: false }));
        self.wake.notify_all();
        Answer::ok()
    }

    /// Takes the attachment's record out of memory, so no renewal starts any more. A renewal
    /// under way is waited for (within its bound): a REQUEST of it (re)sent after the release
    /// would have the server commit the lease again, with nobody holding it. The file stays
    /// until [`Keeper::give_back`]: a keeper killed in between finds it again.
    fn take(&self, key: &str) -> Option<Record> {
        let deadline = std::time::Instant::now() + renewal::ATTEMPT + Duration::from_secs(2);
        let mut state = self.state();
        while matches!(state.get(key), Some(Record::Held(h)) if h.busy) {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else { break };
            state = self.wake.wait_timeout(state, left).map(|(s, _)| s).unwrap_or_else(|p| p.into_inner().0);
        }
        state.remove(key)
    }

    /// Sends DHCPRELEASE for a record [`Keeper::take`] took, then removes its file, unless a
    /// new record of the attachment was made meanwhile.
    fn give_back(&self, key: &str, record: &Record) -> Result<()> {
        let sent = renewal::release(&record.claim());
        let state = self.state();
        if !state.contains_key(key) {
            let _ = std::fs::remove_file(self.file(key));
        }
        sent
    }

    fn file(&self, key: &str) -> PathBuf {
        self.paths.state_dir.join(format!("{key}.json"))
    }

    fn persist(&self, key: &str, record: &impl serde::Serialize) -> Result<()> {
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        Ok(write_atomically(&self.file(key), &bytes)?)
    }

    /// The scheduler: releases the pending records whose ADD gave up, starts the renewals
    /// that are due, then sleeps until the next one (or until a new record or a finished
    /// renewal wakes it).
    fn schedule(self: Arc<Self>) {
        let mut state = self.state();
        loop {
            let t = now();
            self.release_abandoned(&mut state, t);
            for (key, record) in state.iter_mut() {
                let Record::Held(held) = record else { continue };
                if held.busy || held.next > t {
                    continue;
                }
                held.busy = true;
                let (keeper, key, lease) = (Arc::clone(&self), key.clone(), held.lease.clone());
                if spawn(move || keeper.renewed(&key, renewal::renew(&lease))).is_err() {
                    held.busy = false;
                }
            }
            let next = state.values().filter_map(Record::due).min();
            let wait = next.map_or(Duration::from_secs(3600), |n| Duration::from_secs(n.saturating_sub(t).max(1)));
            state = self.wake.wait_timeout(state, wait).map(|(s, _)| s).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Gives back, each on a thread of its own, the pending records whose ADD can no longer
    /// hand the lease over: it was killed, or it failed and the runtime did not DEL.
    fn release_abandoned(self: &Arc<Self>, state: &mut HashMap<String, Record>, t: u64) {
        let abandoned: Vec<String> =
            state.iter().filter(|(_, r)| matches!(r, Record::Pending(p) if p.abandon_at <= t)).map(|(k, _)| k.clone()).collect();
        for key in abandoned {
            let Some(Record::Pending(pending)) = state.remove(&key) else { continue };
            let (keeper, k, record) = (Arc::clone(self), key.clone(), Record::Pending(pending.clone()));
            let released = move || {
                if let Err(e) = keeper.give_back(&k, &record) {
                    eprintln!("berth-dhcp keeper: abandoned {}, but DHCPRELEASE failed: {e}", record.claim().address);
                }
            };
            if spawn(released).is_err() {
                // Tried again on the next pass.
                state.insert(key, Record::Pending(pending));
            }
        }
    }

    /// Records a renewal's outcome, unless the lease was released or replaced meanwhile.
    fn renewed(&self, key: &str, outcome: Outcome) {
        let mut state = self.state();
        // A record that is not the renewing one (replaced by a new ADD's) is left alone.
        let Some(Record::Held(held)) = state.get_mut(key).filter(|r| matches!(r, Record::Held(h) if h.busy)) else { return };
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
                let why = format!("the lease of {} on {} was not renewed: {e}", lease.address, lease.endpoint.owner.ifname);
                held.health = if now() >= lease.expires_at() { Health::Expired(why) } else { Health::Failing(why) };
                held.next = now() + renewal::retry_after(lease);
            }
            Outcome::Gone(why) => {
                eprintln!("berth-dhcp keeper: forgetting the lease of {}: {why}", held.lease.address);
                state.remove(key);
                let _ = std::fs::remove_file(self.file(key));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Endpoint;

    /// A keeper on a scratch directory, whose records' namespace does not exist: a release
    /// finds nothing to send from, so these tests need no namespace and no server.
    struct Scratch {
        dir: tempfile::TempDir,
        keeper: Arc<Keeper>,
    }

    impl Scratch {
        fn new() -> Scratch {
            let dir = tempfile::tempdir().unwrap();
            let keeper = Arc::new(Keeper::new(Paths::new(&dir.path().join("k.sock"))));
            Scratch { dir, keeper }
        }

        /// A keeper started again on the same files.
        fn restarted(&self) -> Arc<Keeper> {
            Arc::new(Keeper::new(Paths::new(&self.dir.path().join("k.sock"))))
        }

        fn files(&self) -> Vec<String> {
            let entries = std::fs::read_dir(self.dir.path().join("k.sock.leases"))
                .map(|d| d.flatten().collect::<Vec<_>>())
                .unwrap_or_default();
            entries.iter().map(|e| std::fs::read_to_string(e.path()).unwrap()).collect()
        }
    }

    fn owner(container: &str) -> Owner {
        Owner { network: "lan".into(), container_id: container.into(), ifname: "eth0".into() }
    }

    fn pending(container: &str, attempt: u64, abandon_at: u64) -> Pending {
        Pending {
            endpoint: Endpoint {
                owner: owner(container),
                netns: "/nonexistent/berth-dhcp-test".into(),
                netns_id: (0, 0),
                mac: [2, 0, 0, 0, 0, 1],
                provide: vec![],
            },
            address: "10.9.0.50".parse().unwrap(),
            server: "10.9.0.1".parse().unwrap(),
            attempt,
            abandon_at,
        }
    }

    fn lease(container: &str) -> Lease {
        let p = pending(container, 0, 0);
        Lease {
            endpoint: p.endpoint,
            request: vec![],
            address: "10.9.0.50/24".parse().unwrap(),
            server: p.server,
            routers: vec![],
            classless_routes: vec![],
            dns: vec![],
            domain: String::new(),
            priority: None,
            bound_at: now(),
            t1: 60,
            t2: 105,
            lease_time: 120,
        }
    }

    fn ask(keeper: &Keeper, ask: Ask) -> Answer {
        keeper.handle(ask)
    }

    fn hold(container: &str, attempt: u64) -> Ask {
        Ask::Hold { lease: Box::new(lease(container)), attempt: Some(attempt) }
    }

    fn check(keeper: &Keeper, container: &str) -> Answer {
        ask(keeper, Ask::Check { key: owner(container).key() })
    }

    #[test]
    fn a_pending_record_becomes_the_held_lease_of_its_attempt_only() {
        let s = Scratch::new();
        assert!(ask(&s.keeper, Ask::Pending { pending: Box::new(pending("c1", 7, u64::MAX)) }).ok);
        assert_eq!(s.files().len(), 1, "recorded on disk before the REQUEST goes out");
        assert_eq!(check(&s.keeper, "c1").code, Some(KeeperCode::Unknown), "pending is not held");
        let other = ask(&s.keeper, hold("c1", 8));
        assert_eq!(other.code, Some(KeeperCode::Superseded), "{}", other.message);
        assert!(ask(&s.keeper, hold("c1", 7)).ok);
        assert!(check(&s.keeper, "c1").ok);
        assert!(s.files()[0].contains("\"lease_time\":120"), "the file holds the lease now");
    }

    #[test]
    fn del_and_gc_release_pending_records_and_a_late_hold_is_refused() {
        let s = Scratch::new();
        assert!(ask(&s.keeper, Ask::Pending { pending: Box::new(pending("c1", 1, u64::MAX)) }).ok);
        assert!(ask(&s.keeper, Ask::Pending { pending: Box::new(pending("c2", 2, u64::MAX)) }).ok);
        assert!(ask(&s.keeper, Ask::Release { key: owner("c1").key() }).ok);
        let keep = vec![owner("c3").key()];
        assert!(ask(&s.keeper, Ask::Gc { network: "lan".into(), keep }).ok);
        assert!(s.files().is_empty() && s.keeper.state().is_empty());
        // The ADD that was still running when DEL came: its lease is not kept.
        let late = ask(&s.keeper, hold("c1", 1));
        assert_eq!(late.code, Some(KeeperCode::Unknown), "{}", late.message);
        assert!(s.files().is_empty());
    }

    #[test]
    fn a_second_add_replaces_the_pending_record_of_the_first() {
        let s = Scratch::new();
        assert!(ask(&s.keeper, Ask::Pending { pending: Box::new(pending("c1", 1, u64::MAX)) }).ok);
        assert!(ask(&s.keeper, Ask::Pending { pending: Box::new(pending("c1", 2, u64::MAX)) }).ok);
        assert_eq!(ask(&s.keeper, hold("c1", 1)).code, Some(KeeperCode::Superseded));
        assert!(ask(&s.keeper, hold("c1", 2)).ok);
        assert_eq!(s.files().len(), 1);
    }

    #[test]
    fn a_restarted_keeper_finds_pending_records_and_leases_of_before() {
        let s = Scratch::new();
        assert!(ask(&s.keeper, Ask::Pending { pending: Box::new(pending("c1", 5, u64::MAX)) }).ok);
        // A lease file written by a keeper of before pending records: a bare lease.
        assert!(ask(&s.keeper, Ask::Hold { lease: Box::new(lease("c2")), attempt: None }).ok);
        let again = s.restarted();
        assert!(check(&again, "c2").ok);
        assert!(ask(&again, hold("c1", 5)).ok, "the ADD under way when the keeper was killed hands its lease over");
    }

    #[test]
    fn a_pending_record_whose_add_gave_up_is_released_by_the_keeper() {
        let s = Scratch::new();
        let t = now();
        assert!(ask(&s.keeper, Ask::Pending { pending: Box::new(pending("c1", 1, t)) }).ok);
        assert!(ask(&s.keeper, Ask::Pending { pending: Box::new(pending("c2", 2, t + 3600)) }).ok);
        s.keeper.release_abandoned(&mut s.keeper.state(), t);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.files().len() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(s.files().len(), 1, "the abandoned record's file is gone, the other stays");
        assert_eq!(ask(&s.keeper, hold("c1", 1)).code, Some(KeeperCode::Unknown));
        assert!(ask(&s.keeper, hold("c2", 2)).ok);
    }

    #[test]
    fn a_release_waits_for_the_renewal_under_way() {
        let s = Scratch::new();
        assert!(ask(&s.keeper, Ask::Hold { lease: Box::new(lease("c1")), attempt: None }).ok);
        let key = owner("c1").key();
        if let Some(Record::Held(h)) = s.keeper.state().get_mut(&key) {
            h.busy = true;
        }
        let keeper = Arc::clone(&s.keeper);
        let release = std::thread::spawn(move || ask(&keeper, Ask::Release { key: owner("c1").key() }));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!release.is_finished(), "DEL waits while the renewal may still send");
        s.keeper.renewed(&key, Outcome::Failed(crate::error::DhcpError::Malformed("no answer".into())));
        assert!(release.join().unwrap().ok);
        assert!(s.files().is_empty() && s.keeper.state().is_empty());
    }

    #[test]
    fn a_keeper_of_before_pending_records_is_recognised_by_its_refusal() {
        // What such a keeper answers: its Ask has no `pending` operation.
        #[derive(Debug, serde::Deserialize)]
        #[serde(tag = "op", rename_all = "kebab-case")]
        #[allow(dead_code)]
        enum Old {
            Hold { lease: Box<Lease> },
            Release { key: String },
        }
        let body = serde_json::to_vec(&Ask::Pending { pending: Box::new(pending("c1", 1, 0)) }).unwrap();
        let e = serde_json::from_slice::<Old>(&body).unwrap_err();
        let refused = crate::error::DhcpError::Keeper {
            socket: "/run/berth/dhcp.sock".into(),
            message: format!("cannot decode the request: {e}"),
            code: KeeperCode::Failed,
        };
        assert!(crate::proto::predates_pending(&refused), "{refused}");
        // and it understands the new Hold
        let body = serde_json::to_vec(&hold("c1", 1)).unwrap();
        assert!(serde_json::from_slice::<Old>(&body).is_ok());
    }
}
