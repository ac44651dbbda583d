//! The endpoint under load, as a `berth-volume serve` process: stalled connections (silent,
//! half a head, a body promised and never sent, one header every 300 ms) stay open while
//! 256 clients run a runtime's whole sequence on named volumes at once. Every request is
//! answered correctly within a generous bound (none waits behind a stalled client), bad
//! requests get the protocol's JSON `Err`, stalled connections are answered 408 and closed
//! once the request timeout passes, and the server's threads and file descriptors come
//! back to what they were. Needs no root: named volumes in a temp state directory.

mod common;

use common::{wait_until, Client, Response, ServeProcess, TempDir};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const CLIENTS: usize = 256;
const SILENT: usize = 48;
const HALF_HEADS: usize = 16;
/// `serve --request-timeout`: short, so that the test sees stalled clients dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Far above any real latency here; a client queued behind a stalled one would wait for
/// the request timeout at least, and for ever without one.
const LATENCY_BOUND: Duration = Duration::from_secs(10);

/// Threads and open file descriptors of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footprint {
    threads: usize,
    fds: usize,
}

impl Footprint {
    fn of(pid: u32) -> Footprint {
        let count = |what: &str| std::fs::read_dir(format!("/proc/{pid}/{what}")).map(|d| d.count()).unwrap_or(0);
        Footprint { threads: count("task"), fds: count("fd") }
    }

    /// The server's footprint with no connection open (the start-up probe's included): no
    /// thread serving a connection (`berth-conn-N`), and the same count twice in a row.
    fn idle(pid: u32) -> Footprint {
        let serving = || {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.filter_map(Result::ok).collect::<Vec<_>>());
            let is_connection = |task: &std::fs::DirEntry| {
                std::fs::read_to_string(task.path().join("comm")).is_ok_and(|name| name.starts_with("berth-conn"))
            };
            tasks.unwrap_or_default().iter().filter(|task| is_connection(task)).count()
        };
        let mut last = Footprint::of(pid);
        wait_until("the server without connections", Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(100));
            let now = Footprint::of(pid);
            let settled = serving() == 0 && now == last;
            last = now;
            settled
        });
        last
    }
}

/// One request of a client's sequence, timed.
fn timed_post(client: &mut Client, path: &str, body: &Value) -> (Response, Duration) {
    let started = Instant::now();
    let reply = client.post(path, &body.to_string());
    (reply, started.elapsed())
}

/// What a runtime sends for one container's volume, checking every answer; returns the
/// latencies. Odd clients open a connection per request, even ones keep theirs alive.
fn runtime_sequence(socket: &Path, n: usize) -> Vec<Duration> {
    let (volume, holder) = (format!("load-{n}"), format!("ctr-{n}"));
    let name = json!({ "Name": volume });
    let mount = json!({ "Name": volume, "ID": holder });
    let steps: [(&str, Value); 11] = [
        ("/Plugin.Activate", json!({})),
        ("/VolumeDriver.Capabilities", json!({})),
        ("/VolumeDriver.Create", json!({ "Name": volume, "Opts": { "type": "named" } })),
        ("/VolumeDriver.Get", name.clone()),
        ("/VolumeDriver.List", json!({})),
        ("/VolumeDriver.Path", name.clone()),
        ("/VolumeDriver.Mount", mount.clone()),
        ("/VolumeDriver.Path", name.clone()),
        ("/VolumeDriver.Unmount", mount),
        ("/VolumeDriver.Remove", name.clone()),
        ("/VolumeDriver.Get", name),
    ];
    let mut kept = Client::connect(socket);
    let mut latencies = Vec::new();
    for (step, (path, body)) in steps.iter().enumerate() {
        let (reply, took) = if n.is_multiple_of(2) {
            timed_post(&mut kept, path, body)
        } else {
            timed_post(&mut Client::connect(socket), path, body)
        };
        latencies.push(took);
        check_reply(step, path, &reply, &volume);
    }
    latencies
}

fn check_reply(step: usize, path: &str, reply: &Response, volume: &str) {
    let what = format!("{volume} step {step} {path}: {reply:?}");
    match (step, path) {
        (10, _) => {
            assert_eq!(reply.status, 500, "{what}");
            assert!(reply.err().contains("no such volume"), "{what}");
        }
        (_, "/Plugin.Activate") => assert_eq!(reply.body, json!({ "Implements": ["VolumeDriver"] }), "{what}"),
        (_, "/VolumeDriver.Capabilities") => assert_eq!(reply.body["Capabilities"]["Scope"], "local", "{what}"),
        (_, "/VolumeDriver.Get") => assert_eq!(reply.body["Volume"]["Name"], volume, "{what}"),
        (_, "/VolumeDriver.List") => {
            let names: Vec<&str> =
                reply.body["Volumes"].as_array().expect(&what).iter().filter_map(|v| v["Name"].as_str()).collect();
            assert!(names.contains(&volume), "{what}");
        }
        (_, "/VolumeDriver.Path" | "/VolumeDriver.Mount") => {
            assert!(reply.body["Mountpoint"].as_str().is_some_and(|m| m.ends_with(&format!("{volume}/_data"))), "{what}")
        }
        _ => assert_eq!((reply.status, reply.err()), (200, ""), "{what}"),
    }
    if step != 10 {
        assert_eq!(reply.status, 200, "{what}");
    }
}

/// Requests the endpoint must refuse, each with the status it answers and a JSON `Err`.
fn bad_requests() -> Vec<(&'static str, Vec<u8>, u16)> {
    let over_limit = format!("POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: {}\r\n\r\n", (1 << 20) + 1);
    vec![
        ("a body over the limit", over_limit.into_bytes(), 413),
        ("a malformed request line", b"POST\r\n\r\n".to_vec(), 400),
        ("a malformed header", b"POST /Plugin.Activate HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400),
        ("malformed JSON", b"POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"Name\":}".to_vec(), 400),
        ("a JSON array", b"POST /VolumeDriver.Mount HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]".to_vec(), 400),
        ("an unknown endpoint", b"POST /VolumeDriver.Frob HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(), 404),
    ]
}

fn send_bad_requests(socket: &Path) {
    for (what, request, status) in bad_requests() {
        let mut client = Client::connect(socket);
        client.send_raw(&request);
        let reply = client.read_response().unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        assert!(!reply.err().is_empty(), "{what}: the answer is the protocol's JSON Err: {reply:?}");
    }
}

/// Connections that stall: silent ones, half heads, a body announced and not sent.
fn open_stalled(socket: &Path) -> Vec<UnixStream> {
    let mut stalled = Vec::new();
    for n in 0..SILENT + HALF_HEADS + 1 {
        let mut stream = UnixStream::connect(socket).expect("connect a stalled client");
        let sent: &[u8] = match n {
            n if n < SILENT => b"",
            n if n < SILENT + HALF_HEADS => b"POST /VolumeDriver.Create HTTP/1.1\r\nContent-Le",
            _ => b"POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n{\"Name\":",
        };
        stream.write_all(sent).expect("send part of a request");
        stalled.push(stream);
    }
    stalled
}

/// A client sending a header every 300 ms, never finishing its head; returns how long the
/// server let it go on before answering.
fn trickle(socket: PathBuf) -> std::thread::JoinHandle<(Option<Response>, Duration)> {
    std::thread::spawn(move || {
        let stream = UnixStream::connect(&socket).expect("connect the trickling client");
        let started = Instant::now();
        let mut writer = stream.try_clone().expect("clone");
        let mut client = Client::from_stream(stream);
        let _ = writer.write_all(b"POST /Plugin.Activate HTTP/1.1\r\n");
        while started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(300));
            if writer.write_all(b"X-Slow: 1\r\n").is_err() {
                break;
            }
        }
        (client.read_response(), started.elapsed())
    })
}

/// A connection that sent a head with a huge Content-Length is answered 413 at once,
/// before any body, even though it then sends nothing.
fn huge_length_is_refused_at_once(socket: &Path) {
    let mut client = Client::connect(socket);
    let started = Instant::now();
    client.send_raw(b"POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: 1099511627776\r\n\r\n");
    let reply = client.read_response().expect("an answer to a huge Content-Length");
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(reply.err().contains("over the limit"), "{reply:?}");
    assert!(started.elapsed() < REQUEST_TIMEOUT, "refused without waiting for the body");
}

#[test]
fn stalled_clients_never_delay_256_concurrent_clients_and_are_dropped() {
    let dir = TempDir::new("ep-load");
    let socket = dir.join("plugin.sock");
    let timeout = REQUEST_TIMEOUT.as_secs().to_string();
    let server = ServeProcess::start_with(
        &socket,
        &dir.join("state"),
        &dir.join("serve.log"),
        &["--quiet", "--request-timeout", &timeout],
    );
    let baseline = Footprint::idle(server.pid());

    let stalled = open_stalled(&socket);
    let trickler = trickle(socket.clone());
    huge_length_is_refused_at_once(&socket);
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (socket, start) = (socket.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                runtime_sequence(&socket, n)
            })
        })
        .collect();
    let started = Instant::now();
    start.wait();
    send_bad_requests(&socket);
    let mut latencies: Vec<Duration> = clients.into_iter().flat_map(|c| c.join().expect("a client's sequence")).collect();
    let burst = started.elapsed();
    let peak = Footprint::of(server.pid());
    latencies.sort();
    let max = latencies.last().copied().unwrap_or_default();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "{} requests from {CLIENTS} clients beside {} stalled connections in {:.2}s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         server before {baseline:?}, after the burst {peak:?}",
        latencies.len(),
        stalled.len() + 1,
        burst.as_secs_f64(),
        latencies[latencies.len() / 2].as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    assert!(max < LATENCY_BOUND, "a request waited {max:?}: behind a stalled client?");

    // Stalled connections are answered 408 with a JSON Err once the request timeout has
    // passed, and closed; the one trickling headers too.
    for stream in stalled {
        let mut client = Client::from_stream(stream);
        let reply = client.read_response().expect("a 408 for a stalled connection");
        assert_eq!(reply.status, 408, "{reply:?}");
        assert!(reply.err().contains("timed out"), "{reply:?}");
        assert!(client.is_closed_by_server());
    }
    let (reply, after) = trickler.join().expect("the trickling client");
    let reply = reply.expect("an answer for the trickling client");
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(after < REQUEST_TIMEOUT + Duration::from_secs(3), "headers trickling in kept a connection for {after:?}");

    wait_until("the server's threads and descriptors back to their baseline", Duration::from_secs(15), || {
        Footprint::of(server.pid()) == baseline
    });
    let log = server.log_text();
    assert!(!log.contains("accepting a connection"), "{log}");
}
