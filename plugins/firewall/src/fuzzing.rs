//! One entry point for the fuzz targets (berth-fuzz): what the backends read back from the
//! kernel's tools (`nft -j list table`, `iptables-save`) and the owner labels they write in
//! comments. Not an API: the parsers stay private.

use crate::{iptables, nft, Owner};

/// Reads an `nft -j list table` output as the nftables backend does, with every element's
/// owner; true when it parsed.
pub fn decode_nft_listing(json: &str) -> bool {
    nft::decode_for_fuzzing(json)
}

/// Reads an `iptables-save` output as the iptables backend does, with every rule's owner,
/// jump target and DNAT; true when it held a rule.
pub fn decode_iptables_save(text: &str) -> bool {
    iptables::decode_for_fuzzing(text)
}

/// The comment an attachment's entries carry names that attachment again, whatever its
/// network, container ID and interface name.
pub fn check_owner_comment(network: &str, container_id: &str, ifname: &str) {
    let owner = Owner::new(network, container_id, ifname);
    let comment = owner.comment();
    assert!(!comment.contains('"') && !comment.contains('\n'), "a comment needs no quoting: {comment:?}");
    let parsed = Owner::parse(&comment).unwrap_or_else(|| panic!("comment {comment:?} does not parse"));
    assert!(parsed.same_attachment(&owner), "{comment:?} names another attachment: {parsed}");
    assert_eq!(parsed.net, owner.net);
}
