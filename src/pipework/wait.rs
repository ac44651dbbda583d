//! `pipework --wait [-i IF]`, run inside a container (berth is a static binary: copy it in):
//! returns once IF exists and has carrier, so a container's entry point can wait for the
//! interface a host-side `pipework` is about to give it.

use crate::error::BerthResult;
use berth_netlink::Netlink;
use std::time::Duration;

pub fn run(ifname: &str) -> BerthResult<()> {
    let mut nl = Netlink::open()?;
    loop {
        if nl.link_by_name(ifname)?.is_some_and(|l| l.carrier) {
            return Ok(());
        }
        // pipework polls once a second; a tenth keeps the container's start quick.
        std::thread::sleep(Duration::from_millis(100));
    }
}
