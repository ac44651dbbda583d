//! The firewall backends end to end (root), as a user sees them: servers in throwaway
//! namespaces answered through published ports, masquerade seen from outside, isolation
//! between networks, and DEL/GC leaving nothing behind. Nothing here touches the machine's own
//! namespace: every namespace is `berth-fwtest-<pid>-<n>`, removed on drop even when an
//! assertion fails, and the firewall tools only ever run inside them.
//!
//! ```text
//!  outside (10.99.0.2, fd99::2)          server :9000 "outside"
//!     | eth0 — up0
//!  host (10.99.0.1, fd99::1)             the firewall under test
//!     br0 10.1.0.1 fd01::1 ("red")       br1 10.2.0.1 fd02::1 ("blue")    br2 10.3.0.1 fd03::1 ("green")
//!      |vc1 (hairpin)   |vc2 (hairpin)     |vc3                              |vc4
//!     c1 .2 ::2         c2 .3 ::3          c3 10.2.0.2 fd02::2               c4 10.3.0.2 fd03::2
//!     tcp :80, udp :5353 "one"             tcp :80 "three"                   tcp :80 "four"
//! ```
//!
//! Red and blue are isolated networks; green, when attached, is open (`isolate` false).
//!
//! `cargo test -p berth-firewall --test firewall -- --ignored --nocapture bench` prints the
//! cost of one ADD and one DEL with 10, 100 and 1000 attachments present, per backend.

use berth_cni::spec::PortMapping;
use berth_cni::CniError;
use berth_firewall::{self as firewall, Attachment, Firewall, FirewallError};
use berth_netlink::{Netlink, RouteEntry, VethPeer};
use berth_netns::sysctl;
use berth_netns::NetNs;
use ipnet::IpNet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The backend a configuration's `firewallBackend` names, as berth-bridge gets it.
fn backend_named(name: &str) -> Result<Box<dyn Firewall>, FirewallError> {
    firewall::backend(name.parse()?)
}

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// How long a connection that should work may take to start working.
const DEADLINE: Duration = Duration::from_secs(10);

fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "firewall tests need root: they create network namespaces");
}

/// A throwaway named namespace, deleted on drop.
struct TestNs {
    name: String,
    ns: Option<NetNs>,
}

impl TestNs {
    fn new() -> TestNs {
        let name = format!("berth-fwtest-{}-{}", std::process::id(), NEXT_NS.fetch_add(1, Ordering::SeqCst));
        let mut guard = TestNs { name, ns: None };
        let ns = berth_netlink::create_named_netns(&guard.name).unwrap_or_else(|e| panic!("create netns {}: {e}", guard.name));
        guard.ns = Some(ns);
        // Addresses usable at once: no duplicate address detection in test namespaces.
        guard.run(|| {
            for key in ["net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"] {
                sysctl::set(key, "0").unwrap();
            }
        });
        guard
    }

    fn ns(&self) -> &NetNs {
        self.ns.as_ref().expect("namespace")
    }

    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        self.ns().run(f).unwrap_or_else(|e| panic!("enter {}: {e}", self.name))
    }

    fn netlink(&self) -> Netlink {
        Netlink::open_in(self.ns()).unwrap_or_else(|e| panic!("netlink socket in {}: {e}", self.name))
    }

    /// Runs a tool inside the namespace; its stdout, or the failure.
    fn tool(&self, program: &str, args: &[&str]) -> Result<String, String> {
        self.tool_with_input(program, args, "")
    }

    /// [`TestNs::tool`] with `input` on its stdin.
    fn tool_with_input(&self, program: &str, args: &[&str], input: &str) -> Result<String, String> {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.ns().prepare_command(&mut cmd).map_err(|e| e.to_string())?;
        let mut child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
        let written = child.stdin.take().expect("piped stdin").write_all(input.as_bytes());
        let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
        written.map_err(|e| format!("{program}: writing its input: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("{program} {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr)))
        }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.ns.take();
        if let Err(e) = NetNs::delete_named(&self.name) {
            eprintln!("cannot delete test namespace {}: {e}", self.name);
        }
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn route(dst: &str, gateway: &str) -> RouteEntry {
    RouteEntry { dst: net(dst), gateway: Some(ip(gateway)), oif: None, table: None, priority: None, mtu: None, scope: None }
}

/// A server answering every TCP connection or UDP datagram with "NAME PEER-ADDRESS".
struct Server {
    stop: Arc<AtomicBool>,
    /// A clone of the listening socket, to wake the TCP accept on drop.
    wake: Option<TcpListener>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn tcp(ns: &TestNs, bind: &str, name: &str) -> Server {
        let listener = ns.run(|| TcpListener::bind(sock(bind))).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, name) = (stop.clone(), name.to_string());
        let wake = listener.try_clone().unwrap();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut s) = stream {
                    let peer = s.peer_addr().map(|p| p.ip().to_canonical().to_string()).unwrap_or_default();
                    let _ = writeln!(s, "{name} {peer}");
                }
            }
        });
        Server { stop, wake: Some(wake), thread: Some(thread) }
    }

    fn udp(ns: &TestNs, bind: &str, name: &str) -> Server {
        let socket = ns.run(|| UdpSocket::bind(sock(bind))).unwrap_or_else(|e| panic!("bind udp {bind}: {e}"));
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, name) = (stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("{name} {}", peer.ip().to_canonical()).as_bytes(), peer);
                }
            }
        });
        Server { stop, wake: None, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(wake) = &self.wake {
            // Wakes the blocked accept (Linux returns EINVAL from accept on a shut-down listener).
            unsafe { libc::shutdown(wake.as_raw_fd(), libc::SHUT_RDWR) };
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One TCP exchange from `ns`: the server's answer.
fn tcp_once(ns: &TestNs, to: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut stream = ns.run(|| TcpStream::connect_timeout(&to, timeout)).map_err(|e| format!("connect {to}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("read from {to}: {e}"))?;
    match answer.trim() {
        "" => Err(format!("{to} closed without an answer")),
        a => Ok(a.to_string()),
    }
}

/// The answer of the server reached at `to` from `ns`, polling until the deadline.
fn tcp_ask(ns: &TestNs, to: &str) -> String {
    let to = sock(to);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tcp_once(ns, to, Duration::from_secs(1)) {
            Ok(answer) => return answer,
            Err(e) if Instant::now() > deadline => panic!("from {}: {e}", ns.name),
            Err(_) => std::thread::yield_now(),
        }
    }
}

/// Asserts that `to` cannot be reached from `ns` (refused or dropped).
fn tcp_blocked(ns: &TestNs, to: &str) {
    if let Ok(answer) = tcp_once(ns, sock(to), Duration::from_millis(1500)) {
        panic!("{to} answered {answer:?} from {}, but should not be reachable", ns.name);
    }
}

fn udp_ask(ns: &TestNs, to: &str) -> String {
    let to = sock(to);
    let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = ns.run(|| UdpSocket::bind(sock(bind))).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 128];
    loop {
        socket.send_to(b"hello", to).unwrap_or_else(|e| panic!("send to {to}: {e}"));
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(Instant::now() < deadline, "no UDP answer from {to} in {}", ns.name);
    }
}

/// Outside, host, two containers on br0 and one on br1, wired and addressed.
struct Lab {
    _servers: Vec<Server>,
    outside: TestNs,
    host: TestNs,
    c1: TestNs,
    c2: TestNs,
    c3: TestNs,
    c4: TestNs,
}

impl Lab {
    fn new() -> Lab {
        let (outside, host) = (TestNs::new(), TestNs::new());
        let (c1, c2, c3, c4) = (TestNs::new(), TestNs::new(), TestNs::new(), TestNs::new());
        let mut nl = host.netlink();
        let up0 = nl.create_veth("up0", &VethPeer { name: "eth0", netns: Some(outside.ns()), mac: None }, None, None).unwrap();
        nl.set_up(up0.index).unwrap();
        nl.add_address(up0.index, net("10.99.0.1/24")).unwrap();
        nl.add_address(up0.index, net("fd99::1/64")).unwrap();
        wire_container(&outside, &["10.99.0.2/24", "fd99::2/64"], &[]);
        let mut onl = outside.netlink();
        for (dst, gw) in [
            ("10.1.0.0/16", "10.99.0.1"),
            ("10.2.0.0/16", "10.99.0.1"),
            ("10.3.0.0/16", "10.99.0.1"),
            ("fd01::/64", "fd99::1"),
            ("fd02::/64", "fd99::1"),
            ("fd03::/64", "fd99::1"),
        ] {
            onl.add_route(&route(dst, gw)).unwrap();
        }

        for (bridge, v4, v6) in
            [("br0", "10.1.0.1/24", "fd01::1/64"), ("br1", "10.2.0.1/24", "fd02::1/64"), ("br2", "10.3.0.1/24", "fd03::1/64")]
        {
            let br = nl.ensure_bridge(bridge, None).unwrap();
            nl.add_address(br.index, net(v4)).unwrap();
            nl.add_address(br.index, net(v6)).unwrap();
        }
        for (ns, port, bridge, addrs, gws) in [
            (&c1, "vc1", "br0", ["10.1.0.2/24", "fd01::2/64"], ["10.1.0.1", "fd01::1"]),
            (&c2, "vc2", "br0", ["10.1.0.3/24", "fd01::3/64"], ["10.1.0.1", "fd01::1"]),
            (&c3, "vc3", "br1", ["10.2.0.2/24", "fd02::2/64"], ["10.2.0.1", "fd02::1"]),
            (&c4, "vc4", "br2", ["10.3.0.2/24", "fd03::2/64"], ["10.3.0.1", "fd03::1"]),
        ] {
            let br = nl.link_by_name(bridge).unwrap().unwrap();
            let veth =
                nl.create_veth(port, &VethPeer { name: "eth0", netns: Some(ns.ns()), mac: None }, None, Some(br.index)).unwrap();
            nl.set_hairpin(veth.index, true).unwrap();
            nl.set_up(veth.index).unwrap();
            wire_container(ns, &addrs, &gws);
        }

        let servers = vec![
            Server::tcp(&c1, "[::]:80", "one"),
            Server::udp(&c1, "[::]:5353", "one"),
            Server::tcp(&c3, "[::]:80", "three"),
            Server::tcp(&c4, "[::]:80", "four"),
            Server::tcp(&outside, "[::]:9000", "outside"),
        ];
        Lab { _servers: servers, outside, host, c1, c2, c3, c4 }
    }

    /// Runs a firewall operation in the host namespace, as berth-bridge does.
    fn fw<T>(&self, f: impl FnOnce() -> T) -> T {
        self.host.run(f)
    }
}

/// eth0 up with addresses and default routes via `gateways`.
fn wire_container(ns: &TestNs, addrs: &[&str], gateways: &[&str]) {
    let mut nl = ns.netlink();
    let eth0 = nl.link_by_name("eth0").unwrap().unwrap();
    nl.set_up(eth0.index).unwrap();
    for a in addrs {
        nl.add_address(eth0.index, net(a)).unwrap();
    }
    for gw in gateways {
        let dst = if ip(gw).is_ipv4() { "0.0.0.0/0" } else { "::/0" };
        nl.add_route(&route(dst, gw)).unwrap();
    }
}

fn pm(host_port: u16, container_port: u16, protocol: &str) -> PortMapping {
    PortMapping { host_port, container_port, protocol: protocol.into(), host_ip: String::new() }
}

/// What the backend holds in the host namespace, normalised for comparison: the nft table
/// (without handles, elements sorted) or both families' iptables-save (without counters).
fn snapshot(lab: &Lab, backend: &str) -> Vec<String> {
    let mut lines = Vec::new();
    match backend {
        "nftables" => lines = nft_table(&lab.host),
        iptables => {
            let variant = iptables.trim_start_matches("iptables-");
            for tool in ["iptables", "ip6tables"] {
                let save = lab.host.tool(&format!("{tool}-{variant}-save"), &[]).unwrap();
                for line in save.lines().filter(|l| !l.starts_with('#')) {
                    let line = match line.strip_prefix(':') {
                        Some(decl) => format!(":{}", decl.split_whitespace().take(2).collect::<Vec<_>>().join(" ")),
                        None => line.to_string(),
                    };
                    lines.push(format!("{tool} {line}"));
                }
            }
        }
    }
    lines.sort();
    lines
}

/// `nft -j list table inet berth` in `ns`, normalised: one line per item, without handles,
/// elements one per line, sorted.
fn nft_table(ns: &TestNs) -> Vec<String> {
    let mut lines = Vec::new();
    let json = ns.tool("nft", &["-j", "list", "table", "inet", "berth"]).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    strip_handles(&mut doc);
    for item in doc["nftables"].as_array().unwrap() {
        match item.get("map").or_else(|| item.get("set")) {
            Some(map) => {
                let name = map["name"].as_str().unwrap();
                lines.push(format!("map {name} {}", map["type"]));
                for elem in map["elem"].as_array().into_iter().flatten() {
                    lines.push(format!("element {name} {elem}"));
                }
            }
            None if item.get("metainfo").is_none() => lines.push(item.to_string()),
            None => {}
        }
    }
    lines.sort();
    lines
}

fn strip_handles(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.remove("handle");
            map.values_mut().for_each(strip_handles);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

fn naming<'a>(snapshot: &'a [String], what: &str) -> Vec<&'a String> {
    snapshot.iter().filter(|l| l.contains(what)).collect()
}

/// Everything a user of one backend sees, from ADD to GC.
fn end_to_end(backend: &str) {
    require_root();
    let lab = Lab::new();
    let fw = lab.fw(|| backend_named(backend)).unwrap();
    assert_eq!(fw.name(), backend);

    let red1 = [ip("10.1.0.2"), ip("fd01::2")];
    let red2 = [ip("10.1.0.3"), ip("fd01::3")];
    let blue3 = [ip("10.2.0.2"), ip("fd02::2")];
    let maps1 = [pm(8080, 80, "tcp"), pm(8053, 5353, "udp")];
    let one = Attachment {
        network: "red",
        container_id: "ctr-one",
        ifname: "eth0",
        bridge: "br0",
        addresses: &red1,
        masquerade: true,
        no_masquerade: &[],
        isolate: true,
        port_mappings: &maps1,
    };
    let two = Attachment { container_id: "ctr-two", addresses: &red2, masquerade: false, port_mappings: &[], ..one };
    let three = Attachment {
        network: "blue",
        container_id: "ctr-three",
        bridge: "br1",
        addresses: &blue3,
        masquerade: false,
        port_mappings: &[],
        ..one
    };

    lab.fw(|| fw.add(&two)).unwrap();
    lab.fw(|| fw.add(&three)).unwrap();
    let before = snapshot(&lab, backend);
    lab.fw(|| fw.add(&one)).unwrap();
    lab.fw(|| fw.add(&one)).expect("running ADD again is fine");
    for a in [&one, &two, &three] {
        lab.fw(|| fw.check(a)).unwrap_or_else(|e| panic!("CHECK {}: {e}", a.container_id));
    }
    let with_one = snapshot(&lab, backend);
    assert!(!naming(&with_one, "id=ctr-one").is_empty(), "{with_one:#?}");

    // Published ports from outside, TCP and UDP, both families: the container sees the client.
    assert_eq!(tcp_ask(&lab.outside, "10.99.0.1:8080"), "one 10.99.0.2");
    assert_eq!(udp_ask(&lab.outside, "10.99.0.1:8053"), "one 10.99.0.2");
    assert_eq!(tcp_ask(&lab.outside, "[fd99::1]:8080"), "one fd99::2");
    assert_eq!(udp_ask(&lab.outside, "[fd99::1]:8053"), "one fd99::2");
    // From the host itself, through its own addresses (not loopback, see the module docs).
    assert_eq!(tcp_ask(&lab.host, "10.99.0.1:8080"), "one 10.99.0.1");
    assert_eq!(tcp_ask(&lab.host, "10.1.0.1:8080"), "one 10.1.0.1");
    assert_eq!(tcp_ask(&lab.host, "[fd99::1]:8080"), "one fd99::1");
    tcp_blocked(&lab.host, "127.0.0.1:8080");
    // Hairpin: the container itself and its neighbour (masquerade off) through the host address.
    assert_eq!(tcp_ask(&lab.c1, "10.99.0.1:8080"), "one 10.1.0.1");
    assert_eq!(tcp_ask(&lab.c2, "10.99.0.1:8080"), "one 10.1.0.1");
    assert_eq!(tcp_ask(&lab.c1, "[fd99::1]:8080"), "one fd01::1");
    // Masquerade: outside sees the host's address; without it, the container's.
    assert_eq!(tcp_ask(&lab.c1, "10.99.0.2:9000"), "outside 10.99.0.1");
    assert_eq!(tcp_ask(&lab.c1, "[fd99::2]:9000"), "outside fd99::1");
    assert_eq!(tcp_ask(&lab.c2, "10.99.0.2:9000"), "outside 10.1.0.3");
    assert_eq!(tcp_ask(&lab.c2, "[fd99::2]:9000"), "outside fd01::3");
    // Exceptions per destination (a routed peer's subnets): the outside's IPv6 prefix is
    // excepted, its IPv4 one is not. CHECK wants them; DEL removes them with the rest, with
    // prevResult or (finding them by their comments) without.
    let excepted = [net("10.62.0.0/24"), net("fd99::/64")];
    let peered = Attachment { no_masquerade: &excepted, ..one };
    lab.fw(|| fw.add(&peered)).unwrap();
    lab.fw(|| fw.check(&peered)).unwrap_or_else(|e| panic!("CHECK with exceptions: {e}"));
    assert_eq!(tcp_ask(&lab.c1, "[fd99::2]:9000"), "outside fd01::2", "an excepted destination sees the container");
    assert_eq!(tcp_ask(&lab.c1, "10.99.0.2:9000"), "outside 10.99.0.1", "any other is masqueraded");
    lab.fw(|| fw.del(&peered)).unwrap();
    lab.fw(|| fw.add(&one)).unwrap();
    assert_eq!(snapshot(&lab, backend), with_one, "DEL removed the exceptions with the rest");
    lab.fw(|| fw.add(&peered)).unwrap();
    lab.fw(|| fw.del(&Attachment { addresses: &[], port_mappings: &[], ..peered })).unwrap();
    lab.fw(|| fw.add(&one)).unwrap();
    assert_eq!(snapshot(&lab, backend), with_one, "DEL without prevResult removed the exceptions too");
    let missing = lab.fw(|| fw.check(&peered)).expect_err("CHECK without the exceptions in place").to_string();
    assert!(missing.contains("10.62.0.0/24"), "{missing}");
    assert_eq!(tcp_ask(&lab.c1, "[fd99::2]:9000"), "outside fd99::1", "masqueraded again");
    // Isolation: no routed traffic between red and blue, but published ports stay reachable.
    tcp_blocked(&lab.c3, "10.1.0.2:80");
    tcp_blocked(&lab.c3, "[fd01::2]:80");
    tcp_blocked(&lab.c1, "10.2.0.2:80");
    assert_eq!(tcp_ask(&lab.c3, "10.99.0.1:8080"), "one 10.2.0.2");
    assert_eq!(tcp_ask(&lab.c3, "10.1.0.1:8080"), "one 10.2.0.2");

    // An open network (isolate false): green reaches red and blue and is reached from both,
    // while red and blue stay isolated from each other. Routed traffic leaving its bridge is
    // masqueraded like any other when ipMasq is on (c1), so green then sees br2's address.
    let green4 = [ip("10.3.0.2"), ip("fd03::2")];
    let four = Attachment {
        network: "green",
        container_id: "ctr-four",
        bridge: "br2",
        addresses: &green4,
        masquerade: false,
        isolate: false,
        port_mappings: &[],
        ..one
    };
    let without_four = snapshot(&lab, backend);
    lab.fw(|| fw.add(&four)).unwrap();
    lab.fw(|| fw.add(&four)).expect("running ADD again is fine");
    for a in [&four, &one, &three] {
        lab.fw(|| fw.check(a)).unwrap_or_else(|e| panic!("CHECK {}: {e}", a.container_id));
    }
    assert_eq!(tcp_ask(&lab.c4, "10.1.0.2:80"), "one 10.3.0.2");
    assert_eq!(tcp_ask(&lab.c4, "[fd01::2]:80"), "one fd03::2");
    assert_eq!(tcp_ask(&lab.c4, "10.2.0.2:80"), "three 10.3.0.2");
    assert_eq!(tcp_ask(&lab.c4, "[fd02::2]:80"), "three fd03::2");
    assert_eq!(tcp_ask(&lab.c2, "10.3.0.2:80"), "four 10.1.0.3");
    assert_eq!(tcp_ask(&lab.c3, "[fd03::2]:80"), "four fd02::2");
    assert_eq!(tcp_ask(&lab.c1, "10.3.0.2:80"), "four 10.3.0.1");
    assert_eq!(tcp_ask(&lab.c1, "[fd03::2]:80"), "four fd03::1");
    tcp_blocked(&lab.c3, "10.1.0.2:80");
    tcp_blocked(&lab.c3, "[fd01::2]:80");
    tcp_blocked(&lab.c2, "10.2.0.2:80");
    // CHECK tells an open attachment from an isolated one, both ways.
    assert!(lab.fw(|| fw.check(&Attachment { isolate: true, ..four })).is_err(), "CHECK of green as isolated");
    assert!(lab.fw(|| fw.check(&Attachment { isolate: false, ..three })).is_err(), "CHECK of blue as open");
    // DEL removes all of it, even when told the network is isolated now (its configuration
    // changed since ADD); GC of green too.
    lab.fw(|| fw.del(&Attachment { isolate: true, ..four })).unwrap();
    assert_eq!(snapshot(&lab, backend), without_four, "DEL left something of ctr-four behind");
    lab.fw(|| fw.add(&four)).unwrap();
    lab.fw(|| fw.gc("green", &[])).unwrap();
    assert_eq!(snapshot(&lab, backend), without_four, "GC left something of ctr-four behind");
    // An isolated container on the address of an open one that never had its DEL takes the
    // address over closed, and the late DEL of the open one leaves it alone.
    let ghost4 = Attachment { container_id: "ctr-ghost4", ..four };
    let closed4 = Attachment { isolate: true, ..four };
    lab.fw(|| fw.add(&ghost4)).unwrap();
    assert_eq!(tcp_ask(&lab.c3, "10.3.0.2:80"), "four 10.2.0.2");
    lab.fw(|| fw.add(&closed4)).expect("ADD over a stale open attachment of the same addresses");
    lab.fw(|| fw.check(&closed4)).unwrap();
    // Its entries in the index stay until its DEL, which finds them useless and goes by comment.
    let index = ["element owners ", "element addrs4 ", "element addrs6 "];
    assert!(naming(&snapshot(&lab, backend), "ctr-ghost4").iter().all(|e| index.iter().any(|i| e.starts_with(i))));
    tcp_blocked(&lab.c3, "10.3.0.2:80");
    tcp_blocked(&lab.c4, "10.1.0.2:80");
    tcp_blocked(&lab.c4, "[fd02::2]:80");
    lab.fw(|| fw.del(&ghost4)).unwrap();
    lab.fw(|| fw.check(&closed4)).expect("a late DEL of the stale open attachment removed nothing of its successor");
    lab.fw(|| fw.del(&closed4)).unwrap();
    assert_eq!(snapshot(&lab, backend), without_four);

    // A second mapping of a host port fails, naming the holder, and changes nothing.
    let taken = [pm(8080, 8081, "tcp")];
    let dup = Attachment { port_mappings: &taken, ..two };
    let err = CniError::from(lab.fw(|| fw.add(&dup)).unwrap_err());
    assert_eq!(err.code, 100, "{err}");
    assert!(err.msg.contains("host port 0.0.0.0:8080/tcp is already mapped to container ctr-one"), "{err}");
    assert!(err.msg.contains("network red") && err.msg.contains("10.1.0.2:80"), "{err}");
    assert_eq!(snapshot(&lab, backend), with_one, "a refused ADD changes nothing");
    lab.fw(|| fw.check(&two)).unwrap();
    // The same port on another protocol is free.
    let udp8080 = [pm(8080, 53, "udp")];
    let two_udp = Attachment { port_mappings: &udp8080, ..two };
    lab.fw(|| fw.add(&two_udp)).unwrap();
    lab.fw(|| fw.check(&two_udp)).unwrap();
    lab.fw(|| fw.del(&two_udp)).unwrap();
    lab.fw(|| fw.add(&two)).unwrap();
    assert!(naming(&snapshot(&lab, backend), "id=ctr-two").iter().all(|l| !l.contains("8080")));

    // DEL removes exactly what ADD added; twice is fine; the port is closed again.
    lab.fw(|| fw.del(&one)).unwrap();
    let after = snapshot(&lab, backend);
    assert_eq!(after, before, "DEL left something of ctr-one behind");
    assert!(naming(&after, "ctr-one").is_empty());
    lab.fw(|| fw.del(&one)).expect("DEL twice");
    assert!(lab.fw(|| fw.check(&one)).is_err(), "CHECK after DEL");
    tcp_blocked(&lab.outside, "10.99.0.1:8080");

    // DEL without addresses (no prevResult) finds the attachment by its comments.
    lab.fw(|| fw.add(&one)).unwrap();
    lab.fw(|| fw.del(&Attachment { addresses: &[], port_mappings: &[], ..one })).unwrap();
    assert_eq!(snapshot(&lab, backend), before);

    // GC of red keeps exactly the listed attachments, and never touches blue.
    lab.fw(|| fw.add(&one)).unwrap();
    let keep = [("ctr-two".to_string(), "eth0".to_string())];
    lab.fw(|| fw.gc("red", &keep)).unwrap();
    let after_gc = snapshot(&lab, backend);
    assert!(naming(&after_gc, "ctr-one").is_empty(), "{after_gc:#?}");
    assert_eq!(after_gc, before);
    lab.fw(|| fw.check(&two)).unwrap();
    lab.fw(|| fw.check(&three)).unwrap();
    lab.fw(|| fw.gc("red", &[])).unwrap();
    assert!(naming(&snapshot(&lab, backend), "ctr-two").is_empty());
    lab.fw(|| fw.check(&three)).unwrap();

    // A container that never had its DEL: its successor with the same addresses and host
    // ports takes over, and the late DEL of the dead one leaves the successor alone.
    let ghost = Attachment { container_id: "ctr-ghost", ..one };
    lab.fw(|| fw.add(&ghost)).unwrap();
    lab.fw(|| fw.add(&one)).expect("ADD over a stale attachment of the same addresses");
    lab.fw(|| fw.check(&one)).unwrap();
    lab.fw(|| fw.del(&ghost)).unwrap();
    lab.fw(|| fw.check(&one)).expect("a late DEL of the stale attachment removed nothing of its successor");
    assert_eq!(tcp_ask(&lab.outside, "10.99.0.1:8080"), "one 10.99.0.2");
    assert!(naming(&snapshot(&lab, backend), "ctr-ghost").is_empty());
    lab.fw(|| fw.del(&one)).unwrap();

    // With every attachment gone, only berth's empty scaffolding is left.
    lab.fw(|| fw.del(&three)).unwrap();
    let empty = snapshot(&lab, backend);
    assert!(naming(&empty, "id=").is_empty(), "{empty:#?}");
    assert!(naming(&empty, "net=").is_empty(), "per-network chains are removed with their last rule: {empty:#?}");
}

#[test]
fn nftables_end_to_end() {
    end_to_end("nftables");
}

#[test]
fn iptables_nft_end_to_end() {
    end_to_end("iptables-nft");
}

/// Legacy x_tables where the kernel has them; otherwise a clear error.
#[test]
fn iptables_legacy_end_to_end() {
    require_root();
    if std::path::Path::new("/proc/net/ip_tables_names").exists() {
        end_to_end("iptables-legacy");
        return;
    }
    eprintln!("this kernel has no legacy iptables (no /proc/net/ip_tables_names): checking the error");
    let host = TestNs::new();
    let addrs = [ip("10.1.0.2")];
    let maps = [pm(8080, 80, "tcp")];
    let a = Attachment {
        network: "red",
        container_id: "ctr-one",
        ifname: "eth0",
        bridge: "br0",
        addresses: &addrs,
        masquerade: true,
        no_masquerade: &[],
        isolate: true,
        port_mappings: &maps,
    };
    let err = CniError::from(host.run(|| backend_named("iptables-legacy").and_then(|fw| fw.add(&a))).unwrap_err());
    assert_eq!(err.code, 100, "{err}");
    assert!(err.msg.contains("iptables-legacy") && !err.details.is_empty(), "{err}");
}

/// The nftables backend writes an ADD's elements over nfnetlink when its table is set up, and
/// with `nft -f` when it sets up a table that is there but not as it writes it (here: an empty
/// `table inet berth` made beforehand, which also keeps the first ADD from creating the table
/// over nfnetlink). Two namespaces, two attachments added in both orders: each attachment's
/// elements are written once each way, and both tables list the same (keys, data, comments).
/// DEL (over nfnetlink too) leaves the same. What must go over nfnetlink runs with a backend
/// whose `nft` does not exist, so a fallback to `nft -f` would fail the test.
#[test]
fn nfnetlink_elements_list_as_nft_writes_them() {
    require_root();
    let x_addrs = [ip("10.1.0.2"), ip("fd01::2")];
    let x_maps = [
        pm(8080, 80, "tcp"),
        pm(5353, 53, "udp"),
        PortMapping { host_ip: "10.99.0.1".into(), ..pm(8443, 443, "tcp") },
        PortMapping { host_ip: "fd99::1".into(), ..pm(9999, 9, "sctp") },
    ];
    let x = Attachment {
        network: "red",
        container_id: "ctr-x",
        ifname: "eth0",
        bridge: "br0",
        addresses: &x_addrs,
        masquerade: true,
        no_masquerade: &[],
        isolate: false,
        port_mappings: &x_maps,
    };
    let y_addrs = [ip("10.2.0.2"), ip("fd02::2")];
    let y_maps = [pm(9090, 90, "tcp")];
    let y = Attachment {
        network: "blue",
        container_id: "ctr-y",
        ifname: "net1",
        bridge: "br-long-name-15",
        addresses: &y_addrs,
        masquerade: false,
        no_masquerade: &[],
        isolate: true,
        port_mappings: &y_maps,
    };
    let (first, second) = (TestNs::new(), TestNs::new());
    let fw = first.run(|| backend_named("nftables")).unwrap();
    let no_nft = firewall::Nftables::with_binary("/nonexistent/nft".into());
    for (ns, [slow, fast]) in [(&first, [&x, &y]), (&second, [&y, &x])] {
        ns.tool("nft", &["add", "table", "inet", "berth"]).unwrap();
        ns.run(|| fw.add(slow)).unwrap_or_else(|e| panic!("ADD {} with nft: {e}", slow.container_id));
        ns.run(|| no_nft.add(fast)).unwrap_or_else(|e| panic!("ADD {} over nfnetlink: {e}", fast.container_id));
    }
    let table = nft_table(&first);
    assert_eq!(table, nft_table(&second), "elements written over nfnetlink list as nft -f writes them");
    assert!(naming(&table, "element ctr4 ").len() == 2 && naming(&table, "element open6 ").len() == 1, "{table:#?}");
    // Their elements and, in the index, their fingerprints and addresses.
    assert_eq!(naming(&table, "berth net=red id=ctr-x if=eth0").len(), 12 + 3, "{table:#?}");
    assert_eq!(naming(&table, "berth net=blue id=ctr-y if=net1").len(), 4 + 3, "{table:#?}");
    assert_eq!(naming(&table, r#"{"concat":["fd99::1","sctp",9999]}"#).len(), 1, "{table:#?}");
    // A repeated ADD is a no-op, a DEL removes exactly the attachment's elements, twice.
    for (ns, gone, stays) in [(&first, &x, &y), (&second, &y, &x)] {
        ns.run(|| no_nft.add(gone)).unwrap();
        ns.run(|| no_nft.del(gone)).unwrap();
        ns.run(|| no_nft.del(gone)).unwrap();
        let left = nft_table(ns);
        assert!(naming(&left, &format!("id={} ", gone.container_id)).is_empty(), "{left:#?}");
        assert!(!naming(&left, &format!("id={} ", stays.container_id)).is_empty(), "{left:#?}");
        ns.run(|| fw.check(stays)).unwrap();
    }
    // ADD again over nfnetlink, in the other order: the same table as at first.
    first.run(|| no_nft.add(&x)).unwrap();
    second.run(|| no_nft.add(&y)).unwrap();
    assert_eq!(nft_table(&first), table);
    assert_eq!(nft_table(&second), table);
}

/// `nft -t list table inet berth`: the table as `nft` prints it, in order (rules, types,
/// comments, the table's comment, which `nft -j` leaves out), without elements.
fn nft_terse(ns: &TestNs) -> String {
    ns.tool("nft", &["-t", "list", "table", "inet", "berth"]).unwrap()
}

fn everything<'a>(addrs: &'a [IpAddr], maps: &'a [PortMapping]) -> Attachment<'a> {
    Attachment {
        network: "red",
        container_id: "ctr-x",
        ifname: "eth0",
        bridge: "br0",
        addresses: addrs,
        masquerade: true,
        no_masquerade: &[],
        isolate: false,
        port_mappings: maps,
    }
}

/// The first ADD on a host creates the table over nfnetlink, as `nft -f` of the backend's own
/// setup script writes it: table and comment, maps and their types, chains with hooks,
/// priorities and policies, every rule in order, the sentinel set, the elements.
#[test]
fn first_add_over_nfnetlink_lists_as_nft_setup_writes_it() {
    require_root();
    let addrs = [ip("10.1.0.2"), ip("fd01::2")];
    let maps = [pm(8080, 80, "tcp"), PortMapping { host_ip: "fd99::1".into(), ..pm(9999, 9, "sctp") }];
    let x = everything(&addrs, &maps);
    let (created, scripted) = (TestNs::new(), TestNs::new());
    let no_nft = firewall::Nftables::with_binary("/nonexistent/nft".into());
    created.run(|| no_nft.add(&x)).expect("first ADD over nfnetlink, without nft");
    scripted.tool_with_input("nft", &["-f", "-"], &firewall::Nftables::setup_script()).unwrap();
    scripted.run(|| no_nft.add(&x)).expect("ADD over nfnetlink on the table nft set up");

    let terse = nft_terse(&created);
    assert_eq!(terse, nft_terse(&scripted));
    assert_eq!(nft_table(&created), nft_table(&scripted));
    for part in [
        "comment \"berth CNI plugins: NAT, port mappings, isolation\"",
        "map hostports6 {\n\t\ttype ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
        "type nat hook prerouting priority dstnat; policy accept;",
        "type filter hook forward priority filter; policy accept;",
        "ip6 daddr != ::1 fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostports6",
        "ip saddr @masq4 ip daddr != 224.0.0.0/4 masquerade comment \"ipMasq\"",
        "comment \"marks the chains' rules as those of this berth version\"",
    ] {
        assert!(terse.contains(part), "{part:?} missing from\n{terse}");
    }
    let fw = created.run(|| backend_named("nftables")).unwrap();
    created.run(|| fw.check(&x)).unwrap();
    created.run(|| no_nft.del(&x)).unwrap();
    assert!(naming(&nft_table(&created), "id=").is_empty());
}

/// Many first ADDs at once on a host without the table: one creates it, the others find it
/// there and add their elements over nfnetlink (never `nft`, which does not exist here).
#[test]
fn concurrent_first_adds_create_the_table_once() {
    require_root();
    const N: usize = 32;
    let host = TestNs::new();
    let ids: Vec<String> = (0..N).map(|i| format!("ctr-{i}")).collect();
    let addrs: Vec<[IpAddr; 1]> = (0..N).map(|i| [IpAddr::from([10, 1, 1, i as u8 + 2])]).collect();
    let maps: Vec<[PortMapping; 1]> = (0..N).map(|i| [pm(20000 + i as u16, 80, "tcp")]).collect();
    let attachments: Vec<Attachment> =
        (0..N).map(|i| Attachment { container_id: &ids[i], ..everything(&addrs[i], &maps[i]) }).collect();
    let start = Barrier::new(N);
    std::thread::scope(|s| {
        let adds: Vec<_> = attachments
            .iter()
            .map(|a| {
                let (host, start) = (&host, &start);
                s.spawn(move || {
                    let no_nft = firewall::Nftables::with_binary("/nonexistent/nft".into());
                    start.wait();
                    host.run(|| no_nft.add(a))
                })
            })
            .collect();
        for (a, add) in attachments.iter().zip(adds) {
            add.join().unwrap().unwrap_or_else(|e| panic!("ADD {}: {e}", a.container_id));
        }
    });
    let fw = host.run(|| backend_named("nftables")).unwrap();
    for a in &attachments {
        host.run(|| fw.check(a)).unwrap_or_else(|e| panic!("CHECK {}: {e}", a.container_id));
    }
    let table = nft_table(&host);
    assert_eq!(naming(&table, "map rules_").len(), 1, "{table:#?}");
    assert_eq!(naming(&table, "element ports4 ").len(), N, "{table:#?}");
}

/// DEL without addresses (no prevResult: the runtime lost its result cache) and GC find an
/// attachment's elements by their comments, listed over nfnetlink: the backend here has no
/// `nft` to list with. Found are elements `nft -f` wrote (ADD's slow path, older berth
/// versions) as well as those of nfnetlink batches, prefixes of interval maps included;
/// removed are exactly that attachment's, on a host without the table too, and a second DEL
/// is fine.
#[test]
fn del_without_addresses_lists_the_maps_over_nfnetlink() {
    require_root();
    let host = TestNs::new();
    let no_nft = firewall::Nftables::with_binary("/nonexistent/nft".into());
    let x_addrs = [ip("10.1.0.2"), ip("fd01::2")];
    let x_maps = [pm(8080, 80, "tcp"), PortMapping { host_ip: "fd99::1".into(), ..pm(9999, 9, "sctp") }];
    let x_nets = [net("10.62.0.0/24"), net("192.0.2.7/32"), net("fd62::/64")];
    let x = Attachment { no_masquerade: &x_nets, ..everything(&x_addrs, &x_maps) };
    let x_unknown = Attachment { addresses: &[], port_mappings: &[], no_masquerade: &[], ..x };
    let y_addrs = [ip("10.1.0.3")];
    let y_maps = [pm(8081, 80, "udp")];
    let y = Attachment { container_id: "ctr-y", addresses: &y_addrs, port_mappings: &y_maps, isolate: true, ..x };

    host.run(|| no_nft.del(&x_unknown)).expect("DEL on a host without the table");
    assert!(host.tool("nft", &["list", "table", "inet", "berth"]).is_err(), "DEL created no table");

    // An empty table made beforehand sends the first ADD down the slow path: `nft -f`.
    host.tool("nft", &["add", "table", "inet", "berth"]).unwrap();
    let fw = host.run(|| backend_named("nftables")).unwrap();
    host.run(|| fw.add(&x)).unwrap();
    host.run(|| no_nft.add(&y)).unwrap();
    let table = nft_table(&host);
    // ctr, open and masq of both addresses; three no-masquerade destinations (interval map
    // elements: ranges); 8080 in ports4 and ports6; 9999 in hostports6; the index's three.
    assert_eq!(naming(&table, "id=ctr-x ").len(), 12 + 3, "{table:#?}");
    let of_y = naming(&table, "id=ctr-y ").len();

    for round in ["DEL", "DEL again"] {
        host.run(|| no_nft.del(&x_unknown)).unwrap_or_else(|e| panic!("{round} without addresses: {e}"));
        let left = nft_table(&host);
        assert!(naming(&left, "id=ctr-x ").is_empty(), "{round}: {left:#?}");
        assert_eq!(naming(&left, "id=ctr-y ").len(), of_y, "{round} took elements of another attachment: {left:#?}");
        host.run(|| fw.check(&y)).unwrap_or_else(|e| panic!("{round}: {e}"));
    }

    // GC finds them the same way.
    host.run(|| no_nft.add(&x)).unwrap();
    host.run(|| no_nft.gc("red", &[("ctr-y".to_string(), "eth0".to_string())])).unwrap();
    assert!(naming(&nft_table(&host), "id=ctr-x ").is_empty());
    host.run(|| fw.check(&y)).unwrap();
}

/// DEL without addresses but with the configuration ADD had (a runtime without a result
/// cache passes the same configuration and port mappings) finds the attachment's addresses
/// in the table's index, not by listing it; with another configuration (no port mappings
/// passed, say), with prevResult or without, it still removes all, by comment. An ADD again with other port mappings
/// leaves only the new ones. A table an earlier version wrote, without the index, is
/// indexed by the next ADD's slow path, its attachments included. Needs root.
#[test]
fn del_without_addresses_finds_the_attachment_in_the_index() {
    require_root();
    let host = TestNs::new();
    let fw = host.run(|| backend_named("nftables")).unwrap();
    let x_addrs = [ip("10.1.0.2"), ip("fd01::2"), ip("10.9.0.2")];
    let (x_maps, x_other_maps) = ([pm(8080, 80, "tcp")], [pm(9090, 80, "tcp")]);
    let x_nets = [net("10.62.0.0/24")];
    let x = Attachment { no_masquerade: &x_nets, ..everything(&x_addrs, &x_maps) };
    let x_unknown = Attachment { addresses: &[], ..x };
    let y_addrs = [ip("10.1.0.3")];
    let y_maps = [pm(8081, 80, "udp")];
    let y = Attachment { container_id: "ctr-y", addresses: &y_addrs, port_mappings: &y_maps, isolate: true, ..x };
    let y_unknown = Attachment { addresses: &[], ..y };
    let of = |id: &str| naming(&nft_table(&host), &format!("id={id} ")).len();
    let map_len = |map: &str| naming(&nft_table(&host), &format!("element {map} ")).len();
    let del_all_ways = |round: &str| {
        let ways = [
            ("same configuration", x_unknown),
            ("no port mappings", Attachment { port_mappings: &[], ..x_unknown }),
            // The batch's own check of the fingerprint: prevResult, but not the mappings.
            ("with addresses, no port mappings", Attachment { port_mappings: &[], ..x }),
        ];
        for (way, del) in ways {
            host.run(|| fw.add(&x)).unwrap();
            host.run(|| fw.check(&x)).unwrap_or_else(|e| panic!("{round}, {way}: CHECK: {e}"));
            host.run(|| fw.del(&del)).unwrap_or_else(|e| panic!("{round}, {way}: DEL without addresses: {e}"));
            let left = nft_table(&host);
            assert!(naming(&left, "id=ctr-x ").is_empty(), "{round}, {way}: {left:#?}");
            host.run(|| fw.check(&y)).unwrap_or_else(|e| panic!("{round}, {way}: CHECK of the other: {e}"));
        }
    };

    host.run(|| fw.add(&y)).unwrap();
    host.run(|| fw.add(&x)).unwrap();
    // Three addresses, two of them IPv4, and one fingerprint each.
    assert_eq!((map_len("owners"), map_len("addrs4"), map_len("addrs6")), (2, 3, 1));
    del_all_ways("indexed");
    host.run(|| fw.del(&x_unknown)).expect("a second DEL");

    // ADD again with other port mappings, without DEL: the old mapping goes.
    host.run(|| fw.add(&x)).unwrap();
    let moved = Attachment { port_mappings: &x_other_maps, ..x };
    host.run(|| fw.add(&moved)).unwrap();
    host.run(|| fw.check(&moved)).unwrap();
    assert!(naming(&nft_table(&host), "id=ctr-x ").iter().all(|e| !e.contains("8080")), "the old mapping stayed");
    host.run(|| fw.del(&Attachment { addresses: &[], ..moved })).unwrap();
    assert_eq!(of("ctr-x"), 0);

    // A table as an earlier version left it: no index, its sentinel another.
    let listing = host.tool("nft", &["list", "table", "inet", "berth"]).unwrap();
    let sentinel = listing.split_whitespace().find(|w| w.starts_with("rules_")).expect("a sentinel set").to_string();
    host.run(|| fw.add(&x)).unwrap();
    let before = nft_table(&host);
    for set in ["owners", "addrs4", "addrs6", &sentinel] {
        host.tool("nft", &["delete", "set", "inet", "berth", set])
            .or_else(|_| host.tool("nft", &["delete", "map", "inet", "berth", set]))
            .unwrap();
    }
    assert_eq!(of("ctr-x"), naming(&before, "id=ctr-x ").len() - 4, "x's elements without its four in the index");
    host.run(|| fw.del(&x_unknown)).expect("DEL without addresses, no index");
    assert_eq!(of("ctr-x"), 0);
    assert_eq!(of("ctr-y"), naming(&before, "id=ctr-y ").len() - 2, "y is left whole, but for its index");
    // The next ADD writes the index, for y too.
    host.run(|| fw.add(&x)).unwrap();
    assert_eq!(nft_table(&host), before, "the slow path's table is the one the fast path wrote");
    host.run(|| fw.del(&y_unknown)).unwrap();
    assert_eq!(of("ctr-y"), 0);
    host.run(|| fw.add(&y)).unwrap();
    del_all_ways("indexed anew");
}

/// DEL without addresses, and GC, while other attachments come and go. With 600
/// attachments a map's elements come in several datagrams, and a dump resumes by counting
/// what it sent: an element deleted meanwhile before that point (another plugin's DEL, here
/// hundreds a second) makes it skip one, which would then be left behind. Every deleted
/// attachment must be gone whole, and nothing of the others; each GC of the network must
/// leave none of its attachments (a GC lists every map once and removes all it finds, so a
/// skipped element shows).
#[test]
fn del_without_addresses_and_gc_while_other_attachments_change() {
    require_root();
    const PRESENT: usize = 600;
    const DELETED: usize = 40;
    let host = TestNs::new();
    let fw = host.run(|| backend_named("nftables")).unwrap();
    let ids: Vec<String> = (0..PRESENT).map(|i| format!("bench-{i}")).collect();
    let addrs: Vec<[IpAddr; 1]> = (0..PRESENT).map(|i| [addr_of(i)]).collect();
    let maps: Vec<[PortMapping; 1]> = (0..PRESENT).map(|i| [pm(10000 + i as u16, 80, "tcp")]).collect();
    let attachments: Vec<Attachment> = (0..PRESENT).map(|i| bench_attachment(&ids[i], &addrs[i], &maps[i])).collect();
    let add_all = |range: std::ops::Range<usize>| attachments[range].iter().for_each(|a| host.run(|| fw.add(a)).unwrap());
    add_all(0..PRESENT);
    let (stop, paused) = (AtomicBool::new(false), AtomicBool::new(false));
    // `nft` lists the table only while the churn pauses: it starts its listing over whenever
    // nf_tables changes during it, which a change every millisecond makes endless.
    let listed = || {
        paused.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        let table = nft_table(&host);
        paused.store(false, Ordering::SeqCst);
        table
    };
    let churned = std::thread::scope(|s| {
        let churn = s.spawn(|| churn_attachments(&host, &stop, &paused));
        // Stops the churn however the DELs end (a panic would otherwise leave it running).
        let stopper = StopOnDrop(&stop);
        for a in &attachments[..DELETED] {
            let unknown = Attachment { addresses: &[], port_mappings: &[], ..*a };
            host.run(|| fw.del(&unknown)).unwrap_or_else(|e| panic!("DEL of {} without addresses: {e}", a.container_id));
        }
        let table = listed();
        for id in &ids[..DELETED] {
            assert!(naming(&table, &format!("id={id} ")).is_empty(), "{id} was deleted but left elements");
        }
        // ctr4, masq4 and ports4 of each attachment left, and owners and addrs4 in the index.
        assert_eq!(naming(&table, "id=bench-").len(), 5 * (PRESENT - DELETED));
        for round in 0..4 {
            if round > 0 {
                add_all(0..PRESENT / 2);
            }
            host.run(|| fw.gc("bench", &[])).unwrap_or_else(|e| panic!("GC {round}: {e}"));
            let left = naming(&listed(), "id=bench-").len();
            assert_eq!(left, 0, "GC {round} left elements of the network's attachments");
        }
        drop(stopper);
        churn.join().unwrap()
    });
    assert!(churned > 0, "nothing changed meanwhile: the test proves nothing");
}

/// Deletes and adds again, one by one, eight attachments of network "churn" until `stop`:
/// each change a commit of its own, a millisecond apart, none while `paused`.
fn churn_attachments(host: &TestNs, stop: &AtomicBool, paused: &AtomicBool) -> usize {
    let fw = host.run(|| backend_named("nftables")).unwrap();
    let ids: Vec<String> = (0..8).map(|i| format!("churn-{i}")).collect();
    let addrs: Vec<[IpAddr; 1]> = (0..8).map(|i| [addr_of(5000 + i)]).collect();
    let maps: Vec<[PortMapping; 1]> = (0..8).map(|i| [pm(30000 + i as u16, 80, "tcp")]).collect();
    let churning: Vec<Attachment> =
        (0..8).map(|i| Attachment { network: "churn", ..bench_attachment(&ids[i], &addrs[i], &maps[i]) }).collect();
    churning.iter().for_each(|a| host.run(|| fw.add(a)).unwrap());
    let mut changes = 0;
    while !stop.load(Ordering::SeqCst) {
        if paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let a = &churning[changes / 2 % 8];
        match changes % 2 {
            0 => host.run(|| fw.del(a)).unwrap(),
            _ => host.run(|| fw.add(a)).unwrap(),
        }
        changes += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    changes
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn backend_names() {
    require_root();
    let host = TestNs::new();
    let auto = host.run(|| backend_named("auto")).unwrap();
    assert_eq!(auto.name(), "nftables", "nft is installed here");
    assert_eq!(host.run(|| backend_named("")).unwrap().name(), "nftables");
    // No legacy tables in a fresh namespace: "iptables" means iptables-nft.
    assert_eq!(host.run(|| backend_named("iptables")).unwrap().name(), "iptables-nft");
    let err = CniError::from(host.run(|| backend_named("pf")).err().unwrap());
    assert_eq!(err.code, 7);
    assert!(err.msg.contains("firewallBackend \"pf\""), "{err}");
    let none = backend_named("none").unwrap();
    let maps = [pm(8080, 80, "tcp")];
    let addrs = [ip("10.1.0.2")];
    let a = Attachment {
        network: "red",
        container_id: "c",
        ifname: "eth0",
        bridge: "br0",
        addresses: &addrs,
        masquerade: false,
        no_masquerade: &[],
        isolate: true,
        port_mappings: &maps,
    };
    assert_eq!(CniError::from(none.add(&a).unwrap_err()).code, 7, "port mappings need a firewall");
}

/// A name that would need quoting in nft or iptables input is refused before any tool runs.
#[test]
fn invalid_names_are_refused() {
    require_root();
    let host = TestNs::new();
    let fw = host.run(|| backend_named("nftables")).unwrap();
    let addrs = [ip("10.1.0.2")];
    let a = Attachment {
        network: "red",
        container_id: "c\"; flush ruleset",
        ifname: "eth0",
        bridge: "br0",
        addresses: &addrs,
        masquerade: true,
        no_masquerade: &[],
        isolate: true,
        port_mappings: &[],
    };
    assert_eq!(CniError::from(host.run(|| fw.add(&a)).unwrap_err()).code, 7);
    assert!(host.tool("nft", &["list", "table", "inet", "berth"]).is_err(), "nothing was written");
}

/// Any interface name the kernel takes (and so the skel) is usable: `eth@0` and a bridge
/// `br@0` are set up, checked and removed, with DEL by comment (no addresses) too.
#[test]
fn interface_names_the_kernel_takes_are_usable() {
    require_root();
    for backend in ["nftables", "iptables-nft"] {
        let host = TestNs::new();
        let fw = host.run(|| backend_named(backend)).unwrap();
        let addrs = [ip("10.1.0.2")];
        let maps = [pm(8080, 80, "tcp")];
        let a = Attachment {
            network: "red",
            container_id: "c1",
            ifname: "eth@0",
            bridge: "br@0",
            addresses: &addrs,
            masquerade: true,
            no_masquerade: &[],
            isolate: true,
            port_mappings: &maps,
        };
        host.run(|| fw.add(&a)).unwrap_or_else(|e| panic!("{backend}: {e}"));
        host.run(|| fw.check(&a)).unwrap_or_else(|e| panic!("{backend}: {e}"));
        let without_addresses = Attachment { addresses: &[], port_mappings: &[], ..a };
        host.run(|| fw.del(&without_addresses)).unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(host.run(|| fw.check(&a)).is_err(), "{backend}: DEL removed it");
        host.run(|| fw.add(&a)).unwrap();
        host.run(|| fw.gc("red", &[])).unwrap();
        assert!(host.run(|| fw.check(&a)).is_err(), "{backend}: GC removed it");
    }
}

/// Not a test: prints what each backend writes for three attachments (one open) (`-- --ignored --nocapture show`).
#[test]
#[ignore = "a tool, not a test: prints the rulesets (run with --ignored --nocapture show)"]
fn show_ruleset() {
    require_root();
    let addrs = [ip("10.1.0.2"), ip("fd01::2")];
    let maps = [pm(8080, 80, "tcp"), PortMapping { host_ip: "10.99.0.1".into(), ..pm(8443, 443, "tcp") }];
    let one = Attachment {
        network: "red",
        container_id: "ctr-one",
        ifname: "eth0",
        bridge: "br0",
        addresses: &addrs,
        masquerade: true,
        no_masquerade: &[],
        isolate: true,
        port_mappings: &maps,
    };
    let addrs3 = [ip("10.2.0.2")];
    let three = Attachment {
        network: "blue",
        container_id: "ctr-three",
        bridge: "br1",
        addresses: &addrs3,
        masquerade: false,
        port_mappings: &[],
        ..one
    };
    let addrs4 = [ip("10.3.0.2"), ip("fd03::2")];
    let four = Attachment {
        network: "green",
        container_id: "ctr-four",
        bridge: "br2",
        addresses: &addrs4,
        masquerade: false,
        isolate: false,
        port_mappings: &[],
        ..one
    };
    for backend in ["nftables", "iptables-nft"] {
        let host = TestNs::new();
        let fw = host.run(|| backend_named(backend)).unwrap();
        host.run(|| fw.add(&one)).unwrap();
        host.run(|| fw.add(&three)).unwrap();
        host.run(|| fw.add(&four)).unwrap();
        println!("===== {backend}");
        if backend == "nftables" {
            println!("{}", host.tool("nft", &["list", "table", "inet", "berth"]).unwrap());
        } else {
            println!("{}", host.tool("iptables-nft-save", &[]).unwrap());
            println!("{}", host.tool("ip6tables-nft-save", &[]).unwrap());
        }
    }
}

/// Not a correctness test: prints the cost of one ADD and one DEL (with the attachment's
/// addresses, and without: no prevResult) as attachments accumulate.
#[test]
#[ignore = "a benchmark, not a test (run with --ignored --nocapture bench; figures in BENCHMARKS.md)"]
fn bench_add_cost() {
    require_root();
    let sizes = [10usize, 100, 1000];
    // BERTH_BENCH_BACKENDS=nftables,...: some of them.
    let only = std::env::var("BERTH_BENCH_BACKENDS").unwrap_or_default();
    for backend in ["nftables", "iptables-nft", "iptables-legacy"]
        .into_iter()
        .filter(|b| only.is_empty() || only.split(',').any(|o| o == *b))
    {
        let host = TestNs::new();
        let fw = host.run(|| backend_named(backend)).unwrap();
        let mut present = 0usize;
        let fill_start = Instant::now();
        for &size in &sizes {
            while present < size {
                let id = format!("bench-{present}");
                let addrs = [addr_of(present)];
                let maps = [pm(10000 + present as u16, 80, "tcp")];
                host.run(|| fw.add(&bench_attachment(&id, &addrs, &maps))).unwrap();
                present += 1;
            }
            let (mut adds, mut dels, mut dels_unknown) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..7 {
                let id = format!("probe-{round}");
                let addrs = [addr_of(5000 + round)];
                let maps = [pm(30000, 80, "tcp")];
                let a = bench_attachment(&id, &addrs, &maps);
                let t = Instant::now();
                host.run(|| fw.add(&a)).unwrap();
                adds.push(t.elapsed());
                let t = Instant::now();
                host.run(|| fw.del(&a)).unwrap();
                dels.push(t.elapsed());
                // DEL without prevResult: no addresses, found by comment.
                host.run(|| fw.add(&a)).unwrap();
                let t = Instant::now();
                host.run(|| fw.del(&Attachment { addresses: &[], ..a })).unwrap();
                dels_unknown.push(t.elapsed());
            }
            adds.sort();
            dels.sort();
            dels_unknown.sort();
            println!(
                "{backend:16} {size:5} attachments: ADD median {:6.2} ms (min {:6.2}), DEL median {:6.2} ms, without addresses {:6.2} ms",
                ms(adds[3]),
                ms(adds[0]),
                ms(dels[3]),
                ms(dels_unknown[3])
            );
        }
        println!("{backend:16} filling to {present} took {:.1} s", fill_start.elapsed().as_secs_f64());
    }
}

fn addr_of(n: usize) -> IpAddr {
    IpAddr::from([10, 50 + (n / 250) as u8, (n % 250) as u8 + 2, 2])
}

fn bench_attachment<'a>(id: &'a str, addrs: &'a [IpAddr], maps: &'a [PortMapping]) -> Attachment<'a> {
    Attachment {
        network: "bench",
        container_id: id,
        ifname: "eth0",
        bridge: "br0",
        addresses: addrs,
        masquerade: true,
        no_masquerade: &[],
        isolate: true,
        port_mappings: maps,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
