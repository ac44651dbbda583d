//! A network's records on disk: `DIR/records.json`, replaced whole with
//! [`write_durably`](berth_util::fs::write_durably) under `DIR/lock`, so the server reads every
//! record again when it starts (after a crash or a kill) and two plugins never interleave.

use crate::error::{DnsError, DnsResult};
use berth_util::fs::{write_durably, LockFile};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const RECORDS: &str = "records.json";
pub const LOCK: &str = "lock";
pub const CONTROL: &str = "control.sock";
pub const PID: &str = "server.pid";

/// Everything the server of one network needs: where it listens, what it answers, where it
/// forwards the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkState {
    /// The gateway addresses the server listens on (the bridge's, in the host namespace).
    pub listen: Vec<IpAddr>,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub domain: String,
    #[serde(rename = "resolvConf", default)]
    pub resolv_conf: PathBuf,
    #[serde(default)]
    pub entries: Vec<Entry>,
}

fn default_port() -> u16 {
    53
}

/// One attachment's names and addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    /// The container's namespace when it was added: a record whose namespace is gone belongs
    /// to a container that is gone, and gives its names up.
    #[serde(default)]
    pub netns: PathBuf,
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl Entry {
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }

    /// Whether the container may still be running: its namespace is there (or unknown).
    pub fn is_live(&self) -> bool {
        self.netns.as_os_str().is_empty() || self.netns.exists()
    }
}

impl NetworkState {
    /// Reads `DIR/records.json`; `None` when there is none.
    pub fn load(dir: &Path) -> DnsResult<Option<NetworkState>> {
        let path = dir.join(RECORDS);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(berth_util::fs::FileError::new("reading", &path, e).into()),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| DnsError::Corrupt { path, source })
    }

    pub fn save(&self, dir: &Path) -> DnsResult<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| DnsError::Corrupt { path: dir.join(RECORDS), source })?;
        Ok(write_durably(&dir.join(RECORDS), &bytes)?)
    }

    /// Forgets the network: its records file goes (the lock file stays, others may hold it).
    pub fn remove(dir: &Path) -> DnsResult<()> {
        let path = dir.join(RECORDS);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(berth_util::fs::FileError::new("removing", &path, e).into())
            }
            _ => Ok(berth_util::fs::sync_dir(dir)?),
        }
    }

    /// The first live entry other than (`container_id`, `ifname`) answering to one of `names`.
    pub fn conflict<'a>(&'a self, container_id: &str, ifname: &str, names: &'a [String]) -> Option<(&'a str, &'a Entry)> {
        self.entries.iter().filter(|e| !e.is(container_id, ifname) && e.is_live()).find_map(|e| {
            let name = names.iter().find(|n| e.names.contains(n))?;
            Some((name.as_str(), e))
        })
    }

    /// Adds or replaces the attachment's entry, dropping entries of containers that are gone.
    pub fn upsert(&mut self, entry: Entry) {
        self.entries.retain(|e| !e.is(&entry.container_id, &entry.ifname) && e.is_live());
        self.entries.push(entry);
    }
}

/// The network's lock, held for a whole ADD, DEL or GC.
pub fn lock(dir: &Path) -> DnsResult<LockFile> {
    let lock = LockFile::acquire(&dir.join(LOCK))?;
    remove_staged_records(dir);
    Ok(lock)
}

/// As [`lock`], but `None` when the network has no folder (nothing to undo).
pub fn lock_existing(dir: &Path) -> DnsResult<Option<LockFile>> {
    let lock = LockFile::acquire_in_existing_dir(&dir.join(LOCK))?;
    if lock.is_some() {
        remove_staged_records(dir);
    }
    Ok(lock)
}

/// Removes the records a plugin killed while it saved them left staged beside the real ones
/// (they name its containers): records are only written under the lock, so whoever holds it
/// next knows their writer is gone.
fn remove_staged_records(dir: &Path) {
    berth_util::fs::remove_staged(&dir.join(RECORDS));
}

pub fn control_path(dir: &Path) -> PathBuf {
    dir.join(CONTROL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, names: &[&str]) -> Entry {
        Entry {
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: PathBuf::new(),
            names: names.iter().map(|n| n.to_string()).collect(),
            ips: vec!["10.0.0.2".parse().unwrap()],
        }
    }

    #[test]
    fn records_survive_a_reload_and_conflicts_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = NetworkState { listen: vec!["10.0.0.1".parse().unwrap()], port: 53, ..Default::default() };
        state.upsert(entry("a", &["web", "www"]));
        state.upsert(entry("b", &["db"]));
        state.save(dir.path()).unwrap();
        let back = NetworkState::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, state);
        let names = vec!["www".to_string()];
        assert_eq!(back.conflict("b", "eth0", &names).map(|(n, e)| (n, e.container_id.as_str())), Some(("www", "a")));
        assert!(back.conflict("a", "eth0", &names).is_none(), "a container does not conflict with itself");
        let mut gone = entry("c", &["www"]);
        gone.netns = dir.path().join("no-such-netns");
        let mut state = back;
        state.entries.retain(|e| e.container_id != "a");
        state.entries.push(gone);
        assert!(state.conflict("d", "eth0", &names).is_none(), "a gone container's names are free");
        NetworkState::remove(dir.path()).unwrap();
        assert!(NetworkState::load(dir.path()).unwrap().is_none());
    }
}
