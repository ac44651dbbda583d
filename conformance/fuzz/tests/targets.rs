//! Every fuzz target for a few seconds (`BERTH_FUZZ_SECS`, default 3 per target), from the
//! seeds and the checked-in corpus. A panic, a broken invariant or a case slower than 5 s (twice)
//! fails the test with the input. No root needed.

use berth_fuzz::{check, targets};

const DEFAULT_SECS: f64 = 3.0;

fn fuzz(name: &str) {
    let target = targets::find(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let report = check(&target, DEFAULT_SECS);
    assert!(report.cases > report.seeds as u64 || report.elapsed.is_zero(), "{name} ran no mutant");
}

macro_rules! fuzz_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { fuzz(stringify!($name)); })*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for target in targets::all() {
                assert!(tested.contains(&target.name), "fuzz target {} has no test here", target.name);
            }
        }
    };
}

fuzz_tests!(
    cni_skel,
    cni_netconf,
    cni_result,
    config_bridge,
    config_macvlan,
    config_ovs,
    config_host_device,
    config_bandwidth,
    config_dns,
    config_host_local,
    config_static,
    config_dhcp,
    volume_http,
    volume_api,
    volume_options,
    units,
    quota_system_files,
    netlink_reply,
    nft_listing,
    iptables_save,
    firewall_owner,
    dns_packet,
    dhcp_packet,
);
