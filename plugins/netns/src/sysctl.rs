//! Kernel parameters under /proc/sys, for the network namespace of the calling thread.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Writes `value` to `/proc/sys/<key>` (key with slashes, e.g. `net/ipv4/ip_forward`),
/// skipping the write when the value is already set. One path lookup: with many containers
/// on the host each costs more (berth_cni's `iface::configure` writes several per ADD).
pub fn set(key: &str, value: &str) -> Result<(), SysctlError> {
    let fail = |source| SysctlError { what: format!("sysctl {key}={value}"), source };
    let file = File::options().read(true).write(true).open(format!("/proc/sys/{key}")).map_err(fail)?;
    if read(&file).is_ok_and(|current| current.trim() == value) {
        return Ok(());
    }
    file.write_all_at(value.as_bytes(), 0).map_err(fail)
}

pub fn get(key: &str) -> Result<String, SysctlError> {
    let fail = |source| SysctlError { what: format!("read sysctl {key}"), source };
    read(&File::open(format!("/proc/sys/{key}")).map_err(fail)?).map(|s| s.trim().to_string()).map_err(fail)
}

/// A kernel parameter that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct SysctlError {
    pub what: String,
    pub source: io::Error,
}

fn read(mut file: &File) -> io::Result<String> {
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NetNs;

    #[test]
    fn each_namespace_sees_its_own_values() {
        // Root only: it makes two throwaway namespaces.
        let name = |i| format!("berth-sysctl-test-{}-{i}", std::process::id());
        let (a, b) = (NetNs::create_named(&name(0)).unwrap(), NetNs::create_named(&name(1)).unwrap());
        let result = std::panic::catch_unwind(|| {
            a.run(|| set("net/ipv4/ip_forward", "1")).unwrap().unwrap();
            b.run(|| set("net/ipv4/ip_forward", "0")).unwrap().unwrap();
            assert_eq!(a.run(|| get("net/ipv4/ip_forward")).unwrap().unwrap(), "1");
            assert_eq!(b.run(|| get("net/ipv4/ip_forward")).unwrap().unwrap(), "0");
            a.run(|| set("net/ipv4/ip_forward", "0")).unwrap().unwrap();
            assert_eq!(a.run(|| get("net/ipv4/ip_forward")).unwrap().unwrap(), "0");
            let err = a.run(|| set("net/ipv4/conf/no-such-link/forwarding", "1")).unwrap().unwrap_err();
            assert_eq!(err.what, "sysctl net/ipv4/conf/no-such-link/forwarding=1");
        });
        drop((a, b));
        for i in 0..2 {
            let _ = NetNs::delete_named(&name(i));
        }
        result.unwrap();
    }
}
