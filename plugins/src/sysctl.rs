//! Kernel parameters under /proc/sys, for the network namespace of the calling thread.

use crate::error::{CniError, CniResult};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Writes `value` to `/proc/sys/<key>` (key with slashes, e.g. `net/ipv4/ip_forward`),
/// skipping the write when the value is already set. One path lookup: with many containers
/// on the host each costs more (see [`crate::iface::configure`]).
pub fn set(key: &str, value: &str) -> CniResult<()> {
    let fail = |e: io::Error| CniError::kernel(format!("sysctl {key}={value}"), e);
    let file = File::options().read(true).write(true).open(format!("/proc/sys/{key}")).map_err(fail)?;
    if read(&file).is_ok_and(|current| current.trim() == value) {
        return Ok(());
    }
    file.write_all_at(value.as_bytes(), 0).map_err(fail)
}

pub fn get(key: &str) -> CniResult<String> {
    let fail = |e: io::Error| CniError::kernel(format!("read sysctl {key}"), e);
    read(&File::open(format!("/proc/sys/{key}")).map_err(fail)?).map(|s| s.trim().to_string()).map_err(fail)
}

fn read(mut file: &File) -> io::Result<String> {
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::NetNs;

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
            assert_eq!(err.msg, "sysctl net/ipv4/conf/no-such-link/forwarding=1");
        });
        drop((a, b));
        for i in 0..2 {
            let _ = NetNs::delete_named(&name(i));
        }
        result.unwrap();
    }
}
