//! A tiny TCP/UDP "who is calling" server and client, run inside network namespaces: the
//! server answers every connection or datagram with the peer address it saw, which is what
//! NAT tests need to look at (did the packet arrive, and from which source).

use berth_netns::NetNs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Serves until dropped.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `addr` (TCP and UDP) inside the namespace at `netns`; `[::]:PORT` serves
    /// both families (IPv4 peers are reported as IPv4 addresses).
    pub fn start(netns: &Path, addr: SocketAddr) -> EchoServer {
        let ns = NetNs::open(netns).expect("server namespace");
        // Sockets belong to the namespace they were made in; the threads can run anywhere.
        let (tcp, udp) = ns
            .run(|| (TcpListener::bind(addr), UdpSocket::bind(addr)))
            .expect("enter server namespace");
        let (tcp, udp) = (tcp.expect("bind tcp"), udp.expect("bind udp"));
        tcp.set_nonblocking(true).expect("nonblocking");
        udp.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_stop = stop.clone();
        let tcp_thread = std::thread::spawn(move || {
            while !tcp_stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.write_all(peer.ip().to_canonical().to_string().as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let udp_stop = stop.clone();
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(peer.ip().to_canonical().to_string().as_bytes(), peer);
                }
            }
        });
        EchoServer { stop, threads: vec![tcp_thread, udp_thread] }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects from the namespace at `netns` to `to` over TCP; the source address the server
/// saw, or `None` when nothing answered.
pub fn tcp_ask(netns: &Path, to: SocketAddr) -> Option<String> {
    let ns = NetNs::open(netns).expect("client namespace");
    let mut conn = ns.run(|| TcpStream::connect_timeout(&to, TIMEOUT)).expect("enter client namespace").ok()?;
    conn.set_read_timeout(Some(TIMEOUT)).ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// As [`tcp_ask`] over UDP.
pub fn udp_ask(netns: &Path, to: SocketAddr) -> Option<String> {
    let ns = NetNs::open(netns).expect("client namespace");
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = ns.run(|| UdpSocket::bind(any)).expect("enter client namespace").ok()?;
    socket.set_read_timeout(Some(TIMEOUT)).ok()?;
    socket.send_to(b"?", to).ok()?;
    let mut buf = [0u8; 64];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}
