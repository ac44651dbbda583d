//! berth-static run as a runtime runs it.

mod common;

use berth_cni::spec::SUPPORTED;
use common::*;
use serde_json::json;

#[test]
fn every_version_gets_its_result() {
    for version in SUPPORTED {
        let conf = json!({
            "cniVersion": version, "name": "staticnet", "type": "berth-bridge",
            "ipam": {
                "type": "berth-static",
                "addresses": [{"address": "10.80.0.5/24", "gateway": "10.80.0.1"}, {"address": "fd80::5/64"}],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {"nameservers": ["10.80.0.53"]}
            }
        });
        let out = run(STATIC, Call::new("ADD", "s1"), &conf).result();
        assert_eq!(out["cniVersion"], *version);
        assert_eq!(out["ips"][0]["address"], "10.80.0.5/24");
        assert_eq!(out["ips"][0]["gateway"], "10.80.0.1");
        assert_eq!(out["ips"][1]["address"], "fd80::5/64");
        assert_eq!(out["ips"][0].get("version").is_some(), version.starts_with("0."), "{out}");
        assert_eq!(out["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert_eq!(out["dns"], json!({"nameservers": ["10.80.0.53"]}));
        assert!(run(STATIC, Call::new("DEL", "s1"), &conf).ok);

        if !version.starts_with("0.3") {
            let mut check = conf.clone();
            check["prevResult"] = out.clone();
            assert!(run(STATIC, Call::new("CHECK", "s1"), &check).ok, "{version}");
            check["prevResult"]["ips"].as_array_mut().unwrap().remove(1);
            let missing = run(STATIC, Call::new("CHECK", "s1"), &check);
            assert_eq!(missing.code(), 7);
            assert!(missing.msg().contains("fd80::5/64"), "{}", missing.msg());
        }
    }
}

#[test]
fn invalid_addresses_are_code_7_naming_the_field() {
    let conf = json!({"cniVersion": "1.0.0", "name": "n",
        "ipam": {"type": "berth-static", "addresses": [{"address": "10.0.0.1/24"}, {"address": "10.0.0.300/24"}]}});
    let out = run(STATIC, Call::new("ADD", "s1"), &conf);
    assert_eq!(out.code(), 7);
    assert!(out.msg().starts_with("ipam.addresses[1].address"), "{}", out.msg());
    // DEL has nothing to undo, whatever the configuration.
    assert!(run(STATIC, Call::new("DEL", "s1"), &conf).ok);
}
