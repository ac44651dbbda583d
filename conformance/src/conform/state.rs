//! What a plugin can leave behind, looked at before the first ADD and after the last DEL:
//! links, addresses and routes of the test host, its nftables and iptables rules, files that
//! name a container of the run, mounts, and processes of the plugins under test.

use crate::TestHost;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// One line per thing found, so two snapshots compare as sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub items: BTreeSet<String>,
}

/// Where files a plugin keeps per container may live.
pub struct Places<'a> {
    pub scratch: &'a Path,
    /// Host links kept by design (a bridge): neither they nor their addresses and routes count.
    pub keeps: &'a [&'a str],
}

impl Snapshot {
    pub fn take(host: &TestHost, places: &Places) -> Snapshot {
        let mut items = BTreeSet::new();
        kernel(host, places.keeps, &mut items);
        for (tool, args) in [("nft", &["list", "ruleset"][..]), ("iptables-save", &[][..]), ("ip6tables-save", &[][..])] {
            for line in firewall_lines(host, tool, args) {
                items.insert(format!("{tool}: {line}"));
            }
        }
        files(places.scratch, true, &mut items);
        // Machine-wide folders other runs share: only files naming a container of this run.
        for dir in ["/var/lib/cni", "/run/cni"] {
            files(Path::new(dir), false, &mut items);
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            // Named namespaces are the fixture's (and other runs'): the fixture removes its own.
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| !m.starts_with("/run/netns/") && !m.starts_with("/var/run/netns/")) {
                items.insert(format!("mount: {m}"));
            }
        }
        processes(host, &mut items);
        Snapshot { items }
    }

    /// What `self` holds that `before` did not and that belongs to an attachment: firewall
    /// lines count only when they name one of `markers` (a container ID or address of the
    /// run), since chains shared by a whole network (CNI-FORWARD, say) outlive every DEL by
    /// design. Returns the leaks and how many network-level lines were let through.
    pub fn leaks_since(&self, before: &Snapshot, markers: &[String]) -> (Vec<String>, usize) {
        let mut shared = 0;
        let mut leaks = Vec::new();
        for item in self.items.difference(&before.items) {
            let firewall = ["nft:", "iptables-save:", "ip6tables-save:"].iter().any(|t| item.starts_with(t));
            if firewall && !markers.iter().any(|m| mentions(item, m)) {
                shared += 1;
            } else {
                leaks.push(item.clone());
            }
        }
        (leaks, shared)
    }
}

/// Whether `line` names `marker` as a whole word (10.99.0.2 is not in 10.99.0.23).
fn mentions(line: &str, marker: &str) -> bool {
    line.match_indices(marker).any(|(i, _)| {
        let next = line[i + marker.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == ':')
    })
}

/// Part of every container ID berth-conform makes, so files naming one are found.
pub const MARKER: &str = "berthconform";

fn kernel(host: &TestHost, keeps: &[&str], items: &mut BTreeSet<String>) {
    let mut nl = host.netlink();
    let links = nl.links().unwrap_or_default();
    let kept = |index: Option<u32>| links.iter().any(|l| Some(l.index) == index && keeps.contains(&l.name.as_str()));
    for l in links.iter().filter(|l| !keeps.contains(&l.name.as_str())) {
        items.insert(format!("link: {} ({})", l.name, l.kind.as_deref().unwrap_or("device")));
    }
    for (index, addr) in nl.addresses(None).unwrap_or_default() {
        if !kept(Some(index)) {
            let name = links.iter().find(|l| l.index == index).map_or("?", |l| l.name.as_str());
            items.insert(format!("address: {addr} on {name}"));
        }
    }
    for r in nl.routes().unwrap_or_default().into_iter().filter(|r| !kept(r.oif)) {
        // IPv6 link-local routes come and go with links; they are the kernel's, not a plugin's.
        if !r.dst.to_string().starts_with("fe80:") {
            items.insert(format!("route: {} via {:?} dev {:?}", r.dst, r.gateway, r.oif));
        }
    }
}

/// Rules, set and map elements and user chains; tables and built-in chains that the kernel
/// or the tool creates on first use and never removes are left out, as are counters.
pub fn firewall_lines(host: &TestHost, tool: &str, args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new(tool);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    if host.ns.prepare_command(&mut cmd).is_err() {
        return Vec::new();
    }
    // A tool that is not installed has no rules to show.
    let Ok(out) = cmd.output() else { return Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().map(str::trim).filter(|l| firewall_line_counts(l)).map(strip_counters).collect()
}

fn firewall_line_counts(line: &str) -> bool {
    const BUILT_IN: &[&str] = &[":PREROUTING ", ":INPUT ", ":FORWARD ", ":OUTPUT ", ":POSTROUTING "];
    let structural = ["table ", "chain ", "type ", "policy ", "flags ", "}", "*", "COMMIT", "#", "set ", "map "];
    !line.is_empty() && !structural.iter().any(|s| line.starts_with(s)) && !BUILT_IN.iter().any(|b| line.starts_with(b))
}

fn strip_counters(line: &str) -> String {
    // iptables-save prints ":CHAIN - [packets:bytes]"; nft prints "counter packets N bytes M".
    let line = line.split(" [").next().unwrap_or(line);
    match line.find("counter packets") {
        Some(i) => line[..i].to_string(),
        None => line.to_string(),
    }
}

fn files(dir: &Path, by_name: bool, items: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            files(&path, by_name, items);
        } else if names_attachment(&path, by_name) {
            items.insert(format!("file: {}", path.display()));
        }
    }
}

/// A file kept for one attachment: named after an address (host-local's allocations) or
/// holding a container ID of the run. Locks and "last reserved" bookkeeping are not.
fn names_attachment(path: &Path, by_name: bool) -> bool {
    let named = by_name && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok());
    let small = std::fs::metadata(path).is_ok_and(|m| m.len() < 1 << 20);
    named || (small && std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(MARKER)))
}

/// Processes in the test host's namespace: a plugin runs there, so a helper or daemon it
/// leaves running stays there (other runs' processes never are).
fn processes(host: &TestHost, items: &mut BTreeSet<String>) {
    let host_ns = std::fs::metadata(host.path()).map(|m| m.ino()).ok();
    for pid in crate::process::processes(|_| true) {
        let net = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino()).ok();
        if net.is_some() && net == host_ns {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_or_else(|_| "?".into(), |e| e.display().to_string());
            items.insert(format!("process: {pid} {exe}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_lines_keep_rules_and_user_chains_only() {
        assert!(!firewall_line_counts(":POSTROUTING ACCEPT [0:0]"));
        assert!(firewall_line_counts(":CNI-abc - [0:0]"));
        assert!(firewall_line_counts("-A POSTROUTING -s 10.99.0.2/32 -j CNI-abc"));
        assert!(!firewall_line_counts("type nat hook postrouting priority srcnat; policy accept;"));
        assert!(firewall_line_counts("ip saddr 10.99.0.2 masquerade"));
        assert_eq!(strip_counters(":CNI-abc - [3:120]"), ":CNI-abc -");
        assert_eq!(strip_counters("ip saddr 1.2.3.4 counter packets 3 bytes 9 accept"), "ip saddr 1.2.3.4 ");
    }
}
