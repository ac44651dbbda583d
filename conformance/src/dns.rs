//! For berth-dns's tests and benchmark: DNS queries from inside a namespace, a fake upstream
//! resolver, and a guard that kills the per-network DNS servers a test started.

use berth_dns::wire::{self, Answer, Rdata};
use berth_netns::NetNs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A UDP socket inside the namespace at `netns` (the caller's namespace when `None`).
pub fn socket_in(netns: Option<&Path>, family_of: IpAddr) -> UdpSocket {
    let local: SocketAddr = if family_of.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let bind = || UdpSocket::bind(local).expect("bind a client socket");
    let socket = match netns {
        Some(path) => NetNs::open(path).expect("namespace to ask from").run(bind).expect("enter namespace"),
        None => bind(),
    };
    socket.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    socket
}

/// Asks `server` port 53 for `name` of `qtype` over `socket`; the decoded answer, or `None`
/// when none came within the socket's timeout.
pub fn ask(socket: &UdpSocket, server: SocketAddr, id: u16, name: &str, qtype: u16) -> Option<Answer> {
    socket.send_to(&wire::build_query(id, name, qtype), server).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let (len, _) = socket.recv_from(&mut buf).ok()?;
        match wire::parse_answer(&buf[..len]) {
            Some(answer) if answer.id == id => return Some(answer),
            _ => continue,
        }
    }
}

/// One query from the namespace at `netns` to `server`:53.
pub fn query(netns: &Path, server: IpAddr, name: &str, qtype: u16) -> Option<Answer> {
    let socket = socket_in(Some(netns), server);
    ask(&socket, SocketAddr::new(server, 53), 0x4242, name, qtype)
}

/// The A and AAAA addresses of an answer.
pub fn addresses(answer: &Answer) -> Vec<IpAddr> {
    answer
        .records
        .iter()
        .filter_map(|r| match r {
            Rdata::A(v4) => Some(IpAddr::V4(*v4)),
            Rdata::Aaaa(v6) => Some(IpAddr::V6(*v6)),
            Rdata::Ptr(_) => None,
        })
        .collect()
}

/// A resolver playing the host's upstream: `NAME` A → `address` for the names it knows,
/// NXDOMAIN for others. Runs on a thread until the process exits.
pub struct FakeUpstream {
    pub at: SocketAddr,
}

impl FakeUpstream {
    /// Listens on `at` inside the namespace at `netns`.
    pub fn start(netns: &Path, at: SocketAddr, known: Vec<(String, Ipv4Addr)>) -> FakeUpstream {
        let socket = NetNs::open(netns).expect("namespace").run(|| UdpSocket::bind(at)).expect("enter").expect("bind upstream");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((len, peer)) = socket.recv_from(&mut buf) {
                let Ok(q) = wire::parse_query(&buf[..len]) else { continue };
                let reply = match known.iter().find(|(n, _)| *n == q.name) {
                    Some((_, ip)) if q.qtype == wire::TYPE_A => wire::response(&q, 0, true, &[Rdata::A(*ip)], 60),
                    Some(_) => wire::response(&q, 0, true, &[], 60),
                    None => wire::response(&q, wire::RCODE_NXDOMAIN, true, &[], 60),
                };
                let _ = socket.send_to(&reply, peer);
            }
        });
        FakeUpstream { at }
    }
}

/// Kills, when dropped, every DNS server whose pid file is under `data_dir` (berth-dns's
/// `dataDir`): tests leave no server behind, even when they fail. Declare it after the
/// [`crate::TestHost`] whose folder holds `data_dir`, so it drops first.
pub struct Servers {
    pub data_dir: PathBuf,
}

impl Servers {
    /// The pid of network `network`'s server, when it runs.
    pub fn pid(&self, network: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join(network).join(berth_dns::store::PID)).ok()?;
        text.trim().parse().ok().filter(|pid| running(*pid))
    }

    /// Kills network `network`'s server and waits until it is gone.
    pub fn kill(&self, network: &str) {
        let Some(pid) = self.pid(network) else { return };
        // SAFETY: kill has no memory-safety preconditions; the pid is a server this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(crate::eventually(Duration::from_secs(5), || !running(pid)), "server {pid} still running");
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let Ok(networks) = std::fs::read_dir(&self.data_dir) else { return };
        for network in networks.flatten() {
            let name = network.file_name().to_string_lossy().into_owned();
            self.kill(&name);
        }
    }
}

/// Whether `pid` runs (a zombie does not).
pub fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Latencies of `count` queries for `names` (round robin) over one socket, one at a time.
pub fn latencies(socket: &UdpSocket, server: SocketAddr, names: &[String], count: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let name = &names[i % names.len()];
        let start = Instant::now();
        let answer = ask(socket, server, i as u16, name, wire::TYPE_A);
        assert!(answer.is_some_and(|a| a.rcode == 0 && !a.records.is_empty()), "no answer for {name}");
        out.push(start.elapsed());
    }
    out
}


