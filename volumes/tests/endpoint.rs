//! The Docker volume plugin endpoint over its unix socket, with raw HTTP requests: the
//! protocol as a runtime speaks it, bad input, limits, concurrency, and a clean stop.

mod common;

use common::{wait_until, Client, TestServer};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

#[test]
fn activate_and_capabilities_answer_like_a_volume_plugin() {
    let server = TestServer::start("ep-activate");
    let mut client = server.connect();
    // podman sends Activate and List with no body at all.
    client.send_raw(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n");
    let activated = client.read_response().expect("activate reply");
    assert_eq!(activated.status, 200);
    assert_eq!(activated.body, json!({ "Implements": ["VolumeDriver"] }));
    assert_eq!(activated.header("Content-Type"), Some(CONTENT_TYPE));
    let capabilities = client.post("/VolumeDriver.Capabilities", "");
    assert_eq!(capabilities.body["Capabilities"]["Scope"], "local");
    let listed = client.post("/VolumeDriver.List", "");
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["Volumes"], json!([]));
}

#[test]
fn socket_is_private_to_root() {
    let server = TestServer::start("ep-mode");
    let meta = std::fs::metadata(&server.socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn named_volume_lifecycle_in_the_order_podman_uses() {
    let server = TestServer::start("ep-lifecycle");
    let mut client = server.connect();
    let get = client.post("/VolumeDriver.Get", r#"{"Name":"web"}"#);
    assert_eq!(get.status, 500);
    assert!(get.err().contains("no such volume: web"), "{get:?}");

    let created = client.post("/VolumeDriver.Create", r#"{"Name":"web","Opts":{"type":"named"}}"#);
    assert_eq!((created.status, created.err()), (200, ""));
    let got = client.post("/VolumeDriver.Get", r#"{"Name":"web"}"#);
    let mountpoint = server.state.join("volumes/web/_data");
    assert_eq!(got.body["Volume"]["Name"], "web");
    assert_eq!(got.body["Volume"]["Mountpoint"], mountpoint.display().to_string());
    assert_eq!(got.body["Volume"]["Status"]["Driver"], "named");
    assert!(got.body["Volume"]["CreatedAt"].as_str().is_some_and(|t| t.ends_with('Z')));

    let mounted = client.post("/VolumeDriver.Mount", r#"{"Name":"web","ID":"c1"}"#);
    assert_eq!(mounted.body["Mountpoint"], mountpoint.display().to_string());
    std::fs::write(mountpoint.join("index.html"), "hello").expect("write into the volume");
    client.post("/VolumeDriver.Mount", r#"{"Name":"web","ID":"c2"}"#);
    let path = client.post("/VolumeDriver.Path", r#"{"Name":"web"}"#);
    assert_eq!(path.body["Mountpoint"], mountpoint.display().to_string());

    let refused = client.post("/VolumeDriver.Remove", r#"{"Name":"web"}"#);
    assert_eq!(refused.status, 500);
    assert!(refused.err().contains("in use by mount ID(s) c1, c2"), "{refused:?}");
    for id in ["c1", "c2"] {
        let unmounted = client.post("/VolumeDriver.Unmount", &format!(r#"{{"Name":"web","ID":"{id}"}}"#));
        assert_eq!((unmounted.status, unmounted.err()), (200, ""));
    }
    let listed = client.post("/VolumeDriver.List", "");
    assert_eq!(listed.body["Volumes"][0]["Name"], "web");
    assert_eq!(std::fs::read_to_string(mountpoint.join("index.html")).expect("data kept"), "hello");

    let removed = client.post("/VolumeDriver.Remove", r#"{"Name":"web"}"#);
    assert_eq!((removed.status, removed.err()), (200, ""));
    assert!(!server.state.join("volumes/web").exists());
    assert_eq!(client.post("/VolumeDriver.List", "").body["Volumes"], json!([]));
}

#[test]
fn invalid_requests_get_an_error_naming_the_problem() {
    let server = TestServer::start("ep-invalid");
    let mut client = server.connect();
    let cases = [
        ("/VolumeDriver.Create", r#"{"Name":"../../etc"}"#, 400, "\"../../etc\""),
        ("/VolumeDriver.Create", r#"{"Name":"v","Opts":{"type":"zfs"}}"#, 400, "\"zfs\""),
        ("/VolumeDriver.Create", r#"{"Name":"v","Opts":{"type":"loop","size":"64M","colour":"red"}}"#, 400, "colour"),
        ("/VolumeDriver.Create", r#"{"Name":"v","Opts":{"type":"loop","size":"huge"}}"#, 400, "\"huge\""),
        ("/VolumeDriver.Create", r#"{"Name":"v","Opts":{"type":"bind","source":"/no/such/dir"}}"#, 400, "/no/such/dir"),
        ("/VolumeDriver.Create", r#"{"Name":"v""#, 400, "invalid JSON"),
        ("/VolumeDriver.Create", r#"["Name"]"#, 400, "JSON object"),
        ("/VolumeDriver.Create", r#"{"Opts":{}}"#, 400, "missing field `Name`"),
        ("/VolumeDriver.Create", "", 400, "no JSON body"),
        ("/VolumeDriver.Create", r#"{"Name":5}"#, 400, "invalid type"),
        ("/VolumeDriver.Mount", r#"{"Name":"v"}"#, 400, "missing field `ID`"),
        ("/VolumeDriver.Mount", r#"{"Name":"v","ID":""}"#, 400, "mount ID"),
        ("/VolumeDriver.Mount", r#"{"Name":"nothere","ID":"x"}"#, 500, "no such volume: nothere"),
        ("/VolumeDriver.Unmount", r#"{"Name":"nothere","ID":"x"}"#, 500, "no such volume"),
        ("/VolumeDriver.Remove", r#"{"Name":"nothere"}"#, 500, "no such volume"),
        ("/VolumeDriver.Path", r#"{"Name":""}"#, 400, "empty"),
        ("/VolumeDriver.Frobnicate", "{}", 404, "unknown endpoint /VolumeDriver.Frobnicate"),
        ("/", "", 404, "unknown endpoint"),
    ];
    for (path, body, status, expected) in cases {
        let reply = client.post(path, body);
        assert_eq!(reply.status, status, "{path} {body}: {reply:?}");
        assert!(reply.err().contains(expected), "{path} {body}: {:?} should mention {expected:?}", reply.err());
    }
    // Deep nesting must hit serde_json's recursion limit, not the handler thread's stack.
    let deep = format!(r#"{{"Name":"v","Opts":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let reply = client.post("/VolumeDriver.Create", &deep);
    assert_eq!(reply.status, 400, "{:?}", reply.err());
    assert!(reply.err().contains("recursion limit"), "{}", reply.err());
    assert!(!server.state.join("volumes/v").exists(), "no failed create left a volume");
    assert_eq!(client.post("/Plugin.Activate", "").status, 200, "the connection still serves");
}

#[test]
fn malformed_http_is_answered_and_the_server_keeps_serving() {
    let server = TestServer::start("ep-http");
    let long_header = format!("POST /Plugin.Activate HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"HELLO\r\n\r\n".to_vec(), 400),
        (b"GET /Plugin.Activate HTTP/1.1\r\n\r\n".to_vec(), 405),
        (b"POST /Plugin.Activate HTTP/3\r\n\r\n".to_vec(), 505),
        (b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: ten\r\n\r\n".to_vec(), 400),
        (b"POST /VolumeDriver.Create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(), 501),
        (b"POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: 2000000000\r\n\r\n".to_vec(), 413),
        (long_header.into_bytes(), 431),
        (b"POST /x HTTP/1.1\r\nbad header\r\n\r\n".to_vec(), 400),
        (b"POST /\xff\xfe HTTP/1.1\r\n\r\n".to_vec(), 400),
    ];
    for (request, status) in cases {
        let mut client = server.connect();
        client.send_raw(&request);
        let reply = client.read_response().expect("an answer, not a dropped connection");
        assert_eq!(reply.status, status, "{:?}", String::from_utf8_lossy(&request[..request.len().min(60)]));
        assert!(!reply.err().is_empty(), "an error message in Err");
        if status != 405 {
            assert!(client.is_closed_by_server(), "a refused connection is closed");
        }
    }
    assert_eq!(server.connect().post("/Plugin.Activate", "").status, 200);
}

#[test]
fn a_huge_body_sent_anyway_is_refused_without_reading_it() {
    let server = TestServer::start("ep-huge");
    let stream = UnixStream::connect(&server.socket).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    // The writer keeps pushing 64 MiB; the server must answer 413 and close, not buffer it.
    let pusher = std::thread::spawn(move || {
        let _ = writer.write_all(b"POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: 67108864\r\n\r\n");
        let chunk = vec![b'x'; 1 << 16];
        for _ in 0..1024 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut client = Client::from_stream(stream);
    let reply = client.read_response().expect("413 answer");
    assert_eq!(reply.status, 413);
    assert!(reply.err().contains("over the limit"), "{reply:?}");
    pusher.join().expect("pusher thread");
    assert_eq!(server.connect().post("/Plugin.Activate", "").status, 200);
}

#[test]
fn expect_continue_and_keep_alive_work_like_curl_and_go_clients() {
    let server = TestServer::start("ep-continue");
    let mut client = server.connect();
    let body = r#"{"Name":"c1"}"#;
    client.send_raw(
        format!("POST /VolumeDriver.Create HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len())
            .as_bytes(),
    );
    let interim = client.read_response().expect("100 Continue");
    assert_eq!(interim.status, 100);
    client.send_raw(body.as_bytes());
    assert_eq!(client.read_response().expect("final reply").status, 200);
    // Two requests in one write (pipelined) on the same connection.
    client.send_raw(
        b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST /VolumeDriver.Get HTTP/1.1\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"Name\":\"c1\"}",
    );
    assert_eq!(client.read_response().expect("first").status, 200);
    let second = client.read_response().expect("second");
    assert_eq!(second.body["Volume"]["Name"], "c1");
    assert_eq!(second.header("Connection"), Some("close"));
    assert!(client.is_closed_by_server());
}

#[test]
fn a_silent_client_is_timed_out() {
    let server = TestServer::start_with("ep-slow", |options| options.request_timeout = Duration::from_millis(200));
    let mut client = server.connect();
    client.send_raw(b"POST /Plugin.Activate HTTP/1.1\r\nContent-");
    let reply = client.read_response().expect("408 after the idle timeout");
    assert_eq!(reply.status, 408);
    assert!(client.is_closed_by_server());
}

#[test]
fn a_client_trickling_its_head_is_cut_off_at_the_request_timeout() {
    let server = TestServer::start_with("ep-trickle", |options| options.request_timeout = Duration::from_millis(300));
    let stream = UnixStream::connect(&server.socket).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let started = std::time::Instant::now();
    // A header every 50 ms: each read is quick, the request never ends.
    std::thread::spawn(move || {
        let _ = writer.write_all(b"POST /Plugin.Activate HTTP/1.1\r\n");
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(50));
            if writer.write_all(b"X-Slow: 1\r\n").is_err() {
                break;
            }
        }
    });
    let mut client = Client::from_stream(stream);
    let reply = client.read_response().expect("408 at the request timeout");
    assert_eq!(reply.status, 408);
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    assert!(client.is_closed_by_server());
}

#[test]
fn a_body_that_stops_coming_is_answered_408() {
    let server = TestServer::start_with("ep-body-stall", |options| options.request_timeout = Duration::from_millis(200));
    let mut client = server.connect();
    client.send_raw(b"POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"Name\":");
    let reply = client.read_response().expect("an answer");
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(reply.err().contains("timed out"), "{reply:?}");
}

#[test]
fn connections_over_the_cap_are_turned_away_then_served_again() {
    let server = TestServer::start_with("ep-cap", |options| options.max_connections = 4);
    let mut held: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for client in held.iter_mut() {
        assert_eq!(client.post("/Plugin.Activate", "").status, 200);
    }
    let mut extra = server.connect();
    let turned_away = extra.read_response().expect("503 for the fifth connection");
    assert_eq!(turned_away.status, 503);
    held.clear();
    wait_until("a free connection slot", Duration::from_secs(10), || {
        let mut client = server.connect();
        client.send_raw(b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        client.read_response().is_some_and(|reply| reply.status == 200)
    });
}

#[test]
fn many_concurrent_clients_are_all_served() {
    let server = TestServer::start("ep-concurrent");
    server.connect().post("/VolumeDriver.Create", r#"{"Name":"shared"}"#);
    let clients: Vec<_> = (0..24)
        .map(|n| {
            let socket = server.socket.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket);
                for round in 0..15 {
                    let name = format!("vol-{n}-{round}");
                    let id = format!("ctr-{n}-{round}");
                    let steps = [
                        ("/VolumeDriver.Create", format!(r#"{{"Name":"{name}"}}"#)),
                        ("/VolumeDriver.Mount", format!(r#"{{"Name":"{name}","ID":"{id}"}}"#)),
                        ("/VolumeDriver.Mount", format!(r#"{{"Name":"shared","ID":"{id}"}}"#)),
                        ("/VolumeDriver.Get", format!(r#"{{"Name":"{name}"}}"#)),
                        ("/VolumeDriver.Unmount", format!(r#"{{"Name":"{name}","ID":"{id}"}}"#)),
                        ("/VolumeDriver.Remove", format!(r#"{{"Name":"{name}"}}"#)),
                        ("/VolumeDriver.List", String::new()),
                    ];
                    for (path, body) in steps {
                        let reply = client.post(path, &body);
                        assert_eq!(reply.status, 200, "{path} {body}: {reply:?}");
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let mut client = server.connect();
    let listed = client.post("/VolumeDriver.List", "");
    assert_eq!(listed.body["Volumes"].as_array().map(Vec::len), Some(1), "only the shared volume is left");
    let shared = client.post("/VolumeDriver.Get", r#"{"Name":"shared"}"#);
    assert_eq!(shared.body["Volume"]["Status"]["MountIDs"].as_array().map(Vec::len), Some(24 * 15));
}

#[test]
fn stop_closes_idle_connections_and_removes_the_socket() {
    let mut server = TestServer::start("ep-stop");
    let mut idle = server.connect();
    assert_eq!(idle.post("/Plugin.Activate", "").status, 200);
    server.stop();
    assert!(idle.is_closed_by_server(), "idle keep-alive connection closed on stop");
    assert!(!server.socket.exists(), "socket removed");
}

#[test]
fn stop_works_even_after_the_socket_file_was_deleted() {
    let mut server = TestServer::start("ep-stop-deleted");
    std::fs::remove_file(&server.socket).expect("delete the socket file");
    server.stop(); // returns only once the server's run() has returned
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_one_is_not() {
    let server = TestServer::start("ep-stale");
    let store = berth_volumes::VolumeStore::open(&server.dir.join("other-state")).expect("store");
    let options = berth_volumes::plugin::ServerOptions::new(&server.socket);
    let refused = berth_volumes::plugin::Server::bind(store, options).err().expect("live socket refused");
    assert!(refused.to_string().contains("another server is listening"), "{refused}");

    let stale = server.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("make a stale socket"));
    let store = berth_volumes::VolumeStore::open(&server.dir.join("third-state")).expect("store");
    let replacement = berth_volumes::plugin::Server::bind(store, berth_volumes::plugin::ServerOptions::new(&stale))
        .expect("stale socket replaced");
    drop(replacement);
}
