//! berth-dns chained after berth-bridge, in a throwaway host namespace, as a container sees
//! it: names of its network (and their aliases) resolve at the gateway, bare and under the
//! domain, with reverse names; names of another network do not; other names go to the host's
//! resolvers (a fake one here); a name taken by a live container is refused to another and
//! free again after DEL; a killed server comes back with every record at the next ADD; GC
//! forgets what it does not keep; the last DEL stops the server; container IDs of 300
//! characters work as short ones; with 100 names registered, 99% of queries are answered
//! within 1 ms. Needs root (namespaces).

use berth_cni::runtime::{Attachment, Runtime};
use berth_cni::skel::Command;
use berth_cni::spec::{ConfList, RunResult};
use berth_conformance::bench::percentile;
use berth_conformance::dns::{addresses, ask, latencies, query, socket_in, FakeUpstream, Servers};
use berth_conformance::plugins::berth_dir;
use berth_conformance::{Container, TestHost};
use berth_dns::wire::{self, Rdata, RCODE_NXDOMAIN};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const NET_A: &str = "dns-a";
const NET_B: &str = "dns-b";
const GW_A: &str = "10.41.0.1";
const GW_B: &str = "10.42.0.1";

struct Lab {
    runtime: Runtime,
    a: ConfList,
    b: ConfList,
    // Dropped before `host`, whose folder holds the servers' pid files.
    servers: Servers,
    host: TestHost,
}

fn network(host: &TestHost, name: &str, bridge: &str, subnet: &str) -> ConfList {
    let data = host.dir.path().display().to_string();
    let list = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "berth-bridge", "bridge": bridge, "isGateway": true,
                "ipam": { "type": "berth-host-local", "subnet": subnet, "dataDir": format!("{data}/ipam") },
            },
            {
                "type": "berth-dns", "capabilities": { "aliases": true },
                "dataDir": format!("{data}/dns"), "resolvConf": format!("{data}/resolv.conf"),
            },
        ],
    });
    ConfList::from_slice(list.to_string().as_bytes()).expect("conflist")
}

impl Lab {
    fn new() -> Lab {
        let host = TestHost::new();
        std::fs::write(host.dir.path().join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
        FakeUpstream::start(&host.path(), "127.0.0.1:53".parse().unwrap(), vec![("example.test".into(), [192, 0, 2, 99].into())]);
        Lab {
            runtime: host.runtime(vec![berth_dir()]),
            a: network(&host, NET_A, "dnsbr0", "10.41.0.0/24"),
            b: network(&host, NET_B, "dnsbr1", "10.42.0.0/24"),
            servers: Servers { data_dir: host.dir.path().join("dns") },
            host,
        }
    }

    fn attachment(c: &Container, name: &str, aliases: Value) -> Attachment {
        let mut att =
            Attachment { container_id: c.name.clone(), ifname: "eth0".into(), netns: c.path.clone(), ..Default::default() };
        att.args = vec![("IgnoreUnknown".into(), "1".into()), ("K8S_POD_NAME".into(), name.into())];
        if !aliases.is_null() {
            att.capability_args.insert("aliases".into(), aliases);
        }
        att
    }

    /// A new container on `list` named `name`: its result.
    fn run(&self, list: &ConfList, name: &str, aliases: Value) -> (Container, RunResult) {
        let c = self.host.container();
        let result = self.runtime.add(list, &Lab::attachment(&c, name, aliases)).unwrap_or_else(|e| panic!("ADD {name}: {e}"));
        (c, result)
    }
}

fn v4(result: &RunResult) -> IpAddr {
    result.ips.iter().map(|ip| ip.address.addr()).find(IpAddr::is_ipv4).expect("an IPv4 address")
}

fn gw(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn names_resolve_on_their_network_only() {
    let lab = Lab::new();
    let (_web, web) = lab.run(&lab.a, "web", json!({ NET_A: ["www", "Front"], NET_B: ["elsewhere"] }));
    let (client, _) = lab.run(&lab.a, "client", Value::Null);
    let (other, _) = lab.run(&lab.b, "other", Value::Null);
    assert_eq!(web.dns.nameservers, [GW_A], "the runtime points the container's resolv.conf at the gateway");
    assert_eq!(web.dns.search.first().map(String::as_str), Some("dns.podman"));

    for name in ["web", "WEB", "web.dns.podman", "www", "front.dns.podman"] {
        let answer = query(&client.path, gw(GW_A), name, wire::TYPE_A).unwrap_or_else(|| panic!("no answer for {name}"));
        assert_eq!((answer.rcode, addresses(&answer)), (0, vec![v4(&web)]), "{name}");
    }
    let ptr = query(&client.path, gw(GW_A), &wire::reverse_name(v4(&web)), wire::TYPE_PTR).expect("PTR answer");
    assert_eq!(ptr.records, [Rdata::Ptr("web.dns.podman".into())]);
    assert_eq!(query(&client.path, gw(GW_A), "nobody.dns.podman", wire::TYPE_A).expect("answer").rcode, RCODE_NXDOMAIN);
    assert_eq!(
        query(&client.path, gw(GW_A), "elsewhere", wire::TYPE_A).expect("answer").rcode,
        RCODE_NXDOMAIN,
        "another network's alias"
    );

    // From network B: web is not a name there; the host's resolver (fake) does not know it.
    for name in ["web", "web.dns.podman", "www"] {
        let answer = query(&other.path, gw(GW_B), name, wire::TYPE_A).expect("answer from B's server");
        assert!(addresses(&answer).is_empty() && answer.rcode == RCODE_NXDOMAIN, "{name} resolved on B: {answer:?}");
    }
    // Other names are forwarded to the host's resolvers.
    let forwarded = query(&client.path, gw(GW_A), "example.test", wire::TYPE_A).expect("forwarded answer");
    assert_eq!(addresses(&forwarded), vec![IpAddr::from([192, 0, 2, 99])]);
}

#[test]
fn a_taken_name_is_refused_until_del_frees_it() {
    let lab = Lab::new();
    let (web, _) = lab.run(&lab.a, "web", Value::Null);
    let second = lab.host.container();
    let err = lab.runtime.add(&lab.a, &Lab::attachment(&second, "web", Value::Null)).expect_err("a second web");
    assert_eq!(err.code, 7, "{err}");
    assert!(err.msg.contains("\"web\" is taken") && err.msg.contains(&web.name), "{err}");
    let alias = lab.runtime.add(&lab.a, &Lab::attachment(&second, "api", json!(["web"]))).expect_err("web as an alias");
    assert!(alias.msg.contains("\"web\" is taken"), "{alias}");
    // The same name on another network is another name.
    lab.run(&lab.b, "web", Value::Null);

    lab.runtime.del(&lab.a, &Lab::attachment(&web, "web", Value::Null)).expect("DEL web");
    let (_, again) = lab.run(&lab.a, "web", Value::Null);
    let (client, _) = lab.run(&lab.a, "client", Value::Null);
    let answer = query(&client.path, gw(GW_A), "web", wire::TYPE_A).expect("answer");
    assert_eq!(addresses(&answer), vec![v4(&again)], "the name now belongs to the new container");
}

#[test]
fn a_killed_server_comes_back_with_every_record() {
    let lab = Lab::new();
    let results: Vec<_> = ["one", "two", "three"].iter().map(|n| (n.to_string(), lab.run(&lab.a, n, Value::Null).1)).collect();
    let before = lab.servers.pid(NET_A).expect("a server runs");
    lab.servers.kill(NET_A);
    let (client, _) = lab.run(&lab.a, "four", Value::Null);
    let after = lab.servers.pid(NET_A).expect("the ADD started a new server");
    assert_ne!(before, after);
    for (name, result) in &results {
        let answer = query(&client.path, gw(GW_A), name, wire::TYPE_A).expect("answer");
        assert_eq!(addresses(&answer), vec![v4(result)], "{name} after the restart");
    }
}

#[test]
fn gc_forgets_and_the_last_del_stops_the_server() {
    let lab = Lab::new();
    let (keep, _) = lab.run(&lab.a, "keep", Value::Null);
    let (_gone, _) = lab.run(&lab.a, "gone", Value::Null);
    let mut gc_list = lab.a.clone();
    gc_list.cni_version = "1.1.0".into();
    lab.runtime.gc(&gc_list, &[(keep.name.clone(), "eth0".into())]).expect("GC");
    assert_eq!(query(&keep.path, gw(GW_A), "gone.dns.podman", wire::TYPE_A).expect("answer").rcode, RCODE_NXDOMAIN);
    assert_eq!(query(&keep.path, gw(GW_A), "keep", wire::TYPE_A).expect("answer").rcode, 0);
    let pid = lab.servers.pid(NET_A).expect("a server runs");
    lab.runtime.del(&lab.a, &Lab::attachment(&keep, "keep", Value::Null)).expect("DEL");
    assert!(!berth_conformance::dns::running(pid), "the last DEL waits until the server is gone");
    assert!(!lab.host.dir.path().join("dns").join(NET_A).join("records.json").exists());
    assert!(query(&keep.path, gw(GW_A), "keep", wire::TYPE_A).is_none(), "nothing answers any more");
    lab.runtime.del(&lab.a, &Lab::attachment(&keep, "keep", Value::Null)).expect("DEL again succeeds");
}

#[test]
fn check_sees_the_record_and_the_server() {
    let lab = Lab::new();
    let (web, _) = lab.run(&lab.a, "web", Value::Null);
    let att = Lab::attachment(&web, "web", Value::Null);
    lab.runtime.check(&lab.a, &att).expect("CHECK");
    lab.servers.kill(NET_A);
    let err = lab.runtime.check(&lab.a, &att).expect_err("CHECK with the server gone");
    assert!(err.msg.contains("not running"), "{err}");
}

#[test]
fn bad_configurations_are_refused_before_anything_changes() {
    let lab = Lab::new();
    let c = lab.host.container();
    let bad_name = lab.runtime.add(&lab.a, &Lab::attachment(&c, "bad name", Value::Null)).expect_err("a name with a space");
    assert_eq!(bad_name.code, 7, "{bad_name}");
    assert!(bad_name.msg.contains("K8S_POD_NAME"), "{bad_name}");
    let no_prev = lab.host.call(
        &[berth_dir()],
        "berth-dns",
        Command::Add,
        &c.name,
        Some(&c.path),
        "eth0",
        &json!({"cniVersion": "1.0.0", "name": NET_A, "type": "berth-dns", "dataDir": lab.servers.data_dir}),
    );
    let err = no_prev.expect_err("no prevResult");
    assert!(err.msg.contains("prevResult"), "{err}");
    assert!(lab.servers.pid(NET_A).is_none());
}

#[test]
fn with_100_names_99_percent_of_answers_take_under_1ms() {
    let lab = Lab::new();
    let (client, first) = lab.run(&lab.a, "c0", Value::Null);
    let data = lab.servers.data_dir.display().to_string();
    let mut names = vec!["c0".to_string()];
    // 99 more registrations straight to berth-dns, with results as berth-bridge gives them.
    for i in 1..100u32 {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": client.path}],
            "ips": [{"interface": 0, "address": format!("10.41.1.{i}/16"), "gateway": GW_A}],
        });
        let conf = json!({"cniVersion": "1.0.0", "name": NET_A, "type": "berth-dns", "dataDir": format!("{data}"),
            "resolvConf": format!("{}/resolv.conf", lab.host.dir.path().display()), "prevResult": prev});
        let env = berth_cni::exec::CallEnv {
            command: Command::Add,
            container_id: &format!("bulk{i}"),
            netns: Some(&client.path),
            ifname: "eth0",
            args: &format!("K8S_POD_NAME=c{i}"),
            cni_path: &[berth_dir()],
        };
        berth_cni::exec::exec_plugin(&berth_dir().join("berth-dns"), &env, conf.to_string().as_bytes(), Some(&lab.host.ns))
            .unwrap_or_else(|e| panic!("ADD c{i}: {e}"));
        names.push(format!("c{i}"));
    }
    let socket = socket_in(Some(&client.path), gw(GW_A));
    let server = SocketAddr::new(gw(GW_A), 53);
    let warm = ask(&socket, server, 1, "c0", wire::TYPE_A).expect("answer");
    assert_eq!(addresses(&warm), vec![v4(&first)]);
    let samples = latencies(&socket, server, &names, 20_000);
    let p50 = percentile(&samples, 0.5);
    let p99 = percentile(&samples, 0.99);
    eprintln!("100 names, 20000 queries: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_millis(1), "p99 {p99:?}");
}

/// One berth-dns call for `id` named `name`, its address `address` on network A (as
/// berth-bridge's result gives it), made directly: the runtime's result cache names its files
/// after the container ID, which long IDs overflow.
fn dns_call_as(
    lab: &Lab,
    command: Command,
    id: &str,
    name: &str,
    address: &str,
    netns: &std::path::Path,
) -> Result<Vec<u8>, berth_cni::CniError> {
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": netns}],
        "ips": [{"interface": 0, "address": format!("{address}/16"), "gateway": GW_A}],
    });
    let conf = json!({"cniVersion": "1.0.0", "name": NET_A, "type": "berth-dns", "dataDir": lab.servers.data_dir,
        "resolvConf": lab.host.dir.path().join("resolv.conf"), "prevResult": prev});
    let env = berth_cni::exec::CallEnv {
        command,
        container_id: id,
        netns: Some(netns),
        ifname: "eth0",
        args: &format!("K8S_POD_NAME={name}"),
        cni_path: &[berth_dir()],
    };
    berth_cni::exec::exec_plugin(&berth_dir().join("berth-dns"), &env, conf.to_string().as_bytes(), Some(&lab.host.ns))
}

fn dns_gc_keeping(lab: &Lab, keep: &[&str]) {
    let valid: Vec<Value> = keep.iter().map(|id| json!({"containerID": id, "ifname": "eth0"})).collect();
    let conf = json!({"cniVersion": "1.1.0", "name": NET_A, "type": "berth-dns", "dataDir": lab.servers.data_dir,
        "resolvConf": lab.host.dir.path().join("resolv.conf"), "cni.dev/valid-attachments": valid});
    lab.host.call(&[berth_dir()], "berth-dns", Command::Gc, "", None, "", &conf).expect("GC");
}

/// Container IDs of 300 characters (CNI allows any length), two sharing their first 250:
/// each one's name resolves, a name one holds is refused to the other naming the holder's
/// whole ID, CHECK passes, GC forgets exactly the one it does not keep, DEL succeeds.
#[test]
fn container_ids_of_300_characters_get_their_names() {
    let lab = Lab::new();
    let (client, client_result) = lab.run(&lab.a, "client", Value::Null);
    let shared = "x".repeat(250);
    let (id_a, id_b) = (format!("{shared}-a{}", "0".repeat(48)), format!("{shared}-b{}", "0".repeat(48)));
    let (a, b) = (lab.host.container(), lab.host.container());
    dns_call_as(&lab, Command::Add, &id_a, "long-a", "10.41.1.1", &a.path).expect("ADD with a 300-character ID");
    let err = dns_call_as(&lab, Command::Add, &id_b, "long-a", "10.41.1.2", &b.path).expect_err("the other takes its name");
    assert_eq!(err.code, 7, "{err}");
    assert!(err.msg.contains(&format!("by container {id_a};")), "{err}");
    dns_call_as(&lab, Command::Add, &id_b, "long-b", "10.41.1.2", &b.path).expect("ADD of the other");
    for (name, address) in [("long-a", [10, 41, 1, 1]), ("long-b", [10, 41, 1, 2])] {
        let answer = query(&client.path, gw(GW_A), name, wire::TYPE_A).expect("answer");
        assert_eq!(addresses(&answer), vec![IpAddr::from(address)], "{name}");
    }
    dns_call_as(&lab, Command::Check, &id_a, "long-a", "10.41.1.1", &a.path).expect("CHECK");

    dns_gc_keeping(&lab, &[&client.name, &id_b]);
    assert_eq!(query(&client.path, gw(GW_A), "long-a", wire::TYPE_A).expect("answer").rcode, RCODE_NXDOMAIN, "forgotten");
    assert_eq!(query(&client.path, gw(GW_A), "long-b", wire::TYPE_A).expect("answer").rcode, 0, "kept");
    dns_gc_keeping(&lab, &[&client.name]);
    assert_eq!(query(&client.path, gw(GW_A), "long-b", wire::TYPE_A).expect("answer").rcode, RCODE_NXDOMAIN);
    for id in [&id_a, &id_b] {
        dns_call_as(&lab, Command::Del, id, "", "10.41.1.9", &a.path).expect("DEL of a forgotten attachment");
    }
    assert_eq!(query(&client.path, gw(GW_A), "client", wire::TYPE_A).map(|a| addresses(&a)), Some(vec![v4(&client_result)]));
}

/// A network named with 120 characters: its data folder's control socket is past the 107
/// bytes a unix socket path may have, so the server listens and the plugin connects through
/// the folder (`berth_util::unix`). Names resolve, DEL of the last container stops the
/// server. Needs root.
#[test]
fn a_network_with_a_long_name_gets_its_server() {
    let lab = Lab::new();
    let name = format!("long-{}", "n".repeat(115));
    let list = network(&lab.host, &name, "dnsbr9", "10.43.0.0/24");
    let control = lab.servers.data_dir.join(&name).join("control.sock");
    assert!(control.as_os_str().len() > 107, "{}", control.display());
    let (web_c, web) = lab.run(&list, "web", Value::Null);
    let (client_c, _) = lab.run(&list, "client", Value::Null);
    assert!(control.exists(), "the server listens at {}", control.display());
    let answer = query(&client_c.path, gw("10.43.0.1"), "web", wire::TYPE_A).expect("an answer");
    assert_eq!(addresses(&answer), vec![v4(&web)]);
    for c in [&web_c, &client_c] {
        let att = Lab::attachment(c, "", Value::Null);
        lab.runtime.del(&list, &att).expect("DEL");
    }
    assert!(berth_conformance::eventually(Duration::from_secs(5), || !control.exists()), "the last DEL stopped the server");
}
