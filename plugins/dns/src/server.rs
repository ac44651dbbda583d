//! `berth-dns serve --dir DIR`: one network's DNS server, in the host namespace. It listens
//! on UDP port 53 of the network's gateway addresses, answers A, AAAA and PTR for the names in
//! `DIR/records.json` ([`Zone`]), relays every other query to the resolvers of the host's
//! resolv.conf, and takes `reload`, `ping` and `stop` on `DIR/control.sock`. A thread per
//! listening address answers from the shared zone; forwarded queries get a thread each (at most
//! [`MAX_FORWARDS`] at once) so a slow upstream never holds local answers up.

use crate::error::{DnsError, DnsResult};
use crate::store::{control_path, NetworkState, PID};
use crate::wire::{self, Malformed, Query, RCODE_SERVFAIL};
use crate::zone::{Decision, Zone};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Forwarded queries in flight at once; more are answered SERVFAIL.
pub const MAX_FORWARDS: usize = 128;
/// How long one upstream resolver may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// glibc reads at most three nameservers; so does the server.
const MAX_UPSTREAMS: usize = 3;

/// The process's entry point: `--dir DIR`. Writes `ready` (or the reason it cannot serve) on
/// stdout, then serves until told to stop; the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let dir = match args {
        [flag, dir] if flag == "--dir" => PathBuf::from(dir),
        _ => {
            println!("usage: berth-dns serve --dir DIR");
            return 2;
        }
    };
    match Server::bind(&dir) {
        Ok(server) => {
            announce_ready();
            server.run()
        }
        Err(e) => {
            println!("{}", error_chain(&e));
            1
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(&format!(": {cause}"));
        next = cause.source();
    }
    text
}

/// `ready` to whoever started the server, then stdout goes to /dev/null: the pipe closes.
fn announce_ready() {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"ready\n");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: both are open descriptors; dup2 replaces fd 1, which nothing else holds.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

struct Shared {
    zone: RwLock<Arc<Zone>>,
    forwarder: Forwarder,
}

impl Shared {
    fn zone(&self) -> Arc<Zone> {
        // A poisoned lock only means a reload panicked; the zone in it is whole.
        self.zone.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_zone(&self, zone: Zone) {
        *self.zone.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(zone);
    }
}

pub struct Server {
    dir: PathBuf,
    sockets: Vec<Arc<UdpSocket>>,
    control: UnixListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Reads the records, binds the DNS sockets and the control socket, writes the pid file.
    pub fn bind(dir: &Path) -> DnsResult<Server> {
        let state = NetworkState::load(dir)?
            .ok_or_else(|| DnsError::config("records.json", format!("no records in {}", dir.display())))?;
        let mut sockets = Vec::with_capacity(state.listen.len());
        for ip in &state.listen {
            let at = SocketAddr::new(*ip, state.port);
            let socket = bind_udp(at).map_err(|e| DnsError::server(format!("binding {at}"), dir, e))?;
            sockets.push(Arc::new(socket));
        }
        let path = control_path(dir);
        // A server killed earlier leaves its socket file; the plugin holds the network's lock.
        let _ = std::fs::remove_file(&path);
        let control = berth_util::unix::bind(&path).map_err(|e| DnsError::server("binding its control socket", dir, e))?;
        berth_util::fs::write_durably(&dir.join(PID), std::process::id().to_string().as_bytes())?;
        let forwarder = Forwarder::new(upstreams(&state.resolv_conf, &state.listen));
        let shared = Arc::new(Shared { zone: RwLock::new(Arc::new(Zone::new(&state))), forwarder });
        Ok(Server { dir: dir.to_path_buf(), sockets, control, shared })
    }

    /// Serves until `stop`; the exit status.
    pub fn run(self) -> i32 {
        for socket in &self.sockets {
            let (socket, shared) = (socket.clone(), self.shared.clone());
            std::thread::spawn(move || serve_udp(&socket, &shared));
        }
        for conn in self.control.incoming() {
            let Ok(conn) = conn else { continue };
            if self.command(conn) {
                return 0;
            }
        }
        1
    }

    /// One control command; true when it was `stop`.
    fn command(&self, mut conn: std::os::unix::net::UnixStream) -> bool {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        // One line of at most 256 bytes.
        let _ = BufReader::new(std::io::Read::take(&conn, 256)).read_line(&mut line);
        let (reply, stop) = match line.trim() {
            "ping" => (format!("ok {}", self.shared.zone().len()), false),
            "reload" => (self.reload(), false),
            "stop" => {
                let _ = std::fs::remove_file(control_path(&self.dir));
                let _ = std::fs::remove_file(self.dir.join(PID));
                (format!("stopping {}", std::process::id()), true)
            }
            other => (format!("error: unknown command {other:?}"), false),
        };
        let _ = conn.write_all(format!("{reply}\n").as_bytes());
        stop
    }

    fn reload(&self) -> String {
        match NetworkState::load(&self.dir) {
            Ok(Some(state)) => {
                let zone = Zone::new(&state);
                let names = zone.len();
                self.shared.set_zone(zone);
                format!("ok {names}")
            }
            Ok(None) => "error: the records are gone".into(),
            Err(e) => format!("error: {}", error_chain(&e)),
        }
    }
}

fn serve_udp(socket: &Arc<UdpSocket>, shared: &Shared) {
    let mut buf = [0u8; 4096];
    loop {
        // Errors here are transient (an ICMP error from an earlier send, a signal): go on.
        let Ok((len, peer)) = socket.recv_from(&mut buf) else { continue };
        let packet = &buf[..len];
        match wire::parse_query(packet) {
            Err(Malformed::Drop) => {}
            Err(Malformed::Reply { id, flags, rcode }) => {
                let _ = socket.send_to(&wire::error_response(id, flags, rcode), peer);
            }
            Ok(query) => match shared.zone().answer(&query) {
                Decision::Reply(bytes) => {
                    let _ = socket.send_to(&bytes, peer);
                }
                Decision::Forward => shared.forwarder.forward(&query, packet, peer, socket),
            },
        }
    }
}

/// Relays queries for names not on the network to the host's resolvers.
struct Forwarder {
    upstreams: Arc<Vec<SocketAddr>>,
    in_flight: Arc<AtomicUsize>,
}

impl Forwarder {
    fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder { upstreams: Arc::new(upstreams), in_flight: Arc::new(AtomicUsize::new(0)) }
    }

    fn forward(&self, query: &Query, packet: &[u8], client: SocketAddr, reply_via: &Arc<UdpSocket>) {
        let servfail = wire::response(query, RCODE_SERVFAIL, false, &[], 0);
        if self.upstreams.is_empty() || self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_FORWARDS {
            if !self.upstreams.is_empty() {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            let _ = reply_via.send_to(&servfail, client);
            return;
        }
        let (upstreams, in_flight, socket) = (self.upstreams.clone(), self.in_flight.clone(), reply_via.clone());
        let (packet, id) = (packet.to_vec(), query.id);
        let spawned = std::thread::Builder::new().spawn(move || {
            let reply = relay(&upstreams, &packet, id).unwrap_or(servfail);
            let _ = socket.send_to(&reply, client);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The first upstream answer to `packet` carrying its ID.
fn relay(upstreams: &[SocketAddr], packet: &[u8], id: u16) -> Option<Vec<u8>> {
    let mut buf = [0u8; 65535];
    for upstream in upstreams {
        let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let Ok(socket) = UdpSocket::bind(local) else { continue };
        if socket.connect(upstream).and_then(|()| socket.send(packet)).is_err() {
            continue;
        }
        let deadline = Instant::now() + UPSTREAM_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            let _ = socket.set_read_timeout(Some(left));
            match socket.recv(&mut buf) {
                Ok(len) if len >= 2 && buf[..2] == id.to_be_bytes() => return Some(buf[..len].to_vec()),
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    None
}

/// The nameservers of a resolv.conf, port 53, less the server's own addresses (no loops).
pub fn upstreams(resolv_conf: &Path, own: &[IpAddr]) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !own.contains(ip))
        .take(MAX_UPSTREAMS)
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A UDP socket bound to `at` even while the address is not (yet) usable, as an IPv6
/// gateway address is during duplicate address detection (IP_FREEBIND).
fn bind_udp(at: SocketAddr) -> std::io::Result<UdpSocket> {
    let (family, level, freebind) = match at {
        SocketAddr::V4(_) => (libc::AF_INET, libc::SOL_IP, libc::IP_FREEBIND),
        SocketAddr::V6(_) => (libc::AF_INET6, libc::SOL_IPV6, libc::IPV6_FREEBIND),
    };
    // SAFETY: socket has no memory preconditions; its descriptor is owned just below.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor just created and held by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_flag(fd, level, freebind)?;
    if at.is_ipv6() {
        set_flag(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?;
    }
    let rc = match at {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a valid sockaddr_in of the length given, alive for the call.
            unsafe { libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as libc::socklen_t) }
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: `sin6` is a valid sockaddr_in6 of the length given, alive for the call.
            unsafe {
                libc::bind(fd, (&sin6 as *const libc::sockaddr_in6).cast(), std::mem::size_of_val(&sin6) as libc::socklen_t)
            }
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UdpSocket::from(owned))
}

fn set_flag(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: optval points at a c_int alive for the call, and optlen is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_resolv_conf_without_our_own_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "# x\nsearch example\nnameserver 10.0.0.1\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n").unwrap();
        let got = upstreams(&path, &["10.0.0.1".parse().unwrap()]);
        let want: Vec<SocketAddr> =
            vec!["192.0.2.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap(), "1.1.1.1:53".parse().unwrap()];
        assert_eq!(got, want);
        assert!(upstreams(&dir.path().join("missing"), &[]).is_empty());
    }
}
