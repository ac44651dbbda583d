//! Device-mapper fixtures of the kernel-lab tests: a guard that removes berth's devices,
//! the devices of a pool, and thin_check on a pool's metadata.

use super::{loop_devices_under, wait_until};
use berth_volumes::driver::thin;
use devicemapper::{DevId, DmOptions, DM};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Removes the device-mapper devices berth made in the VM on drop, thin devices before
/// their pool and the pool before its linear devices, whatever the test left. Declared
/// before the temp dirs, so that it runs after they have unmounted what they hold.
pub struct DmCleanup;

impl Drop for DmCleanup {
    fn drop(&mut self) {
        let Ok(dm) = DM::new() else { return };
        let rank = |name: &str| match name.rsplit('-').next() {
            Some("pool") => 1,
            Some("data" | "meta") => 2,
            _ => 0,
        };
        for _ in 0..3 {
            let Ok(devices) = dm.list_devices() else { return };
            let mut ours: Vec<String> =
                devices.into_iter().map(|(n, _, _)| n.to_string()).filter(|n| n.starts_with("berth-")).collect();
            if ours.is_empty() {
                return;
            }
            ours.sort_by_key(|n| rank(n));
            for name in ours {
                if let Ok(dm_name) = devicemapper::DmName::new(&name) {
                    // A device left suspended would block the removal of what it holds.
                    let _ = dm.device_suspend(&DevId::Name(dm_name), DmOptions::default());
                    let _ = dm.device_remove(&DevId::Name(dm_name), DmOptions::default());
                }
            }
        }
    }
}

/// Device-mapper devices whose name starts with `prefix`.
pub fn dm_devices(prefix: &str) -> Vec<String> {
    let dm = DM::new().expect("device-mapper");
    dm.list_devices().unwrap().into_iter().map(|(n, _, _)| n.to_string()).filter(|n| n.starts_with(prefix)).collect()
}

/// Deactivates the pool and runs thin_check on its metadata: the pool is consistent.
pub fn assert_pool_consistent(state: &Path, pool: &str) {
    thin::deactivate_pool(state, pool).unwrap_or_else(|e| panic!("deactivate pool {pool}: {e}"));
    wait_until("the pool's loop devices detached", Duration::from_secs(10), || loop_devices_under(state).is_empty());
    let metadata = thin::pool_metadata(state, pool).unwrap();
    // thin_check opens with O_DIRECT, which the VM's tmpfs refuses: read the file through a
    // read-only loop device (detached below, or by the temp dir's guard on failure).
    let attached = Command::new("losetup").args(["-f", "--show", "-r"]).arg(&metadata).output().expect("losetup");
    assert!(attached.status.success(), "losetup: {}", String::from_utf8_lossy(&attached.stderr));
    let device = String::from_utf8_lossy(&attached.stdout).trim().to_string();
    let checked = Command::new("thin_check").arg(&device).output().expect("run thin_check (thin-provisioning-tools)");
    let _ = Command::new("losetup").args(["-d", &device]).status();
    assert!(
        checked.status.success(),
        "thin_check {} ({device}): {}{}",
        metadata.display(),
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
