//! `berth-volume serve` SIGKILLed at a uniformly random instant of Create, Mount, Unmount
//! and Remove, for the `named` and `loop` drivers, then restarted (see `common::kill`):
//! every operation can be completed or retried, every volume removed leaving no mount and
//! no loop device, and data written before a kill is there byte for byte. The seed is
//! printed; `BERTH_KILL_SEED=N` replays a run. Privileged (root): loop devices and mounts.
//! The `thin` and `xfsquota` drivers get the same rounds in the kernel lab (`lab_kill.rs`).

mod common;

use common::kill::{dice, DriverUnderTest, KillRounds};
use common::{require_root, TempDir};
use serde_json::json;

#[test]
fn privileged_endpoint_killed_at_random_instants_loses_and_leaks_nothing() {
    require_root("privileged_endpoint_killed_at_random_instants_loses_and_leaks_nothing");
    let mut dice = dice("privileged_endpoint_killed_at_random_instants_loses_and_leaks_nothing");
    let dir = TempDir::new("kill-ep");
    let drivers = [
        DriverUnderTest::self_contained("named", json!({ "type": "named" }), 10),
        DriverUnderTest::self_contained("loop", json!({ "type": "loop", "size": "16M" }), 6),
    ];
    let mut interrupted = 0;
    for driver in drivers {
        interrupted += KillRounds::new(&dir, &mut dice, driver).run().interrupted();
    }
    assert!(interrupted > 0, "no kill fell inside an operation (seed {})", dice.seed);
}
