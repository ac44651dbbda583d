//! podman 4.3 as the real runtime on berth's networks (issue 7). Needs root, podman, runc,
//! busybox-static and the reference plugins (conformance/TEST-PACKAGES).
//!
//! Every test has its own [`PodmanLab`]: podman runs inside a throwaway host namespace with
//! `cni_plugin_dirs` = the freshly built berth plugins, then /usr/lib/cni, and the test's own
//! conflists; an outside namespace is wired to it. What is asserted is what a user sees:
//! `podman inspect`, `ip` and `ping` inside the container, a published port answering from
//! the outside, the address the outside sees; and that `podman stop`/`rm` leave no veth, no
//! allocation and no cached result.
//!
//! The parity tests run one case twice over the conflist podman itself writes (`podman network
//! create`: bridge + portmap + firewall + tuning with host-local): once as written, once with
//! only `type` changed to berth's plugins (portmap, firewall and tuning stay the reference ones).

use berth_conformance::echo::EchoServer;
use berth_conformance::eventually;
use berth_conformance::podman::{berth_types, berth_types_own_ports, PodmanLab, IMAGE};
use berth_netlink::Netlink;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);
/// Where the outside namespace's "who is calling" server listens.
const ECHO_PORT: u16 = 7000;

/// A conflist as the README shows it: berth-bridge with berth-host-local.
fn berth_network(name: &str, bridge: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "berth-bridge",
            "bridge": bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": {
                "type": "berth-host-local",
                "ranges": [[{ "subnet": subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        }],
    })
}

#[derive(Debug, Clone, Copy)]
enum Chain {
    /// The conflist exactly as `podman network create` wrote it.
    Reference,
    /// The same with berth-bridge and berth-host-local in place of bridge and host-local.
    Berth,
    /// As `Berth`, with berth-bridge publishing ports itself instead of the reference portmap.
    BerthOwnPorts,
}

/// `podman network create NAME`, then for [`Chain::Berth`] the types swapped in place.
fn podman_network(lab: &PodmanLab, name: &str, chain: Chain) -> String {
    podman_networks(lab, &[name], chain).remove(0)
}

/// As [`podman_network`] for several networks: podman creates them all before any type
/// changes, since it does not see the subnets and bridges of networks with berth's types.
fn podman_networks(lab: &PodmanLab, names: &[&str], chain: Chain) -> Vec<String> {
    let written: Vec<Value> = names.iter().map(|name| lab.create_network(name)).collect();
    for conf in &written {
        let kinds: Vec<&str> = conf["plugins"].as_array().expect("plugins").iter().filter_map(|p| p["type"].as_str()).collect();
        assert_eq!(kinds, ["bridge", "portmap", "firewall", "tuning"], "what podman 4.3 writes: {conf}");
        match chain {
            Chain::Reference => {}
            Chain::Berth => lab.write_network(&berth_types(conf)),
            Chain::BerthOwnPorts => lab.write_network(&berth_types_own_ports(conf)),
        }
    }
    names.iter().map(|n| n.to_string()).collect()
}

/// The source address the outside's echo server saw, asked from inside `container` (podman
/// exec) or, without one, from a new container on `network` (podman run --rm).
fn source_seen_outside(lab: &PodmanLab, container: Option<&str>, network: &str) -> Result<String, String> {
    let world = lab.outside.world_v4.to_string();
    let port = ECHO_PORT.to_string();
    let ask = ["timeout", "5", "nc", world.as_str(), port.as_str()];
    let out = match container {
        Some(name) => lab.exec(name, &ask),
        None => {
            let mut args = vec!["--rm", "--network", network, IMAGE];
            args.extend_from_slice(&ask);
            lab.run(&args)
        }
    };
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !answer.is_empty() {
        Ok(answer)
    } else {
        Err(format!("no answer from {world}:{port} ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

fn echo_outside(lab: &PodmanLab) -> EchoServer {
    EchoServer::start(&lab.outside.world.path, SocketAddr::from((lab.outside.world_v4, ECHO_PORT)))
}

/// Two containers on `network`: each gets an address of the subnet from host-local (berth's or
/// the reference), reaches the gateway and the other; `podman stop` and `rm` leave no veth in
/// H, no allocation and no cached result.
fn two_containers_talk_and_leave_nothing(lab: &PodmanLab, network: &str, label: &str) {
    let subnet = lab.subnet_of(network);
    let id1 = lab.start_sleeper("c1", network);
    let id2 = lab.start_sleeper("c2", network);
    let (a1, a2) = (lab.address_on("c1", network), lab.address_on("c2", network));
    let gateway = lab.gateway_on("c1", network);
    assert!(subnet.contains(&a1) && subnet.contains(&a2) && a1 != a2, "{label}: {a1} and {a2} in {subnet}");
    assert_eq!(lab.allocation_owner(network, a1).as_deref(), Some(id1.as_str()), "{label}: host-local holds {a1} for c1");
    assert_eq!(lab.allocation_owner(network, a2).as_deref(), Some(id2.as_str()), "{label}: host-local holds {a2} for c2");
    let shown = String::from_utf8_lossy(&lab.exec("c1", &["ip", "-o", "-4", "addr", "show", "eth0"]).stdout).into_owned();
    assert!(shown.contains(&format!("inet {a1}/{}", subnet.prefix_len())), "{label}: c1's eth0 inside: {shown}");

    assert!(lab.pings("c1", gateway), "{label}: c1 -> gateway {gateway}");
    assert!(lab.pings("c1", a2), "{label}: c1 -> c2 ({a2})");
    assert!(lab.pings("c2", a1), "{label}: c2 -> c1 ({a1})");

    let veth1 = lab.host_end("c1", "eth0");
    let mut hnl = lab.host.netlink();
    lab.ok(&["stop", "--time", "0", "c1"]);
    assert!(
        eventually(DEADLINE, || hnl.link_by_index(veth1.index).unwrap().is_none()),
        "{label}: c1's veth {} left in H after podman stop",
        veth1.name
    );
    assert!(!lab.allocations(network).contains(&a1), "{label}: {a1} still allocated after podman stop");
    let cached = |id: &str| lab.cached_results().into_iter().filter(|r| r.contains(id)).collect::<Vec<_>>();
    assert_eq!(cached(&id1), Vec::<String>::new(), "{label}: cached result left after podman stop");
    lab.ok(&["rm", "c1"]);
    assert_eq!(cached(&id1), Vec::<String>::new(), "{label}: cached result left after podman rm");

    lab.ok(&["rm", "--force", "--time", "0", "c2"]);
    assert!(eventually(DEADLINE, || lab.host_veths().is_empty()), "{label}: veths left in H: {:?}", lab.host_veths());
    assert_eq!(lab.allocations(network), Vec::<IpAddr>::new(), "{label}: allocations left");
    assert_eq!(lab.cached_results(), Vec::<String>::new(), "{label}: cached results left");
    assert_eq!(lab.podman_netns(), Vec::<String>::new(), "{label}: podman's namespaces left");
}

#[test]
fn podman_runs_containers_on_a_berth_network() {
    let lab = PodmanLab::new();
    lab.write_network(&berth_network("berthnet", "berth0", "10.31.0.0/24"));
    two_containers_talk_and_leave_nothing(&lab, "berthnet", "berth");
}

#[test]
fn podman_lists_inspects_and_removes_berth_networks() {
    let lab = PodmanLab::new();
    lab.write_network(&berth_network("berthnet", "berth0", "10.31.0.0/24"));
    lab.create_network("refnet");
    let listed = lab.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(listed.lines().any(|l| l == "berthnet berth-bridge"), "podman network ls: {listed}");
    assert!(listed.lines().any(|l| l == "refnet bridge"), "podman network ls: {listed}");

    let inspected: Value = serde_json::from_str(&lab.ok(&["network", "inspect", "berthnet"])).expect("inspect JSON");
    let berthnet = &inspected[0];
    assert_eq!(berthnet["name"], "berthnet");
    assert_eq!(berthnet["driver"], "berth-bridge", "{berthnet}");
    // podman 4.3 decodes subnets, bridge and IPAM driver only for its own drivers (bridge,
    // macvlan, ipvlan): a berth network shows its name and plugin type, nothing more.
    assert!(berthnet.get("subnets").is_none() && berthnet.get("network_interface").is_none(), "{berthnet}");
    // Nor can podman write one: berth networks are conflists written by hand (or podman's with
    // the types changed).
    let refused = lab.podman(&["network", "create", "--driver", "berth-bridge", "made"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unsupported driver berth-bridge"), "{refused:?}");
    // And since podman cannot read a berth network's subnet and bridge, a network it creates
    // next may take the same ones: here podman's conflist with berth's types, then a new one.
    lab.write_network(&berth_types(&lab.create_network("typed")));
    let next = lab.create_network("next");
    let typed = lab.network_conf("typed");
    assert_eq!(next["plugins"][0]["bridge"], typed["plugins"][0]["bridge"], "podman 4.3 reuses the bridge name");
    assert_eq!(lab.subnet_of("next"), lab.subnet_of("typed"), "podman 4.3 reuses the subnet");
    lab.ok(&["network", "rm", "typed", "next"]);

    // A container on each network makes both bridges; then `podman network rm`.
    for network in ["berthnet", "refnet"] {
        lab.run_ok(&["--rm", "--network", network, IMAGE, "true"]);
    }
    let mut hnl = lab.host.netlink();
    assert!(hnl.link_by_name("berth0").unwrap().is_some() && hnl.link_by_name("cni-podman1").unwrap().is_some());
    lab.ok(&["network", "rm", "berthnet", "refnet"]);
    let listed = lab.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!listed.lines().any(|l| l == "berthnet" || l == "refnet"), "removed networks still listed: {listed}");
    assert!(!lab.path("net.d/berthnet.conflist").exists(), "podman network rm removes the conflist");
    // podman deletes the bridge of a "bridge"-driver network only; berth's stays in the host
    // (empty, without ports) until someone removes it.
    assert!(hnl.link_by_name("cni-podman1").unwrap().is_none(), "podman removes the reference bridge");
    assert!(hnl.link_by_name("berth0").unwrap().is_some(), "podman 4.3 leaves berth's bridge");
}

#[test]
fn berth_none_network_leaves_only_lo_as_none_mode_does() {
    let lab = PodmanLab::new();
    lab.write_network(&json!({"cniVersion": "1.0.0", "name": "isolated", "plugins": [{"type": "berth-none"}]}));
    let script = "ls /sys/class/net && ip -o -4 addr";
    let berth = lab.run_ok(&["--rm", "--network", "isolated", IMAGE, "sh", "-c", script]);
    let none = lab.run_ok(&["--rm", "--network", "none", IMAGE, "sh", "-c", script]);
    assert_eq!(berth.lines().next(), Some("lo"), "only lo in the container: {berth}");
    assert!(berth.contains("inet 127.0.0.1/8"), "lo is up with its address: {berth}");
    assert_eq!(berth, none, "berth-none looks like podman's own --network none");
    assert!(lab.host_veths().is_empty(), "nothing wired into the host");
    assert_eq!(lab.cached_results(), Vec::<String>::new(), "DEL ran when the container went");
}

/// podman always gives a CNI network a new namespace, so berth-host cannot serve it: ADD
/// fails with code 4 and podman shows the plugin's message. podman's own host mode
/// (`--network host`) calls no CNI plugin at all.
#[test]
fn berth_host_network_is_refused_by_podman_with_the_plugins_message() {
    let lab = PodmanLab::new();
    lab.write_network(&json!({"cniVersion": "1.0.0", "name": "hostnet", "plugins": [{"type": "berth-host"}]}));
    let refused = lab.run(&["--name", "h1", "--network", "hostnet", IMAGE, "true"]);
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "podman run on a berth-host network must fail: {stderr}");
    assert!(stderr.contains(r#"plugin type="berth-host" failed (add)"#), "{stderr}");
    assert!(
        stderr.contains("berth-host needs the container in the host's network namespace, but CNI_NETNS is /run/netns/"),
        "the user sees berth-host's own message: {stderr}"
    );
    let state = lab.ok(&["ps", "--all", "--filter", "name=h1", "--format", "{{.State}}"]);
    assert!(!state.contains("running"), "h1 must not run: {state}");
    assert_eq!(lab.cached_results(), Vec::<String>::new(), "no cached result for a failed ADD");
    assert_eq!(lab.podman_netns(), Vec::<String>::new(), "podman removed the namespace it made");
    lab.ok(&["rm", "h1"]);

    let seen = lab.run_ok(&["--rm", "--network", "host", IMAGE, "ls", "/sys/class/net"]);
    let mut seen: Vec<&str> = seen.lines().collect();
    seen.sort();
    let mut host_links: Vec<String> = lab.host.netlink().links().unwrap().into_iter().map(|l| l.name).collect();
    host_links.sort();
    assert_eq!(seen, host_links, "--network host shares the host's stack");
    assert_eq!(lab.cached_results(), Vec::<String>::new(), "--network host calls no CNI plugin");
}

#[test]
fn two_berth_networks_give_a_container_eth0_and_eth1() {
    let lab = PodmanLab::new();
    lab.write_network(&berth_network("blue", "berth-blue", "10.31.1.0/24"));
    lab.write_network(&berth_network("green", "berth-green", "10.31.2.0/24"));
    let id = lab.start_sleeper("both", "blue,green");
    let blue = lab.address_on("both", "blue");
    let green = lab.address_on("both", "green");
    assert!(lab.subnet_of("blue").contains(&blue) && lab.subnet_of("green").contains(&green), "{blue} {green}");

    // podman names the interfaces eth0, eth1 in an order of its own: each carries one address.
    let mut nl = Netlink::open_in(&lab.netns_of("both")).expect("netlink in the container");
    let mut names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
    names.sort();
    assert_eq!(names, ["eth0", "eth1", "lo"]);
    let addresses = nl.addresses(None).unwrap();
    let mut on = |ifname: &str| {
        let index = nl.link_by_name(ifname).unwrap().unwrap().index;
        let mut v4: Vec<IpAddr> =
            addresses.iter().filter(|(i, a)| *i == index && a.addr().is_ipv4()).map(|(_, a)| a.addr()).collect();
        v4.sort();
        v4
    };
    let (eth0, eth1) = (on("eth0"), on("eth1"));
    assert!(
        (eth0 == [blue] && eth1 == [green]) || (eth0 == [green] && eth1 == [blue]),
        "eth0 {eth0:?}, eth1 {eth1:?}: one address of each network"
    );
    for network in ["blue", "green"] {
        let gateway = lab.gateway_on("both", network);
        assert!(lab.pings("both", gateway), "gateway {gateway} of {network}");
    }

    lab.ok(&["stop", "--time", "0", "both"]);
    assert!(eventually(DEADLINE, || lab.host_veths().is_empty()), "veths left: {:?}", lab.host_veths());
    assert_eq!(lab.allocations("blue"), Vec::<IpAddr>::new());
    assert_eq!(lab.allocations("green"), Vec::<IpAddr>::new());
    assert!(!lab.cached_results().iter().any(|r| r.contains(&id)), "{:?}", lab.cached_results());
}

// The same cases over podman's own conflist: as written, and with berth's types.

fn podman_conflist_containers_talk_and_leave_nothing(chain: Chain) {
    let lab = PodmanLab::new();
    let network = podman_network(&lab, "podnet", chain);
    two_containers_talk_and_leave_nothing(&lab, &network, &format!("{chain:?}"));
}

/// `--ip` (the `ips` capability podman's conflist declares for the bridge plugin) reaches
/// host-local, which hands out exactly that address.
fn requested_address_is_given(chain: Chain) {
    let lab = PodmanLab::new();
    let network = podman_network(&lab, "fixed", chain);
    let wanted = lab.subnet_of(&network).hosts().nth(41).expect("an address of the subnet");
    let id = lab.run_ok(&["-d", "--name", "fixed", "--network", &network, "--ip", &wanted.to_string(), IMAGE, "sleep", "600"]);
    assert_eq!(lab.address_on("fixed", &network), wanted, "{chain:?}: podman inspect");
    assert_eq!(lab.allocation_owner(&network, wanted).as_deref(), Some(id.trim()), "{chain:?}: host-local holds {wanted}");
    let shown = String::from_utf8_lossy(&lab.exec("fixed", &["ip", "-o", "-4", "addr", "show", "eth0"]).stdout).into_owned();
    assert!(shown.contains(&format!("inet {wanted}/")), "{chain:?}: eth0 inside: {shown}");
    lab.ok(&["rm", "--force", "--time", "0", "fixed"]);
    assert_eq!(lab.allocations(&network), Vec::<IpAddr>::new(), "{chain:?}: {wanted} released");
}

/// `-p 18080:8080`: the container's web server answers on the host's address from the
/// outside (the reference portmap does the DNAT); after `podman rm` the port is closed.
fn published_port_answers_from_outside(chain: Chain) {
    let lab = PodmanLab::new();
    let network = podman_network(&lab, "web", chain);
    let serve = "mkdir -p /www && echo berth-web > /www/index.html && exec httpd -f -p 8080 -h /www";
    lab.run_ok(&["-d", "--name", "web", "--network", &network, "-p", "18080:8080", IMAGE, "sh", "-c", serve]);
    let mut last = String::new();
    let answered = eventually(DEADLINE, || match lab.http_get_from_outside(18080, Duration::from_secs(2)) {
        Ok(body) if body == "berth-web\n" => true,
        other => {
            last = format!("{other:?}");
            false
        }
    });
    assert!(answered, "{chain:?}: http://{}:18080/ from outside: {last}", lab.outside.host_v4);
    let ports = lab.ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(ports.contains("0.0.0.0:18080->8080/tcp"), "{ports}");
    lab.ok(&["rm", "--force", "--time", "0", "web"]);
    assert!(lab.http_get_from_outside(18080, Duration::from_secs(2)).is_err(), "{chain:?}: port 18080 still answers after rm");
    assert_eq!(lab.cached_results(), Vec::<String>::new());
}

/// `ipMasq` (podman writes it): the outside sees the host's address, not the container's.
fn traffic_to_the_outside_is_masqueraded(chain: Chain) {
    let lab = PodmanLab::new();
    let network = podman_network(&lab, "out", chain);
    let _echo = echo_outside(&lab);
    let source = source_seen_outside(&lab, None, &network).unwrap_or_else(|e| panic!("{chain:?}: {e}"));
    assert_eq!(
        source,
        lab.outside.host_v4.to_string(),
        "{chain:?}: the outside must see the host's address, not the container's"
    );
}

/// Two containers; the one whose host veth lends the bridge its MAC (if any) stops: the other
/// must still reach the gateway at once, without waiting for its ARP entry to expire.
fn gateway_survives_a_neighbour_leaving(chain: Chain) {
    let lab = PodmanLab::new();
    let network = podman_network(&lab, "macnet", chain);
    let bridge = lab.network_conf(&network)["plugins"][0]["bridge"].as_str().expect("bridge name").to_string();
    lab.start_sleeper("c1", &network);
    lab.start_sleeper("c2", &network);
    let gateway = lab.gateway_on("c1", &network);
    let mut hnl = lab.host.netlink();
    let mut bridge_mac =
        || hnl.link_by_name(&bridge).unwrap().expect("bridge in H").mac.map(|m| m.to_string()).unwrap_or_default();
    let before = bridge_mac();
    let c1_mac = lab.host_end("c1", "eth0").mac.map(|m| m.to_string()).unwrap_or_default();
    let (leaver, stayer) = if c1_mac == before { ("c1", "c2") } else { ("c2", "c1") };
    assert!(lab.pings(stayer, gateway), "{chain:?}: {stayer} -> gateway {gateway}");
    lab.ok(&["stop", "--time", "0", leaver]);
    let after = bridge_mac();
    let reached = lab.exec(stayer, &["ping", "-c", "3", "-W", "3", &gateway.to_string()]).status.success();
    assert!(
        reached,
        "{chain:?}: {stayer} lost its gateway when {leaver} stopped: the bridge's MAC went from {before} to {after} \
         and {stayer}'s neighbour entry still points at the old one"
    );
}

/// A container on two podman networks (each with a default route) keeps a way out through
/// either when the other is disconnected.
fn two_networks_each_keep_a_way_out(chain: Chain) {
    let lab = PodmanLab::new();
    let nets = podman_networks(&lab, &["net-a", "net-b"], chain);
    let (a, b) = (&nets[0], &nets[1]);
    let _echo = echo_outside(&lab);
    for (gone, kept) in [(a, b), (b, a)] {
        let name = format!("on-both-{gone}");
        lab.start_sleeper(&name, &format!("{a},{b}"));
        let routes = String::from_utf8_lossy(&lab.exec(&name, &["ip", "route"]).stdout).into_owned();
        lab.ok(&["network", "disconnect", gone, &name]);
        let left = String::from_utf8_lossy(&lab.exec(&name, &["ip", "route"]).stdout).into_owned();
        if let Err(e) = source_seen_outside(&lab, Some(&name), "") {
            panic!(
                "{chain:?}: after `podman network disconnect {gone}`, {name} must still reach the outside through {kept}: {e}\n\
                 routes on both networks:\n{routes}routes after the disconnect:\n{left}"
            );
        }
        lab.ok(&["rm", "--force", "--time", "0", &name]);
    }
}

#[test]
fn reference_podman_conflist_containers_talk_and_leave_nothing() {
    podman_conflist_containers_talk_and_leave_nothing(Chain::Reference);
}

#[test]
fn berth_podman_conflist_containers_talk_and_leave_nothing() {
    podman_conflist_containers_talk_and_leave_nothing(Chain::Berth);
}

#[test]
fn reference_requested_address_is_given() {
    requested_address_is_given(Chain::Reference);
}

#[test]
fn berth_requested_address_is_given() {
    requested_address_is_given(Chain::Berth);
}

#[test]
fn reference_published_port_answers_from_outside() {
    published_port_answers_from_outside(Chain::Reference);
}

#[test]
fn berth_published_port_answers_from_outside() {
    published_port_answers_from_outside(Chain::Berth);
}

#[test]
fn berth_bridge_publishes_ports_itself_without_portmap() {
    published_port_answers_from_outside(Chain::BerthOwnPorts);
}

#[test]
fn reference_traffic_to_the_outside_is_masqueraded() {
    traffic_to_the_outside_is_masqueraded(Chain::Reference);
}

#[test]
fn berth_traffic_to_the_outside_is_masqueraded() {
    traffic_to_the_outside_is_masqueraded(Chain::Berth);
}

#[test]
fn reference_gateway_survives_a_neighbour_leaving() {
    gateway_survives_a_neighbour_leaving(Chain::Reference);
}

#[test]
fn berth_gateway_survives_a_neighbour_leaving() {
    gateway_survives_a_neighbour_leaving(Chain::Berth);
}

#[test]
fn reference_two_networks_each_keep_a_way_out() {
    two_networks_each_keep_a_way_out(Chain::Reference);
}

#[test]
fn berth_two_networks_each_keep_a_way_out() {
    two_networks_each_keep_a_way_out(Chain::Berth);
}

/// podman with a conflist chaining berth-bandwidth after berth-bridge: a real container's
/// traffic is shaped to the configured rates in each direction, and `podman rm` removes the
/// ifb.
#[test]
fn podman_container_is_shaped_by_berth_bandwidth() {
    use berth_conformance::throughput::tcp_bits_per_sec;
    const INGRESS: u64 = 8_000_000;
    const EGRESS: u64 = 20_000_000;
    let lab = PodmanLab::new();
    let mut conf = berth_network("shaped", "berthbw0", "10.89.40.0/24");
    conf["plugins"].as_array_mut().unwrap().push(json!({
        "type": "berth-bandwidth",
        "ingressRate": INGRESS, "ingressBurst": 32 * 1024 * 8,
        "egressRate": EGRESS, "egressBurst": 32 * 1024 * 8,
    }));
    lab.write_network(&conf);
    lab.start_sleeper("shaped1", "shaped");
    let container = lab.netns_of("shaped1");
    let address = lab.address_on("shaped1", "shaped");
    let gateway = lab.gateway_on("shaped1", "shaped");
    let window = Duration::from_secs(3);
    let ingress = tcp_bits_per_sec(&lab.host.ns, &container, address, window).expect("host -> container stream");
    let egress = tcp_bits_per_sec(&container, &lab.host.ns, gateway, window).expect("container -> host stream");
    for (measured, configured, what) in [(ingress, INGRESS, "ingress"), (egress, EGRESS, "egress")] {
        let ratio = measured / configured as f64;
        assert!((0.9..=1.1).contains(&ratio), "{what}: {:.2} Mbit/s, configured {:.2}", measured / 1e6, configured as f64 / 1e6);
    }
    lab.ok(&["rm", "--force", "--time", "0", "shaped1"]);
    let ifbs = lab.host.netlink().links().unwrap().into_iter().filter(|l| l.kind.as_deref() == Some("ifb")).count();
    assert_eq!(ifbs, 0, "podman rm removes the ifb");
}
