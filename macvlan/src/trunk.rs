//! 802.1q trunk mode: the macvlan's parent is the sub-interface `MASTER.VID`, created on
//! the first ADD that needs it and removed by the DEL after which no macvlan uses it.
//!
//! Sub-interfaces berth creates carry the alias [`ALIAS`]; one that was there before (made
//! by the administrator) is used but never removed. Containers' macvlans live in their own
//! namespaces, where the parent's namespace cannot list them, so "still in use" is asked of
//! every network namespace the system shows (named ones and those of processes).

use berth_cni::{CniError, CniResult, Code};
use berth_netlink::{Link, Netlink};
use berth_netns::NetNs;
use berth_util::fs::LockFile;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// IFLA_IFALIAS of the sub-interfaces berth-macvlan created (`ip -d link` shows it).
pub const ALIAS: &str = "berth-macvlan trunk";

/// Serialises creating and removing sub-interfaces between concurrent plugin runs: without
/// it a DEL could remove the sub-interface an ADD has just found.
const LOCK_PATH: &str = "/run/berth/macvlan-trunk.lock";

/// Waits for the trunk lock; held until the result is dropped.
pub fn lock() -> CniResult<LockFile> {
    Ok(LockFile::acquire(Path::new(LOCK_PATH))?)
}

/// `MASTER.VID`, which must fit in an interface name.
pub fn sub_name(master: &str, vid: u16) -> CniResult<String> {
    let name = format!("{master}.{vid}");
    if name.len() > 15 {
        return Err(CniError::invalid_config(format!(
            "vlan: the sub-interface name {name} is longer than 15 bytes (choose a shorter master)"
        )));
    }
    Ok(name)
}

/// The sub-interface for `vid` on `master`, created (and brought up) when missing. An
/// existing link of that name must be that VLAN on that master.
pub fn ensure(nl: &mut Netlink, master: &Link, vid: u16) -> CniResult<Link> {
    let name = sub_name(&master.name, vid)?;
    let link = match nl.link_by_name(&name)? {
        Some(existing) => {
            let detail = nl.link_detail(existing.index)?;
            let matches = detail.as_ref().is_some_and(|d| {
                d.link.kind.as_deref() == Some("vlan") && d.vlan_id == Some(vid) && d.parent == Some(master.index)
            });
            if !matches {
                return Err(CniError::new(
                    Code::Kernel,
                    format!("{name} exists and is not VLAN {vid} on {}", master.name),
                ));
            }
            existing
        }
        None => {
            let link = nl.create_vlan(&name, master.index, vid)?;
            if let Err(e) = nl.set_alias(link.index, ALIAS) {
                let _ = nl.delete_link(link.index);
                return Err(e.into());
            }
            link
        }
    };
    if !link.up {
        nl.set_up(link.index)?;
    }
    Ok(link)
}

/// Removes the sub-interface `name` (in `parent_ns`, reached through `nl`) when berth made
/// it and no macvlan in any namespace sits on it any more. `Ok(true)` when it was removed.
pub fn release_if_unused(nl: &mut Netlink, parent_ns: &NetNs, name: &str) -> CniResult<bool> {
    let Some(link) = nl.link_by_name(name)? else { return Ok(false) };
    let Some(detail) = nl.link_detail(link.index)? else { return Ok(false) };
    if detail.link.kind.as_deref() != Some("vlan") || detail.alias.as_deref() != Some(ALIAS) {
        return Ok(false);
    }
    if in_use(nl, parent_ns, link.index)? {
        return Ok(false);
    }
    Ok(nl.delete_link(link.index)?)
}

/// Whether any link still has `index` (in `parent_ns`) as its parent.
fn in_use(nl: &mut Netlink, parent_ns: &NetNs, index: u32) -> CniResult<bool> {
    // In the parent's own namespace (linkInContainer, or a host-side macvlan).
    if nl.links_detailed()?.iter().any(|l| l.parent == Some(index) && l.parent_netnsid.is_none()) {
        return Ok(true);
    }
    let parent_id = parent_ns.id()?;
    let mut seen = HashSet::from([parent_id]);
    for path in namespace_paths() {
        // Namespaces come and go (processes exit): one that cannot be opened holds nothing.
        let Ok(ns) = NetNs::open(&path) else { continue };
        let Ok(id) = ns.id() else { continue };
        if !seen.insert(id) {
            continue;
        }
        let Ok(mut other) = Netlink::open_in(&ns) else { continue };
        let Ok(links) = other.links_detailed() else { continue };
        let candidates: Vec<i32> =
            links.iter().filter(|l| l.parent == Some(index)).filter_map(|l| l.parent_netnsid).collect();
        if candidates.is_empty() {
            continue;
        }
        // The same index in another namespace is another link: match the namespace too.
        if let Some(nsid) = other.nsid_of(parent_ns)? {
            if candidates.contains(&nsid) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Every network namespace the system shows: nsfs bind mounts (`ip netns`, runtimes'
/// pinned namespaces) and those of running processes.
fn namespace_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let fstype = fields.iter().position(|f| *f == "-").and_then(|i| fields.get(i + 1));
            if fstype == Some(&"nsfs") && fields.get(3).is_some_and(|root| root.starts_with("net:")) {
                if let Some(mount_point) = fields.get(4) {
                    paths.push(PathBuf::from(unescape(mount_point)));
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                paths.push(entry.path().join("ns/net"));
            }
        }
    }
    paths
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_interface_names() {
        assert_eq!(sub_name("eth0", 100).unwrap(), "eth0.100");
        assert_eq!(sub_name("enp0s31f6abcd", 4094).unwrap_err().code, 7);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/run/netns/a\\040b"), "/run/netns/a b");
        assert_eq!(unescape("/run/netns/plain"), "/run/netns/plain");
    }
}
