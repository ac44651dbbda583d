//! podman 4.3 on berth networks with berth-dns chained after berth-bridge (issue 20): a
//! container reaches another by its name (`--name web`, `http://web:8080/`), by an alias
//! (`--network-alias`), never from another network; a name freed by `podman rm` is taken
//! again. And what podman's CNI backend looks for: a plugin of type `dnsname` makes a network
//! `dns_enabled` (and `--network-alias` allowed); berth-dns installed under that name is one.
//! Needs root, podman, runc, busybox-static (conformance/TEST-PACKAGES).

use berth_conformance::plugins::berth_dir;
use berth_conformance::podman::{PodmanLab, IMAGE};
use berth_conformance::{eventually, process::text};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);
const SERVE: &str = "mkdir -p /www && echo berth-web > /www/index.html && exec httpd -f -p 8080 -h /www";

/// berth-bridge with berth-host-local, then berth-dns as `dns_type`.
fn named_network(name: &str, bridge: &str, subnet: &str, dns_type: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "berth-bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                "ipam": { "type": "berth-host-local", "ranges": [[{ "subnet": subnet }]], "routes": [{ "dst": "0.0.0.0/0" }] },
            },
            { "type": dns_type, "domainName": "dns.podman", "capabilities": { "aliases": true } },
        ],
    })
}

/// The lab's podman also finds plugins in `dir` (first): for `dnsname`, a link to berth-dns.
fn with_dnsname(lab: &PodmanLab) {
    let dir = lab.path("dnsname-bin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::os::unix::fs::symlink(berth_dir().join("berth-dns"), dir.join("dnsname")).expect("link dnsname");
    let conf_path = lab.path("containers.conf");
    let conf = std::fs::read_to_string(&conf_path).expect("containers.conf");
    let patched = conf.replacen("cni_plugin_dirs = [", &format!("cni_plugin_dirs = [\"{}\", ", dir.display()), 1);
    assert_ne!(conf, patched, "containers.conf names cni_plugin_dirs");
    std::fs::write(&conf_path, patched).expect("write containers.conf");
}

/// `wget http://HOST:8080/` from a new container on `network`: the body, or what went wrong.
fn fetch(lab: &PodmanLab, network: &str, host: &str) -> Result<String, String> {
    let url = format!("http://{host}:8080/");
    let out = lab.run(&["--rm", "--network", network, IMAGE, "timeout", "10", "wget", "-qO-", &url]);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!("{} {}", text(&out.stdout), text(&out.stderr)))
    }
}

fn fetched(lab: &PodmanLab, network: &str, host: &str) {
    let mut last = String::new();
    let ok = eventually(DEADLINE, || match fetch(lab, network, host) {
        Ok(body) if body == "berth-web\n" => true,
        other => {
            last = format!("{other:?}");
            false
        }
    });
    let resolv = text(&lab.run(&["--rm", "--network", network, IMAGE, "cat", "/etc/resolv.conf"]).stdout);
    assert!(ok, "http://{host}:8080/ from {network}: {last}; resolv.conf: {resolv}");
}

/// `nslookup NAME` from a new container on `network`: its output.
fn nslookup(lab: &PodmanLab, network: &str, name: &str) -> String {
    let out = lab.run(&["--rm", "--network", network, IMAGE, "timeout", "10", "nslookup", name]);
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn containers_reach_each_other_by_name_on_their_network_only() {
    let lab = PodmanLab::new();
    lab.write_network(&named_network("named", "berthdns0", "10.89.10.0/24", "berth-dns"));
    lab.write_network(&named_network("apart", "berthdns1", "10.89.11.0/24", "berth-dns"));
    lab.run_ok(&["-d", "--name", "web", "--network", "named", IMAGE, "sh", "-c", SERVE]);
    let web: IpAddr = lab.address_on("web", "named");
    fetched(&lab, "named", "web");
    let resolv = text(&lab.run(&["--rm", "--network", "named", IMAGE, "cat", "/etc/resolv.conf"]).stdout);
    assert!(resolv.contains("nameserver 10.89.10.1") && resolv.contains("dns.podman"), "{resolv}");

    let elsewhere = nslookup(&lab, "apart", "web");
    assert!(!elsewhere.contains(&web.to_string()), "web resolved from another network: {elsewhere}");

    // podman rm runs DEL: the name is free for a new container, at its own address.
    lab.ok(&["rm", "--force", "--time", "0", "web"]);
    lab.run_ok(&["-d", "--name", "blocker", "--network", "named", IMAGE, "sleep", "600"]);
    lab.run_ok(&["-d", "--name", "web", "--network", "named", IMAGE, "sh", "-c", SERVE]);
    let again = lab.address_on("web", "named");
    assert_ne!(again, web, "host-local gave the freed address to blocker");
    fetched(&lab, "named", "web");
    let answer = nslookup(&lab, "named", "web");
    assert!(answer.contains(&again.to_string()) && !answer.contains(&format!("{web}\n")), "{answer}");
}

#[test]
fn podman_enables_dns_for_a_dnsname_plugin_and_aliases_resolve() {
    let lab = PodmanLab::new();
    with_dnsname(&lab);
    lab.write_network(&named_network("plain", "berthdns2", "10.89.12.0/24", "berth-dns"));
    lab.write_network(&named_network("aliased", "berthdns3", "10.89.13.0/24", "dnsname"));
    let inspect = |net: &str| -> Value {
        let out: Value = serde_json::from_str(&lab.ok(&["network", "inspect", net])).expect("inspect JSON");
        out[0]["dns_enabled"].clone()
    };
    assert_eq!(inspect("plain"), json!(false), "podman looks for type dnsname only");
    assert_eq!(inspect("aliased"), json!(true));
    // podman 4.3 takes --network-alias on a network without DNS too, and passes the aliases
    // (runtimeConfig.aliases) to every plugin declaring the capability: berth-dns answers them.
    lab.run_ok(&["-d", "--name", "plainweb", "--network", "plain", "--network-alias", "plainapi", IMAGE, "sh", "-c", SERVE]);
    fetched(&lab, "plain", "plainapi");
    let aliases = lab.inspect("plainweb")["NetworkSettings"]["Networks"]["plain"]["Aliases"].clone();
    assert!(aliases.as_array().is_some_and(|a| a.contains(&json!("plainapi"))), "podman adds its short ID too: {aliases}");

    lab.run_ok(&["-d", "--name", "web", "--network", "aliased", "--network-alias", "api", IMAGE, "sh", "-c", SERVE]);
    fetched(&lab, "aliased", "api");
    fetched(&lab, "aliased", "web.dns.podman");
    // A second container may not take the alias while web holds it.
    let taken = lab.run(&["-d", "--name", "other", "--network", "aliased", "--network-alias", "api", IMAGE, "sleep", "600"]);
    let said = format!("{}{}", text(&taken.stdout), text(&taken.stderr));
    assert!(!taken.status.success() && said.contains("\"api\" is taken"), "{said}");

    // With `dnsname` among its plugins, `podman network create` writes dnsname's entry; with
    // only bridge and host-local changed to berth's, the network podman made has names.
    let made = lab.create_network("made");
    let kinds: Vec<&str> = made["plugins"].as_array().expect("plugins").iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(kinds, ["bridge", "portmap", "firewall", "tuning", "dnsname"], "{made}");
    lab.write_network(&berth_conformance::podman::berth_types(&made));
    lab.run_ok(&["-d", "--name", "madeweb", "--network", "made", IMAGE, "sh", "-c", SERVE]);
    fetched(&lab, "made", "madeweb");
}
