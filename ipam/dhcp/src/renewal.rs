//! What the keeper does to one lease, from the host namespace: renew, rebind or reboot it
//! through a client socket in the container's namespace, and release it. A namespace that is
//! gone (or another one at its path), or an interface gone from it, ends the lease.

use crate::client::Client;
use crate::error::{DhcpError, Result};
use crate::lease::{now, Claim, Grant, Lease};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use std::time::Duration;

/// How long one renewal attempt waits for the server.
pub const ATTEMPT: Duration = Duration::from_secs(3);

pub enum Outcome {
    Renewed(Grant),
    /// No answer or a refusal; the lease is kept and tried again.
    Failed(DhcpError),
    /// The container's namespace or interface is gone: nothing left to renew.
    Gone(String),
}

/// A client on the claim's interface, in its namespace, or why there is none.
fn open(claim: &Claim) -> std::result::Result<Client, Outcome> {
    let at = claim.endpoint;
    let ns = match NetNs::open(&at.netns) {
        Ok(ns) => ns,
        Err(_) => return Err(Outcome::Gone(format!("namespace {} is gone", at.netns.display()))),
    };
    match ns.id() {
        Ok(id) if id == at.netns_id => {}
        _ => return Err(Outcome::Gone(format!("{} is another namespace now", at.netns.display()))),
    }
    let ifname = &at.owner.ifname;
    let found = Netlink::open_in(&ns).and_then(|mut nl| nl.link_by_name(ifname));
    match found {
        Ok(Some(_)) => {}
        Ok(None) => return Err(Outcome::Gone(format!("{ifname} is gone from {}", at.netns.display()))),
        Err(e) => return Err(Outcome::Failed(e.into())),
    }
    Client::open(&ns, ifname, at.mac).map_err(Outcome::Failed)
}

/// One attempt at extending the lease: renew before T2, rebind before expiry, then ask for
/// the same address again.
pub fn renew(lease: &Lease) -> Outcome {
    let client = match open(&lease.claim()) {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let t = now();
    let granted = if t < lease.rebind_at() {
        client.renew(lease, false, ATTEMPT)
    } else if t < lease.expires_at() {
        client.renew(lease, true, ATTEMPT)
    } else {
        client.reboot(lease, ATTEMPT)
    };
    match granted {
        Ok(grant) if grant.address.addr() == lease.address.addr() => Outcome::Renewed(grant),
        Ok(grant) => Outcome::Failed(DhcpError::Refused {
            ifname: lease.endpoint.owner.ifname.clone(),
            server: grant.server.to_string(),
            message: format!("offered {} instead of {}", grant.address, lease.address),
        }),
        Err(e) => Outcome::Failed(e),
    }
}

/// Sends DHCPRELEASE from the claim's interface when it is still there (unicast to the
/// server, the interface's address or none as its source); `Ok` when there is nothing to
/// send it from.
pub fn release(claim: &Claim) -> Result<()> {
    match open(claim) {
        Ok(client) => client.release(claim),
        Err(Outcome::Failed(e)) => Err(e),
        Err(_) => Ok(()),
    }
}

/// When to try again after a failure: half the time left before the next deadline (T2, or
/// expiry), as RFC 2131 4.4.5 says, but between 2 and 10 s (not its 60 s minimum), so a
/// container's lease comes back within seconds of its server.
pub fn retry_after(lease: &Lease) -> u64 {
    let t = now();
    let deadline = if t < lease.rebind_at() {
        lease.rebind_at()
    } else if t < lease.expires_at() {
        lease.expires_at()
    } else {
        t + u64::from(lease.lease_time / 4)
    };
    ((deadline.saturating_sub(t)) / 2).clamp(2, 10)
}
