//! TCP between two network namespaces: throughput, as a user would measure shaping (one
//! stream, a thread writing as fast as it can, the receiver counting bytes over a window after
//! a warm-up, which leaves out a token bucket's initial burst and TCP's slow start), and a
//! whole transfer.

use berth_netns::NetNs;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARM_UP: Duration = Duration::from_millis(500);
/// A stalled stream fails the measurement instead of hanging the test.
const STALL: Duration = Duration::from_secs(5);

/// Bits per second from a sender in `from` to a receiver listening on `to_addr` in `to`, over
/// `window` after the warm-up.
pub fn tcp_bits_per_sec(from: &NetNs, to: &NetNs, to_addr: IpAddr, window: Duration) -> std::io::Result<f64> {
    let listener = to.run(|| TcpListener::bind(SocketAddr::new(to_addr, 0))).map_err(std::io::Error::other)??;
    let target = listener.local_addr()?;
    // The connection completes in the listener's backlog before accept.
    let sender = from.run(|| TcpStream::connect_timeout(&target, STALL)).map_err(std::io::Error::other)??;
    let (mut receiver, _) = listener.accept()?;
    receiver.set_read_timeout(Some(STALL))?;
    sender.set_write_timeout(Some(STALL))?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut sender = sender.try_clone()?;
        std::thread::spawn(move || {
            let chunk = vec![0x5au8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if sender.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let measured = count(&mut receiver, window);
    stop.store(true, Ordering::Relaxed);
    let _ = sender.shutdown(Shutdown::Both);
    let _ = receiver.shutdown(Shutdown::Both);
    let _ = writer.join();
    measured
}

/// Sends `len` bytes over one TCP connection from the namespace at `from` to a listener on
/// `to_addr` in the namespace at `to`, and returns how many arrived before the sender closed
/// (all of them, when the path carries full-size segments or discovers its MTU).
pub fn tcp_transfer(from: &Path, to: &Path, to_addr: IpAddr, len: usize) -> std::io::Result<usize> {
    let (from, to) = (NetNs::open(from).map_err(std::io::Error::other)?, NetNs::open(to).map_err(std::io::Error::other)?);
    let listener = to.run(|| TcpListener::bind(SocketAddr::new(to_addr, 0))).map_err(std::io::Error::other)??;
    let target = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(STALL))?;
        let mut got = Vec::new();
        stream.read_to_end(&mut got)?;
        Ok(got.len())
    });
    let mut sender = from.run(|| TcpStream::connect_timeout(&target, STALL)).map_err(std::io::Error::other)??;
    sender.set_write_timeout(Some(STALL))?;
    sender.write_all(&vec![0x5a; len])?;
    drop(sender);
    receiver.join().map_err(|_| std::io::Error::other("the receiving thread panicked"))?
}

fn count(receiver: &mut TcpStream, window: Duration) -> std::io::Result<f64> {
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    while start.elapsed() < WARM_UP {
        read_some(receiver, &mut buf)?;
    }
    let (begin, mut bytes) = (Instant::now(), 0u64);
    while begin.elapsed() < window {
        bytes += read_some(receiver, &mut buf)? as u64;
    }
    Ok(bytes as f64 * 8.0 / begin.elapsed().as_secs_f64())
}

fn read_some(receiver: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    match receiver.read(buf)? {
        0 => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the sender closed the stream")),
        n => Ok(n),
    }
}
