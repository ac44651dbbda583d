//! Kernel parameters under /proc/sys, for the network namespace of the calling thread.

use crate::error::{CniError, CniResult};
use std::path::Path;

/// Writes `value` to `/proc/sys/<key>` (key with slashes, e.g. `net/ipv4/ip_forward`),
/// skipping the write when the value is already set.
pub fn set(key: &str, value: &str) -> CniResult<()> {
    let path = Path::new("/proc/sys").join(key);
    if std::fs::read_to_string(&path).is_ok_and(|current| current.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| CniError::kernel(format!("sysctl {key}={value}"), e))
}

pub fn get(key: &str) -> CniResult<String> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| CniError::kernel(format!("read sysctl {key}"), e))
}
