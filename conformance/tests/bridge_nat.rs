//! berth-bridge's NAT side through a runtime, as users see it: published ports reached from
//! an outside namespace, masquerade, hairpin, isolation between networks, IPv6, every
//! firewall backend; concurrency, GC. Needs root. (SIGKILL at any instant: killed.rs.)

use berth_cni::runtime::{Attachment, Runtime};
use berth_cni::spec::{ConfList, RunResult};
use berth_conformance::echo::{tcp_ask, udp_ask, EchoServer};
use berth_conformance::plugins::PluginSet;
use berth_conformance::{Container, TestHost};
use berth_netlink::Netlink;
use berth_netns::NetNs;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;

const BACKENDS: &[&str] = &["nftables", "iptables-nft", "iptables-legacy"];

fn network(host: &TestHost, name: &str, bridge: &str, v4: &str, v6: &str, backend: &str) -> ConfList {
    let raw = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "plugins": [{
            "type": "berth-bridge",
            "bridge": bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "firewallBackend": backend,
            "capabilities": {"portMappings": true},
            "ipam": {
                "type": "berth-host-local",
                "ranges": [[{"subnet": v4}], [{"subnet": v6}]],
                "dataDir": host.dir.path().join("ipam").display().to_string(),
            },
        }],
    });
    serde_json::from_value(raw).expect("conflist")
}

fn attachment(c: &Container, ports: &[(u16, u16, &str)]) -> Attachment {
    let maps: Vec<Value> = ports.iter().map(|(h, c, p)| json!({"hostPort": h, "containerPort": c, "protocol": p})).collect();
    Attachment {
        container_id: c.name.clone(),
        ifname: "eth0".into(),
        netns: c.path.clone(),
        capability_args: json!({ "portMappings": maps }).as_object().cloned().unwrap(),
        ..Default::default()
    }
}

fn address(result: &RunResult, v4: bool) -> IpAddr {
    result.ips.iter().map(|ip| ip.address.addr()).find(|a| a.is_ipv4() == v4).expect("address of that family")
}

/// Everything berth's firewall holds in the host namespace, as text.
fn firewall_dump(host: &TestHost, backend: &str) -> String {
    let (tool, args): (&str, &[&str]) = match backend {
        "nftables" => ("nft", &["list", "ruleset"]),
        "iptables-legacy" => ("iptables-legacy-save", &[]),
        _ => ("iptables-nft-save", &[]),
    };
    let mut cmd = Command::new(tool);
    cmd.args(args);
    host.ns.prepare_command(&mut cmd).unwrap();
    let out = cmd.output().expect("firewall dump");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if backend.starts_with("iptables") {
        let mut cmd6 = Command::new(tool.replacen("iptables", "ip6tables", 1));
        host.ns.prepare_command(&mut cmd6).unwrap();
        text += &String::from_utf8_lossy(&cmd6.output().expect("ip6tables dump").stdout);
    }
    text
}

fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[test]
fn published_ports_masquerade_hairpin_and_cleanup_with_every_backend() {
    for backend in BACKENDS {
        let host = TestHost::new();
        let world = host.outside();
        let (c1, c2) = (host.container(), host.container());
        let runtime = host.runtime(PluginSet::berth().cni_path());
        let list = network(&host, "natnet", "natbr0", "10.23.0.0/24", "fd00:23::/64", backend);
        let a1 = attachment(&c1, &[(8080, 80, "tcp"), (8080, 80, "udp")]);
        let r1 = runtime.add(&list, &a1).unwrap_or_else(|e| panic!("{backend} ADD: {e}"));
        let _server = EchoServer::start(&c1.path, "[::]:80".parse().unwrap());
        let _world_server = EchoServer::start(&world.world.path, "[::]:9000".parse().unwrap());
        let from_world = |to: SocketAddr| tcp_ask(&world.world.path, to);

        // Published ports, reached from outside with the client's own address preserved.
        assert_eq!(from_world(sock(world.host_v4, 8080)).as_deref(), Some("192.0.2.2"), "{backend}: tcp from outside");
        assert_eq!(udp_ask(&world.world.path, sock(world.host_v4, 8080)).as_deref(), Some("192.0.2.2"), "{backend}: udp");
        assert_eq!(from_world(sock(world.host_v6, 8080)).as_deref(), Some("fd00:1::2"), "{backend}: tcp over IPv6");
        assert!(tcp_ask(&host.path(), sock(world.host_v4, 8080)).is_some(), "{backend}: from the host itself");
        // Masquerade: the outside sees the host's address, not the container's.
        assert_eq!(tcp_ask(&c1.path, sock(world.world_v4, 9000)).as_deref(), Some("192.0.2.1"), "{backend}: masquerade");
        assert_eq!(tcp_ask(&c1.path, sock(world.world_v6, 9000)).as_deref(), Some("fd00:1::1"), "{backend}: v6 masquerade");
        // Hairpin: the container reaches its own published port through the host address.
        assert!(tcp_ask(&c1.path, sock(world.host_v4, 8080)).is_some(), "{backend}: hairpin");
        assert!(TestHost::ping(&c1.path, world.world_v4.into()), "{backend}: ping out");

        // A host port that is taken is refused, clearly, and leaves the first mapping alone.
        let err = runtime.add(&list, &attachment(&c2, &[(8080, 80, "tcp")])).expect_err("host port 8080 is taken");
        assert!(err.to_string().contains("8080"), "{backend}: {err}");
        assert!(from_world(sock(world.host_v4, 8080)).is_some(), "{backend}: first mapping still works");
        assert!(!firewall_dump(&host, backend).contains(&c2.name), "{backend}: the refused ADD left nothing");

        let _ = address(&r1, true);
        runtime.del(&list, &a1).unwrap_or_else(|e| panic!("{backend} DEL: {e}"));
        runtime.del(&list, &a1).unwrap_or_else(|e| panic!("{backend} second DEL: {e}"));
        let dump = firewall_dump(&host, backend);
        assert!(!dump.contains(&c1.name), "{backend}: DEL left firewall entries naming the container:\n{dump}");
        assert!(from_world(sock(world.host_v4, 8080)).is_none(), "{backend}: the port is closed after DEL");
    }
}

/// DEL without prevResult (a runtime that lost its result cache: containerd after a restart,
/// Kubernetes) removes everything of that attachment and nothing of another, with every
/// backend: of two containers publishing a port each, the first is deleted by a runtime
/// whose cache is empty, given its port mappings as runtimes pass them. Its port no longer
/// answers, its interface is gone, the second's port still answers and CHECK still passes;
/// DEL again succeeds. With nftables, a DEL after berth's table was deleted (`nft flush
/// ruleset`) succeeds too.
#[test]
fn del_without_prev_result_removes_that_attachment_only() {
    for backend in BACKENDS {
        let host = TestHost::new();
        let world = host.outside();
        let (c1, c2) = (host.container(), host.container());
        let runtime = host.runtime(PluginSet::berth().cni_path());
        let forgetful = Runtime { cache_dir: host.dir.path().join("empty-cache"), ..host.runtime(PluginSet::berth().cni_path()) };
        let list = network(&host, "forgot", "forgotbr0", "10.30.0.0/24", "fd00:30::/64", backend);
        let (a1, a2) = (attachment(&c1, &[(8080, 80, "tcp")]), attachment(&c2, &[(8081, 80, "tcp")]));
        for a in [&a1, &a2] {
            runtime.add(&list, a).unwrap_or_else(|e| panic!("{backend} ADD: {e}"));
        }
        let _servers =
            [EchoServer::start(&c1.path, "[::]:80".parse().unwrap()), EchoServer::start(&c2.path, "[::]:80".parse().unwrap())];
        let answers = |port: u16| {
            [world.host_v4.into(), IpAddr::from(world.host_v6)].map(|ip| tcp_ask(&world.world.path, sock(ip, port)).is_some())
        };
        assert_eq!((answers(8080), answers(8081)), ([true; 2], [true; 2]), "{backend}: both ports before DEL");

        for round in ["DEL", "DEL again"] {
            forgetful.del(&list, &a1).unwrap_or_else(|e| panic!("{backend} {round} without prevResult: {e}"));
            assert_eq!(answers(8080), [false; 2], "{backend} {round}: the deleted container's port still answers");
            assert_eq!(answers(8081), [true; 2], "{backend} {round}: the other container's port stopped answering");
            let dump = firewall_dump(&host, backend);
            assert!(!dump.contains(&c1.name), "{backend} {round}: entries of the deleted container left:\n{dump}");
            assert!(dump.contains(&c2.name), "{backend} {round}: entries of the other container gone:\n{dump}");
            runtime.check(&list, &a2).unwrap_or_else(|e| panic!("{backend} {round}: CHECK of the other container: {e}"));
        }
        let in_c1 = Netlink::open_in(&NetNs::open(&c1.path).unwrap()).unwrap().link_by_name("eth0").unwrap();
        assert!(in_c1.is_none(), "{backend}: the deleted container's interface is gone");

        if *backend == "nftables" {
            let mut flush = Command::new("nft");
            flush.args(["flush", "ruleset"]);
            host.ns.prepare_command(&mut flush).unwrap();
            assert!(flush.status().unwrap().success());
            forgetful.del(&list, &a2).unwrap_or_else(|e| panic!("DEL without prevResult and without berth's table: {e}"));
            assert!(host.netlink().links().unwrap().iter().all(|l| l.kind.as_deref() != Some("veth") || l.name == "uplink0"));
        }
    }
}

#[test]
fn two_networks_are_isolated_but_published_ports_cross() {
    let host = TestHost::new();
    let world = host.outside();
    let (red, blue) = (host.container(), host.container());
    let runtime = host.runtime(PluginSet::berth().cni_path());
    let red_net = network(&host, "red", "redbr0", "10.24.0.0/24", "fd00:24::/64", "auto");
    let blue_net = network(&host, "blue", "bluebr0", "10.25.0.0/24", "fd00:25::/64", "auto");
    let r_red = runtime.add(&red_net, &attachment(&red, &[])).unwrap();
    let r_blue = runtime.add(&blue_net, &attachment(&blue, &[(8081, 80, "tcp")])).unwrap();
    let _server = EchoServer::start(&blue.path, "[::]:80".parse().unwrap());
    assert!(tcp_ask(&red.path, sock(address(&r_blue, true), 80)).is_none(), "red must not reach blue directly");
    assert!(tcp_ask(&red.path, sock(address(&r_blue, false), 80)).is_none(), "nor over IPv6");
    assert!(!TestHost::ping(&blue.path, address(&r_red, true)), "blue must not reach red");
    assert!(tcp_ask(&red.path, sock(world.host_v4, 8081)).is_some(), "blue's published port is reachable from red");
}

/// `isolateNetworks: false` on green: green and red reach each other (either side open is
/// enough), red and blue (both isolated) still do not; DEL leaves nothing of any of them.
#[test]
fn an_open_network_reaches_and_is_reached_by_isolated_ones() {
    for backend in BACKENDS {
        let host = TestHost::new();
        let (red, blue, green) = (host.container(), host.container(), host.container());
        let runtime = host.runtime(PluginSet::berth().cni_path());
        let red_net = network(&host, "red", "redbr0", "10.24.0.0/24", "fd00:24::/64", backend);
        let blue_net = network(&host, "blue", "bluebr0", "10.25.0.0/24", "fd00:25::/64", backend);
        let mut green_net = network(&host, "green", "greenbr0", "10.29.0.0/24", "fd00:29::/64", backend);
        green_net.plugins[0].insert("isolateNetworks".into(), json!(false));
        let joined =
            [(&red_net, attachment(&red, &[])), (&blue_net, attachment(&blue, &[])), (&green_net, attachment(&green, &[]))];
        let results: Vec<RunResult> = joined
            .iter()
            .map(|(list, a)| runtime.add(list, a).unwrap_or_else(|e| panic!("{backend} ADD to {}: {e}", list.name)))
            .collect();
        let (r_red, r_blue, r_green) = (&results[0], &results[1], &results[2]);
        let _servers: Vec<EchoServer> =
            [&red, &blue, &green].iter().map(|c| EchoServer::start(&c.path, "[::]:80".parse().unwrap())).collect();

        for v4 in [true, false] {
            let family = if v4 { "IPv4" } else { "IPv6" };
            assert!(tcp_ask(&green.path, sock(address(r_red, v4), 80)).is_some(), "{backend}: green reaches red over {family}");
            assert!(tcp_ask(&red.path, sock(address(r_green, v4), 80)).is_some(), "{backend}: red reaches green over {family}");
            assert!(tcp_ask(&blue.path, sock(address(r_green, v4), 80)).is_some(), "{backend}: blue reaches green over {family}");
            assert!(tcp_ask(&red.path, sock(address(r_blue, v4), 80)).is_none(), "{backend}: red must not reach blue ({family})");
            assert!(tcp_ask(&blue.path, sock(address(r_red, v4), 80)).is_none(), "{backend}: blue must not reach red ({family})");
        }
        // Routed, and masqueraded like any traffic leaving its bridge (ipMasq is on): red sees
        // green's connection come from its own gateway.
        assert_eq!(tcp_ask(&green.path, sock(address(r_red, true), 80)).as_deref(), Some("10.24.0.1"), "{backend}");
        for (list, a) in &joined {
            runtime.check(list, a).unwrap_or_else(|e| panic!("{backend} CHECK of {}: {e}", list.name));
        }

        for (list, a) in &joined {
            runtime.del(list, a).unwrap_or_else(|e| panic!("{backend} DEL from {}: {e}", list.name));
        }
        let dump = firewall_dump(&host, backend);
        for c in [&red, &blue, &green] {
            assert!(!dump.contains(&c.name), "{backend}: DEL left firewall entries naming {}:\n{dump}", c.name);
        }
    }
}

#[test]
fn sixty_four_parallel_adds_get_distinct_addresses() {
    let host = TestHost::new();
    let runtime = host.runtime(PluginSet::berth().cni_path());
    let list = network(&host, "busy", "busybr0", "10.26.0.0/24", "fd00:26::/64", "auto");
    let containers: Vec<Container> = (0..64).map(|_| host.container()).collect();
    let results: Vec<RunResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (runtime, list) = (&runtime, &list);
                scope.spawn(move || runtime.add(list, &attachment(c, &[(9000 + i as u16, 80, "tcp")])))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread").expect("every ADD succeeds")).collect()
    });
    let mut addresses: Vec<IpAddr> = results.iter().map(|r| address(r, true)).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 64, "64 distinct addresses");
    assert!(TestHost::ping(&containers[0].path, address(&results[63], true)));
    let veths = host.netlink().links().unwrap().iter().filter(|l| l.kind.as_deref() == Some("veth")).count();
    assert_eq!(veths, 64);
}

#[test]
fn gc_keeps_exactly_the_valid_attachments() {
    let host = TestHost::new();
    let set = PluginSet::berth();
    let runtime = host.runtime(set.cni_path());
    let list = network(&host, "gcnet", "gcbr0", "10.28.0.0/24", "fd00:28::/64", "nftables");
    let containers: Vec<Container> = (0..3).map(|_| host.container()).collect();
    let results: Vec<RunResult> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| runtime.add(&list, &attachment(c, &[(6000 + i as u16, 80, "tcp")])).unwrap())
        .collect();
    let mut gc_conf =
        Value::Object(berth_cni::runtime::plugin_config(&list, "1.1.0", &list.plugins[0], &Default::default(), None).unwrap());
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": containers[0].name, "ifname": "eth0"}]);
    host.call(&set.cni_path(), "berth-bridge", berth_cni::skel::Command::Gc, "", None, "", &gc_conf).expect("GC");
    let mut nl = host.netlink();
    let veths = nl.links().unwrap().into_iter().filter(|l| l.kind.as_deref() == Some("veth")).count();
    assert_eq!(veths, 1, "only the kept attachment's veth remains");
    assert!(TestHost::ping(&containers[0].path, "10.28.0.1".parse().unwrap()), "the kept container still works");
    let dump = firewall_dump(&host, "nftables");
    assert!(dump.contains(&containers[0].name) && !dump.contains(&containers[1].name) && !dump.contains(&containers[2].name));
    let leases: Vec<String> = std::fs::read_dir(host.dir.path().join("ipam/gcnet"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect();
    assert_eq!(leases.len(), 2, "the kept container's v4 and v6 addresses: {leases:?}");
    assert!(leases.contains(&address(&results[0], true).to_string()));
}

/// Container IDs of 300 characters (CNI sets no limit), two of them alike in their first 250:
/// ADD, CHECK, a published port, GC keeping one, DEL without prevResult of the other. Where an
/// ID does not fit (the host veth's alias, the runtime's cache file name, the firewall's
/// comments) its label stands for it, and the two stay apart. Needs root.
#[test]
fn container_ids_of_300_characters_work_end_to_end() {
    let host = TestHost::new();
    let set = PluginSet::berth();
    let runtime = host.runtime(set.cni_path());
    let forgetful = Runtime { cache_dir: host.dir.path().join("empty-cache"), ..host.runtime(set.cni_path()) };
    let list = network(&host, "longids", "lidbr0", "10.29.0.0/24", "fd00:29::/64", "nftables");
    let shared = "x".repeat(250);
    let ids = [format!("{shared}-a{}", "0".repeat(48)), format!("{shared}-b{}", "0".repeat(48))];
    let containers = [host.container(), host.container()];
    let attachments: Vec<Attachment> = ids
        .iter()
        .zip(&containers)
        .enumerate()
        .map(|(i, (id, c))| Attachment { container_id: id.clone(), ..attachment(c, &[(6100 + i as u16, 80, "tcp")]) })
        .collect();
    let results: Vec<RunResult> =
        attachments.iter().map(|a| runtime.add(&list, a).expect("ADD with a 300-character ID")).collect();
    for a in &attachments {
        runtime.check(&list, a).expect("CHECK");
    }
    let world = host.outside();
    let _server = EchoServer::start(&containers[0].path, "[::]:80".parse().unwrap());
    assert_eq!(tcp_ask(&world.world.path, sock(world.host_v4, 6100)).as_deref(), Some("192.0.2.2"), "the published port");
    let _ = address(&results[0], true);

    let mut gc_conf =
        Value::Object(berth_cni::runtime::plugin_config(&list, "1.1.0", &list.plugins[0], &Default::default(), None).unwrap());
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": ids[0], "ifname": "eth0"}]);
    host.call(&set.cni_path(), "berth-bridge", berth_cni::skel::Command::Gc, "", None, "", &gc_conf).expect("GC");
    let bridge = host.netlink().link_by_name("lidbr0").unwrap().expect("the bridge").index;
    let veths = || host.netlink().links().unwrap().into_iter().filter(|l| l.master == Some(bridge)).count();
    assert_eq!(veths(), 1, "GC removed the other's veth, not the kept one's");
    assert!(TestHost::ping(&containers[0].path, "10.29.0.1".parse().unwrap()), "the kept container still works");
    runtime.check(&list, &attachments[0]).expect("CHECK of the kept one after GC");

    forgetful.del(&list, &attachments[0]).expect("DEL without prevResult");
    runtime.del(&list, &attachments[0]).expect("DEL again, with it");
    assert_eq!(veths(), 0);
    assert!(!firewall_dump(&host, "nftables").contains("id=xxxx"), "firewall entries left: {}", firewall_dump(&host, "nftables"));
}
