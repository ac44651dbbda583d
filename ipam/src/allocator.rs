//! Which address a container gets, over a locked [`Store`]: the reference host-local's
//! round-robin, one address per range set.

use crate::config::{Attachment, RangeSet};
use crate::store::{Allocation, Index, Owner, Store};
use berth_cni::{CniError, CniResult, Code};
use std::collections::HashSet;
use std::net::IpAddr;

/// An address held by the container: `ranges[set].ranges[range]` holds `ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub set: usize,
    pub range: usize,
    pub ip: IpAddr,
}

/// One address per range set for `owner`, all or nothing. In each set: the address the owner
/// already holds there (a repeated ADD), else the requested one, else the first free address
/// after the set's last reserved one, wrapping around.
pub fn allocate(store: &Store, sets: &[RangeSet], owner: &Owner) -> CniResult<Vec<Lease>> {
    // Names only, and the owner's index: the cost of an ADD must not grow with the number of
    // containers on the network.
    store.ensure_indexed()?;
    let held_before = match store.index(owner) {
        None => vec![],
        Some(Index { ips, complete: true }) => ips,
        // An ADD of this owner was killed: it may hold an address its index does not list.
        Some(Index { complete: false, .. }) => store.held_by(owner)?,
    };
    let reserves = sets.iter().any(|set| !held_before.iter().any(|ip| set.contains(*ip)));
    if reserves {
        store.write_pending_index(owner, &held_before)?;
    }
    // Listed only when reserving in round-robin order does not succeed at once.
    let mut taken: Option<HashSet<IpAddr>> = None;
    let mut leases = Vec::with_capacity(sets.len());
    let mut fresh = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        match allocate_in(store, i, set, owner, &held_before, &mut taken) {
            Ok((lease, new)) => {
                if new {
                    fresh.push(lease.ip);
                }
                leases.push(lease);
            }
            Err(e) => {
                undo(store, owner, reserves.then_some(&held_before), fresh);
                return Err(e);
            }
        }
    }
    let ips: Vec<IpAddr> = leases.iter().map(|l| l.ip).collect();
    if let Err(e) = store.write_index(owner, &ips) {
        undo(store, owner, Some(&held_before), fresh);
        return Err(e);
    }
    Ok(leases)
}

/// A failed ADD gives back the addresses it reserved and puts the owner's index back as it
/// was (`held_before`, when the ADD rewrote it): none at all when the owner holds nothing, so
/// a failed ADD leaves no file behind.
fn undo(store: &Store, owner: &Owner, held_before: Option<&Vec<IpAddr>>, fresh: Vec<IpAddr>) {
    for ip in fresh {
        let _ = store.release(ip);
    }
    match held_before {
        Some(held) if held.is_empty() => store.remove_index(owner),
        Some(held) => {
            let _ = store.write_index(owner, held);
        }
        None => {}
    }
}

fn allocate_in(
    store: &Store,
    i: usize,
    set: &RangeSet,
    owner: &Owner,
    held_before: &[IpAddr],
    taken: &mut Option<HashSet<IpAddr>>,
) -> CniResult<(Lease, bool)> {
    if let Some(&held) = held_before.iter().find(|ip| set.contains(**ip)) {
        if let Some(req) = set.requested.filter(|r| *r != held) {
            return Err(CniError::invalid_config(format!(
                "{owner} already holds {held} in range set {i} ({set}); it cannot also take the requested {req}"
            )));
        }
        return Ok((lease(i, set, held)?, false));
    }

    let ip = match set.requested {
        Some(req) => reserve_requested(store, req, owner)?,
        None => reserve_next(store, i, set, owner, taken)?,
    };
    if let Some(taken) = taken {
        taken.insert(ip);
    }
    // The round-robin cursor is a hint: losing it only restarts the search at the range start.
    let _ = store.set_last_reserved(i, ip);
    Ok((lease(i, set, ip)?, true))
}

fn reserve_requested(store: &Store, req: IpAddr, owner: &Owner) -> CniResult<IpAddr> {
    if !store.reserve(req, owner)? {
        let by = store.owner_of(req).map(|o| format!(" to {o}")).unwrap_or_default();
        return Err(CniError::invalid_config(format!("requested address {req} is already allocated{by}")));
    }
    Ok(req)
}

/// The next free address of set `i` in round-robin order, reserved for `owner`.
fn reserve_next(store: &Store, i: usize, set: &RangeSet, owner: &Owner, taken: &mut Option<HashSet<IpAddr>>) -> CniResult<IpAddr> {
    let last = store.last_reserved(i);
    // Usually the address after the last one handed out is free: a few link(2) calls find it
    // without reading the directory, whose size grows with the containers.
    let mut tries = 0;
    let direct = next_free(set, last, |ip| {
        tries += 1;
        if tries > DIRECT_TRIES {
            return Ok(Step::GiveUp);
        }
        Ok(if store.reserve(ip, owner)? { Step::Taken } else { Step::Next })
    })?;
    if let Some(ip) = direct {
        return Ok(ip);
    }
    let mut taken_now = match taken.take() {
        Some(t) => t,
        None => store.taken()?,
    };
    // Full: addresses whose containers died with an earlier boot make room.
    if free_count(set, &taken_now) == 0 && store.free_earlier_boots()? > 0 {
        taken_now = store.taken()?;
    }
    let taken = taken.insert(taken_now);
    if free_count(set, taken) == 0 {
        return Err(exhausted(i, set));
    }
    let found = next_free(set, last, |ip| Ok(if !taken.contains(&ip) && store.reserve(ip, owner)? { Step::Taken } else { Step::Next }))?;
    found.ok_or_else(|| exhausted(i, set))
}

fn lease(set_index: usize, set: &RangeSet, ip: IpAddr) -> CniResult<Lease> {
    let range =
        set.range_for(ip).ok_or_else(|| CniError::invalid_config(format!("{ip} is outside range set {set_index} ({set})")))?;
    Ok(Lease { set: set_index, range, ip })
}

pub fn exhausted(i: usize, set: &RangeSet) -> CniError {
    CniError::new(Code::NotAvailable, format!("no free address left in range set {i} ({set})"))
}

/// How many addresses `set` can still hand out.
pub fn free_count(set: &RangeSet, taken: &HashSet<IpAddr>) -> u128 {
    let used = taken.iter().filter(|ip| set.allows(**ip)).count() as u128;
    set.capacity().saturating_sub(used)
}

/// The first address `try_take` accepts, in the reference's order: from the address after
/// `last` (when it is in the set) to the end of its range, through the following ranges,
/// wrapping around to the first, and back to `last` itself. Without `last`, from the start of
/// the first range.
/// How many addresses an ADD tries to reserve directly, in round-robin order, before it lists
/// the directory to skip the taken ones (and to know whether any is left).
const DIRECT_TRIES: usize = 16;

/// What `try_take` did with a candidate address.
enum Step {
    Taken,
    Next,
    GiveUp,
}

fn next_free(
    set: &RangeSet,
    last: Option<IpAddr>,
    mut try_take: impl FnMut(IpAddr) -> CniResult<Step>,
) -> CniResult<Option<IpAddr>> {
    let n = set.ranges.len();
    let whole = |r: usize| {
        let (lo, hi) = set.ranges[r].bounds();
        (r, lo, hi)
    };
    let segments: Vec<(usize, u128, u128)> = match last.and_then(|ip| set.range_for(ip).map(|r| (r, crate::addr::to_int(ip)))) {
        Some((k, at)) => {
            let (_, lo, hi) = whole(k);
            let mut segments = Vec::with_capacity(n + 1);
            if at < hi {
                segments.push((k, at + 1, hi));
            }
            segments.extend((k + 1..n).chain(0..k).map(whole));
            segments.push((k, lo, at));
            segments
        }
        None => (0..n).map(whole).collect(),
    };
    for (r, lo, hi) in segments {
        let range = &set.ranges[r];
        let mut from = lo;
        while let Some(ip) = range.next_allocatable(from) {
            let at = crate::addr::to_int(ip);
            if at > hi {
                break;
            }
            match try_take(ip)? {
                Step::Taken => return Ok(Some(ip)),
                Step::GiveUp => return Ok(None),
                Step::Next => {}
            }
            match at.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
    }
    Ok(None)
}

/// Releases every address of `(container_id, ifname)`; how many there were. Those of its
/// index when that is complete; otherwise (an ADD was killed, no index, a store written by
/// another tool) every allocation file is read, so addresses an interrupted ADD left
/// unindexed go too.
pub fn release(store: &Store, container_id: &str, ifname: &str) -> CniResult<usize> {
    let owner = Owner::new(container_id, ifname);
    let released = release_each(store, store.held_by(&owner)?.into_iter())?;
    store.remove_index(&owner);
    Ok(released)
}

/// Releases every address that belongs to none of `valid` (including files naming no owner).
pub fn gc(store: &Store, valid: &[Attachment]) -> CniResult<usize> {
    let kept = |o: &Owner| valid.iter().any(|v| o.is(&v.container_id, &v.ifname));
    let released = release_where(store, |a| a.owner.as_ref().is_none_or(|o| !kept(o)))?;
    store.prune_indexes(kept)?;
    Ok(released)
}

/// Releases what `doomed` picks, going on past failures and reporting the first.
fn release_where(store: &Store, doomed: impl Fn(&Allocation) -> bool) -> CniResult<usize> {
    release_each(store, store.allocations()?.iter().filter(|a| doomed(a)).map(|a| a.ip))
}

/// Releases each address, going on past failures and reporting the first.
fn release_each(store: &Store, ips: impl Iterator<Item = IpAddr>) -> CniResult<usize> {
    let mut released = 0;
    let mut first_error = None;
    for ip in ips {
        match store.release(ip) {
            Ok(()) => released += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(released), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostLocalConf;
    use crate::testutil::TempDir;
    use berth_cni::spec::NetConf;
    use serde_json::{json, Value};

    struct Fixture {
        tmp: TempDir,
        ipam: Value,
    }

    impl Fixture {
        fn new(mut ipam: Value) -> Fixture {
            let tmp = TempDir::new();
            ipam["dataDir"] = json!(tmp.path());
            Fixture { tmp, ipam }
        }

        fn conf(&self, args: &[(&str, &str)]) -> HostLocalConf {
            let conf: NetConf = serde_json::from_value(json!({"cniVersion": "1.0.0", "name": "net", "ipam": self.ipam})).unwrap();
            let args: Vec<(String, String)> = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            HostLocalConf::parse(&conf, &args).unwrap()
        }

        fn store(&self) -> Store {
            Store::open(&self.conf(&[]).store).unwrap()
        }

        fn add_as(&self, id: &str, ifname: &str, args: &[(&str, &str)]) -> CniResult<Vec<String>> {
            let leases = allocate(&self.store(), &self.conf(args).range_sets, &Owner::new(id, ifname))?;
            Ok(leases.iter().map(|l| l.ip.to_string()).collect())
        }

        fn add(&self, id: &str) -> CniResult<Vec<String>> {
            self.add_as(id, "eth0", &[])
        }

        fn add1(&self, id: &str) -> String {
            let mut ips = self.add(id).unwrap();
            assert_eq!(ips.len(), 1);
            ips.remove(0)
        }

        fn del(&self, id: &str) -> usize {
            release(&self.store(), id, "eth0").unwrap()
        }

        /// The store as the reference lays it out (berth's owner indexes left out).
        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.tmp.path().join("net"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !n.starts_with(".owner-"))
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn owner_indexes_follow_adds_dels_and_gc() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/24"}));
        let indexes = || std::fs::read_dir(f.tmp.path().join("net")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".owner-")).count();
        let first = f.add("a").unwrap();
        f.add("b").unwrap();
        assert_eq!(indexes(), 3, "two owners and the marker");
        // The index is what a repeated ADD finds; the allocation file still has the last word.
        assert_eq!(f.add("a").unwrap(), first);
        f.del("a");
        assert_eq!(indexes(), 2);
        let valid = [Attachment { container_id: "zzz".into(), ifname: "eth0".into() }];
        gc(&f.store(), &valid).unwrap();
        assert_eq!(indexes(), 1, "only the marker");
    }

    /// What an ADD killed after reserving an address but before recording it leaves: an
    /// incomplete index and an allocation file it does not list.
    fn killed_add(f: &Fixture, id: &str, ip: &str) {
        let store = f.store();
        let owner = Owner::new(id, "eth0");
        store.write_pending_index(&owner, &[]).unwrap();
        assert!(store.reserve(ip.parse().unwrap(), &owner).unwrap());
    }

    #[test]
    fn del_after_a_killed_add_finds_the_unrecorded_address() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/24"}));
        f.add("a").unwrap();
        killed_add(&f, "k", "10.0.0.50");
        assert_eq!(f.del("k"), 1, "released although its index does not list it");
        assert_eq!(f.del("a"), 1, "a complete index is enough");
        assert_eq!(f.files(), ["last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn add_after_a_killed_add_takes_over_the_unrecorded_address() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/24"}));
        f.add("a").unwrap();
        killed_add(&f, "k", "10.0.0.50");
        assert_eq!(f.add("k").unwrap(), ["10.0.0.50"], "no second address for the same owner");
        let index = f.store().index(&Owner::new("k", "eth0")).unwrap();
        assert!(index.complete, "{index:?}");
        assert_eq!(f.del("k"), 1);
    }

    #[test]
    fn round_robin_never_reuses_a_released_address_early() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/29"}));
        assert_eq!(f.add1("a"), "10.0.0.2");
        assert_eq!(f.add1("b"), "10.0.0.3");
        assert_eq!(f.del("a"), 1);
        // .2 is free again, but the cursor is at .3.
        assert_eq!(f.add1("c"), "10.0.0.4");
        assert_eq!(f.files(), ["10.0.0.3", "10.0.0.4", "last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn wraps_around_and_then_runs_out() {
        // /29 with the gateway at .1: .2-.6 can be handed out.
        let f = Fixture::new(json!({"subnet": "10.0.0.0/29"}));
        let got: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|id| f.add1(id)).collect();
        assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        let e = f.add("f").unwrap_err();
        assert_eq!(e.code, Code::NotAvailable as u32);
        assert!(e.msg.contains("range set 0") && e.msg.contains("10.0.0.0/29"), "{e}");
        f.del("c");
        // After .6 the search wraps to the start and finds .4.
        assert_eq!(f.add1("f"), "10.0.0.4");
    }

    /// Rewrites the boot an owner's index records, as if it was allocated in another boot.
    fn allocated_in_boot(f: &Fixture, id: &str, boot: &str) {
        let dir = f.tmp.path().join("net");
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if entry.file_name().to_string_lossy().starts_with(".owner-") && text.starts_with(&format!("{id}\r\n")) {
                let lines: Vec<String> = text
                    .split("\r\n")
                    .map(|l| if l.starts_with("boot:") { format!("boot:{boot}") } else { l.to_string() })
                    .collect();
                std::fs::write(entry.path(), lines.join("\r\n")).unwrap();
            }
        }
    }

    #[test]
    fn a_full_range_makes_room_from_containers_of_an_earlier_boot_only() {
        // /30 with the gateway at .1: only .2 can be handed out.
        let f = Fixture::new(json!({"subnet": "10.0.0.0/30"}));
        assert_eq!(f.add1("alive"), "10.0.0.2");
        let full = f.add("newcomer").unwrap_err();
        assert_eq!(full.code, Code::NotAvailable as u32, "a container of this boot is never freed: {full}");
        allocated_in_boot(&f, "alive", "00000000-0000-0000-0000-000000000000");
        assert_eq!(f.add1("newcomer"), "10.0.0.2", "the earlier boot's address is free again");
        assert_eq!(f.store().owner_of("10.0.0.2".parse().unwrap()), Some(Owner::new("newcomer", "eth0")));
        assert_eq!(f.del("alive"), 0, "its index went with its address");
    }

    #[test]
    fn allocations_without_a_recorded_boot_are_never_freed_for_room() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/30"}));
        // Written by the reference plugin (or an older berth): no boot recorded.
        std::fs::create_dir_all(f.tmp.path().join("net")).unwrap();
        std::fs::write(f.tmp.path().join("net/10.0.0.2"), "ref\r\neth0").unwrap();
        assert_eq!(f.add("newcomer").unwrap_err().code, Code::NotAvailable as u32);
    }

    #[test]
    fn walks_across_the_ranges_of_a_set() {
        let f = Fixture::new(json!({"ranges": [[
            {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.11"},
            {"subnet": "10.0.1.0/24", "rangeStart": "10.0.1.10", "rangeEnd": "10.0.1.10"}
        ]]}));
        let got: Vec<String> = ["a", "b", "c"].iter().map(|id| f.add1(id)).collect();
        assert_eq!(got, ["10.0.0.10", "10.0.0.11", "10.0.1.10"]);
        f.del("a");
        assert_eq!(f.add1("d"), "10.0.0.10");
    }

    #[test]
    fn excluded_addresses_are_skipped() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/29", "exclude": ["10.0.0.2", "10.0.0.4/31"]}));
        assert_eq!(f.add1("a"), "10.0.0.3");
        assert_eq!(f.add1("b"), "10.0.0.6");
        assert_eq!(f.add("c").unwrap_err().code, 50);
    }

    #[test]
    fn repeated_add_returns_the_same_addresses() {
        let f = Fixture::new(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
        let first = f.add("a").unwrap();
        assert_eq!(first, ["10.0.0.2", "fd00::2"]);
        assert_eq!(f.add("a").unwrap(), first);
        // Another interface of the same container is another attachment.
        assert_eq!(f.add_as("a", "eth1", &[]).unwrap(), ["10.0.0.3", "fd00::3"]);
        assert_eq!(f.del("a"), 2);
        assert_eq!(f.files(), ["10.0.0.3", "fd00::3", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
    }

    #[test]
    fn requested_address_is_taken_once() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/24"}));
        let ip50 = [("IP", "10.0.0.50")];
        assert_eq!(f.add_as("a", "eth0", &ip50).unwrap(), ["10.0.0.50"]);
        assert_eq!(f.add_as("a", "eth0", &ip50).unwrap(), ["10.0.0.50"]);
        let e = f.add_as("b", "eth0", &ip50).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("10.0.0.50 is already allocated to container a (eth0)"), "{e}");
        // Asking for another address while holding one is refused, not silently ignored.
        let e = f.add_as("a", "eth0", &[("IP", "10.0.0.60")]).unwrap_err();
        assert!(e.msg.contains("already holds 10.0.0.50"), "{e}");
        // The round-robin continues after the requested address, as in the reference.
        assert_eq!(f.add1("c"), "10.0.0.51");
    }

    #[test]
    fn failure_in_a_later_set_undoes_the_earlier_ones() {
        let f = Fixture::new(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/30"}]]}));
        assert_eq!(f.add("a").unwrap(), ["10.0.0.2", "10.1.0.2"]);
        // 10.1.0.0/30 had one address; the second container cannot get one, nor keep 10.0.0.3.
        assert_eq!(f.add("b").unwrap_err().code, 50);
        let held: Vec<IpAddr> = f.store().allocations().unwrap().iter().map(|a| a.ip).collect();
        assert_eq!(held, ["10.0.0.2".parse::<IpAddr>().unwrap(), "10.1.0.2".parse().unwrap()]);
    }

    /// Black-box fuzzing (berth-fuzz, tests/blackbox.rs): an ADD whose first range set had every
    /// address excluded (`"exclude": ["10.22.0.0/16"]` in 10.22.0.0/16) failed with code 50
    /// but left the container's owner index (`.owner-HASH`) behind, one more file per failed
    /// container for ever.
    #[test]
    fn a_failed_add_leaves_no_owner_index() {
        let f =
            Fixture::new(json!({"ranges": [[{"subnet": "10.0.0.0/24", "exclude": ["10.0.0.0/24"]}], [{"subnet": "fd00::/64"}]]}));
        assert_eq!(f.add("a").unwrap_err().code, 50);
        assert_eq!(f.store().index(&Owner::new("a", "eth0")), None);
        let g = Fixture::new(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/30"}]]}));
        g.add("a").unwrap();
        assert!(g.add("b").is_err());
        assert_eq!(g.store().index(&Owner::new("b", "eth0")), None, "nor when a later set fails");
        assert!(g.store().index(&Owner::new("a", "eth0")).is_some_and(|i| i.complete), "another owner's is kept");
    }

    #[test]
    fn gc_keeps_exactly_the_valid_attachments() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/24"}));
        for id in ["a", "b", "c"] {
            f.add1(id);
        }
        std::fs::write(f.tmp.path().join("net/10.0.0.99"), "").unwrap();
        std::fs::write(f.tmp.path().join("net/10.0.0.98"), "legacy").unwrap();
        let valid = [
            Attachment { container_id: "b".into(), ifname: "eth0".into() },
            Attachment { container_id: "legacy".into(), ifname: "eth3".into() },
            Attachment { container_id: "a".into(), ifname: "eth1".into() },
        ];
        assert_eq!(gc(&f.store(), &valid).unwrap(), 3);
        assert_eq!(f.files(), ["10.0.0.3", "10.0.0.98", "last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn free_count_ignores_foreign_and_blocked_addresses() {
        let f = Fixture::new(json!({"subnet": "10.0.0.0/30"}));
        let conf = f.conf(&[]);
        let set = &conf.range_sets[0];
        let ips = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect::<HashSet<IpAddr>>();
        assert_eq!(free_count(set, &ips(&[])), 1);
        assert_eq!(free_count(set, &ips(&["10.0.0.1", "10.9.9.9"])), 1);
        assert_eq!(free_count(set, &ips(&["10.0.0.2"])), 0);
    }

    #[test]
    fn large_ipv6_ranges_are_cheap() {
        let f = Fixture::new(json!({"subnet": "fd00::/64"}));
        assert_eq!(f.add1("a"), "fd00::2");
        assert_eq!(f.conf(&[]).range_sets[0].capacity(), (1u128 << 64) - 2);
    }
}
