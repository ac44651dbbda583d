//! A small synchronous OVSDB client (RFC 7047): JSON-RPC 1.0 over ovsdb-server's unix
//! socket, one request at a time.
//!
//! Messages are JSON objects back to back on the stream, without delimiters. The server
//! may send requests of its own between our request and its answer: `echo` (an inactivity
//! probe, answered with its params) and notifications (`update`, `locked` ...), which this
//! client never asks for and skips. Every call has a deadline; a server that does not
//! answer by then is an error, never a hang.
//!
//! Also here: the OVSDB JSON encodings of atoms, sets and maps (RFC 7047 section 5.1), to
//! build operations and read rows.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What went wrong talking to ovsdb-server; the system's or the decoder's error, if any, is
/// the `source`, not part of the message, so the chain of causes shows each once.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("{endpoint}: only unix sockets are supported (\"unix:/path\" or a plain path)")]
    Endpoint { endpoint: String },
    #[error("cannot connect to ovsdb-server at {path} (is Open vSwitch running?)")]
    Connect { path: String, source: std::io::Error },
    #[error("talking to ovsdb-server")]
    Io(#[from] std::io::Error),
    /// Not JSON, or JSON that does not encode or decode as a message.
    #[error("malformed JSON to or from ovsdb-server")]
    Json(#[source] serde_json::Error),
    #[error("ovsdb-server did not answer {method} within {after:?}")]
    Timeout { method: String, after: Duration },
    #[error("ovsdb-server closed the connection")]
    Closed,
    #[error("malformed message from ovsdb-server: {0}")]
    Protocol(String),
    /// The JSON-RPC `error` member of an answer: the request itself was refused.
    #[error("ovsdb-server refused {method}: {error}")]
    Rpc { method: String, error: Value },
    /// An operation of a transaction failed; nothing of the transaction was committed.
    #[error("operation {index} ({op}) failed: {error}{}", details_suffix(.details))]
    Operation { index: usize, op: String, error: String, details: String },
    /// Every operation succeeded but the commit did not (a constraint or referential
    /// integrity violation); nothing was committed.
    #[error("transaction not committed: {error}{}", details_suffix(.details))]
    Commit { error: String, details: String },
    /// The Open_vSwitch table has no row: nothing initialised the database.
    #[error("the Open_vSwitch table is empty: the database is not initialised (ovs-vsctl init)")]
    NotInitialised,
    #[error("there is no Open vSwitch bridge {bridge}")]
    NoBridge { bridge: String },
    /// ovs-vswitchd did not set cur_cfg to the change's next_cfg in time.
    #[error("ovs-vswitchd has not applied configuration {cfg} within {after:?} (is ovs-vswitchd running?)")]
    NotApplied { cfg: i64, after: Duration },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

impl OvsdbError {
    /// The RFC's error string of a failed operation or commit ("constraint violation",
    /// "timed out", "referential integrity violation" ...).
    pub fn ovsdb_error(&self) -> Option<&str> {
        match self {
            OvsdbError::Operation { error, .. } | OvsdbError::Commit { error, .. } => Some(error),
            _ => None,
        }
    }
}

pub type OvsdbResult<T> = Result<T, OvsdbError>;

/// `unix:/path` (ovs-vsctl's `--db` syntax) or a plain path, to the socket's path.
pub fn socket_path(endpoint: &str) -> OvsdbResult<PathBuf> {
    let path = endpoint.strip_prefix("unix:").unwrap_or(endpoint);
    if path.is_empty() || (!path.starts_with('/') && endpoint.contains(':')) {
        return Err(OvsdbError::Endpoint { endpoint: endpoint.to_string() });
    }
    Ok(PathBuf::from(path))
}

pub struct Client {
    stream: UnixStream,
    /// Bytes received and not yet parsed into a message.
    buf: Vec<u8>,
    next_id: u64,
}

impl Client {
    /// Connects to the server's unix socket (`unix:/path` or `/path`).
    pub fn connect(endpoint: &str) -> OvsdbResult<Client> {
        let path = socket_path(endpoint)?;
        let stream =
            UnixStream::connect(&path).map_err(|source| OvsdbError::Connect { path: path.display().to_string(), source })?;
        Ok(Client { stream, buf: Vec::with_capacity(4096), next_id: 1 })
    }

    /// `transact` on `db`: runs `ops` as one transaction and returns one result per
    /// operation. A failed operation or commit is an error (and nothing was committed).
    pub fn transact(&mut self, db: &str, ops: &[Value], timeout: Duration) -> OvsdbResult<Vec<Value>> {
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(Value::String(db.to_string()));
        params.extend(ops.iter().cloned());
        let result = self.call("transact", Value::Array(params), timeout)?;
        transaction_results(ops, result)
    }

    /// One JSON-RPC request and its answer's `result`.
    pub fn call(&mut self, method: &str, params: Value, timeout: Duration) -> OvsdbResult<Value> {
        let deadline = Instant::now() + timeout;
        let id = self.next_id;
        self.next_id += 1;
        self.send(&request(method, params, id))?;
        loop {
            let msg = self.receive(method, deadline, timeout)?;
            match classify(&msg) {
                Incoming::Echo(id) => {
                    let params = msg.get("params").cloned().unwrap_or(Value::Array(vec![]));
                    self.send(&json!({"id": id, "result": params, "error": null}))?;
                }
                Incoming::Notification => {}
                Incoming::Response(rid) if rid == id => return response_result(method, msg),
                // An answer to an earlier request that timed out on our side.
                Incoming::Response(_) => {}
            }
        }
    }

    fn send(&mut self, msg: &Value) -> OvsdbResult<()> {
        let bytes = serde_json::to_vec(msg).map_err(OvsdbError::Json)?;
        self.stream.write_all(&bytes)?;
        Ok(())
    }

    /// The next whole message, reading as much as it takes before `deadline`.
    fn receive(&mut self, method: &str, deadline: Instant, timeout: Duration) -> OvsdbResult<Value> {
        loop {
            if let Some(msg) = take_message(&mut self.buf)? {
                return Ok(msg);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OvsdbError::Timeout { method: method.to_string(), after: timeout });
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(OvsdbError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(OvsdbError::Timeout { method: method.to_string(), after: timeout })
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

pub fn request(method: &str, params: Value, id: u64) -> Value {
    json!({"method": method, "params": params, "id": id})
}

#[derive(Debug, PartialEq)]
enum Incoming {
    /// A request from the server that must be answered: `echo`, with its id.
    Echo(Value),
    /// A request or notification this client does not answer.
    Notification,
    /// An answer to our request with this id.
    Response(u64),
}

fn classify(msg: &Value) -> Incoming {
    match msg.get("method").and_then(Value::as_str) {
        Some("echo") => match msg.get("id") {
            Some(id) if !id.is_null() => Incoming::Echo(id.clone()),
            _ => Incoming::Notification,
        },
        Some(_) => Incoming::Notification,
        None => match msg.get("id").and_then(Value::as_u64) {
            Some(id) => Incoming::Response(id),
            None => Incoming::Notification,
        },
    }
}

fn response_result(method: &str, mut msg: Value) -> OvsdbResult<Value> {
    match msg.get("error") {
        None | Some(Value::Null) => Ok(msg.get_mut("result").map(Value::take).unwrap_or(Value::Null)),
        Some(error) => Err(OvsdbError::Rpc { method: method.to_string(), error: error.clone() }),
    }
}

/// Parses one message off the front of `buf`; `None` until a whole one has arrived.
fn take_message(buf: &mut Vec<u8>) -> OvsdbResult<Option<Value>> {
    let start = buf.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(buf.len());
    if start == buf.len() {
        buf.clear();
        return Ok(None);
    }
    let mut stream = serde_json::Deserializer::from_slice(&buf[start..]).into_iter::<Value>();
    match stream.next() {
        Some(Ok(msg)) => {
            let end = start + stream.byte_offset();
            buf.drain(..end);
            if !msg.is_object() {
                return Err(OvsdbError::Protocol(format!("expected a JSON object, got {msg}")));
            }
            Ok(Some(msg))
        }
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(OvsdbError::Json(e)),
        None => Ok(None),
    }
}

/// A `transact` result checked against its operations (RFC 7047 section 4.1.3): one
/// result per operation; the first failed one carries `error` (those after it are null);
/// an extra element after them all is a failed commit.
pub fn transaction_results(ops: &[Value], result: Value) -> OvsdbResult<Vec<Value>> {
    let Value::Array(results) = result else {
        return Err(OvsdbError::Protocol(format!("transact answered {result}, not an array")));
    };
    for (index, r) in results.iter().enumerate() {
        let Some(error) = r.get("error").filter(|e| !e.is_null()) else { continue };
        let error = error.as_str().map(str::to_string).unwrap_or_else(|| error.to_string());
        let details = r.get("details").and_then(Value::as_str).unwrap_or_default().to_string();
        return Err(match ops.get(index) {
            Some(op) => {
                let name = op.get("op").and_then(Value::as_str).unwrap_or("?");
                let table = op.get("table").and_then(Value::as_str).map(|t| format!(" {t}")).unwrap_or_default();
                OvsdbError::Operation { index, op: format!("{name}{table}"), error, details }
            }
            None => OvsdbError::Commit { error, details },
        });
    }
    if results.len() < ops.len() {
        return Err(OvsdbError::Protocol(format!("{} results for {} operations", results.len(), ops.len())));
    }
    Ok(results.into_iter().take(ops.len()).collect())
}

// ---- OVSDB's JSON encodings (RFC 7047 section 5.1) ----

/// `["uuid", "..."]`
pub fn uuid(u: &str) -> Value {
    json!(["uuid", u])
}

/// `["named-uuid", "..."]`: a row inserted earlier in the same transaction.
pub fn named_uuid(name: &str) -> Value {
    json!(["named-uuid", name])
}

/// `["set", [...]]`
pub fn set(atoms: impl IntoIterator<Item = Value>) -> Value {
    json!(["set", atoms.into_iter().collect::<Vec<_>>()])
}

/// `["map", [[k, v], ...]]`
pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    let pairs: Vec<Value> = pairs.into_iter().map(|(k, v)| json!([k, v])).collect();
    json!(["map", pairs])
}

/// `[column, function, value]`
pub fn condition(column: &str, function: &str, value: Value) -> Value {
    json!([column, function, value])
}

/// The atoms of a set column: a set is `["set", [...]]`, except that a set of exactly one
/// element may be written as that element alone.
pub fn set_atoms(value: &Value) -> Vec<&Value> {
    match value.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(atoms)]) if tag == "set" => atoms.iter().collect(),
        _ => vec![value],
    }
}

/// The UUID string of `["uuid", "..."]`.
pub fn uuid_of(value: &Value) -> Option<&str> {
    match value.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(u)]) if tag == "uuid" => Some(u),
        _ => None,
    }
}

/// A `["map", [[k, v], ...]]` of strings.
pub fn string_map(value: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some([tag, Value::Array(pairs)]) = value.as_array().map(Vec::as_slice) {
        if tag == "map" {
            for pair in pairs {
                if let Some([Value::String(k), Value::String(v)]) = pair.as_array().map(Vec::as_slice) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

/// The rows of a `select` result.
pub fn rows(result: &Value) -> Vec<&Map<String, Value>> {
    result.get("rows").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_object).collect()).unwrap_or_default()
}

/// The `count` of an `update`, `mutate` or `delete` result.
pub fn count(result: &Value) -> u64 {
    result.get("count").and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn endpoints() {
        assert_eq!(socket_path("unix:/run/openvswitch/db.sock").unwrap(), PathBuf::from("/run/openvswitch/db.sock"));
        assert_eq!(socket_path("/tmp/x/db.sock").unwrap(), PathBuf::from("/tmp/x/db.sock"));
        assert!(socket_path("tcp:127.0.0.1:6640").is_err());
        assert!(socket_path("unix:").is_err());
    }

    #[test]
    fn messages_are_split_off_a_stream() {
        let mut buf = br#" {"id":1,"result":[],"error":null}{"method":"echo","params":[],"id":"echo"}{"id":2,"res"#.to_vec();
        assert_eq!(take_message(&mut buf).unwrap().unwrap()["id"], 1);
        let echo = take_message(&mut buf).unwrap().unwrap();
        assert_eq!(classify(&echo), Incoming::Echo(json!("echo")));
        assert!(take_message(&mut buf).unwrap().is_none(), "half a message waits for the rest");
        buf.extend_from_slice(br#"ult":[{"count":1}],"error":null}"#);
        let msg = take_message(&mut buf).unwrap().unwrap();
        assert_eq!(classify(&msg), Incoming::Response(2));
        assert!(buf.is_empty());
        assert!(take_message(&mut b"[1,2]".to_vec()).is_err());
        assert!(take_message(&mut b"{\"id\":}".to_vec()).is_err());
    }

    #[test]
    fn notifications_are_not_answers() {
        assert_eq!(classify(&json!({"method": "update", "params": [null, {}], "id": null})), Incoming::Notification);
        assert_eq!(classify(&json!({"method": "echo", "params": [], "id": null})), Incoming::Notification);
    }

    #[test]
    fn failed_operations_and_commits_are_errors() {
        let ops = [json!({"op": "insert", "table": "Port"}), json!({"op": "mutate", "table": "Bridge"})];
        let ok = transaction_results(&ops, json!([{"uuid": ["uuid", "u1"]}, {"count": 1}])).unwrap();
        assert_eq!(count(&ok[1]), 1);
        let err =
            transaction_results(&ops, json!([{"uuid": ["uuid", "u1"]}, {"error": "timed out", "details": "x"}])).unwrap_err();
        assert!(matches!(&err, OvsdbError::Operation { index: 1, op, .. } if op == "mutate Bridge"), "{err}");
        assert_eq!(err.ovsdb_error(), Some("timed out"));
        let err = transaction_results(
            &ops,
            json!([{"uuid": ["uuid", "u1"]}, {"count": 1}, {"error": "constraint violation", "details": "duplicate name"}]),
        )
        .unwrap_err();
        assert!(matches!(err, OvsdbError::Commit { .. }), "{err}");
        assert!(err.to_string().contains("duplicate name"));
        assert!(transaction_results(&ops, json!([{"count": 1}])).is_err(), "too few results");
    }

    #[test]
    fn values_decode_as_the_rfc_writes_them() {
        assert_eq!(set_atoms(&json!(100)), vec![&json!(100)]);
        assert_eq!(set_atoms(&json!(["set", [100, 200]])), vec![&json!(100), &json!(200)]);
        assert!(set_atoms(&json!(["set", []])).is_empty());
        assert_eq!(uuid_of(&json!(["uuid", "abc"])), Some("abc"));
        assert_eq!(uuid_of(&json!(["named-uuid", "abc"])), None);
        let m = string_map(&json!(["map", [["owner", "berth-ovs"], ["ifname", "eth0"]]]));
        assert_eq!(m.get("owner").map(String::as_str), Some("berth-ovs"));
        assert_eq!(map([("a", "b")]), json!(["map", [["a", "b"]]]));
    }

    /// A fake ovsdb-server on a socket pair: it probes with `echo` before answering, and
    /// splits its answer over two writes.
    #[test]
    fn client_answers_echo_and_matches_ids() {
        let dir = std::env::temp_dir().join(format!("berth-ovsdb-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("db.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let next = |conn: &mut UnixStream, buf: &mut Vec<u8>| loop {
                if let Some(m) = take_message(buf).unwrap() {
                    return m;
                }
                let mut chunk = [0u8; 1024];
                let n = conn.read(&mut chunk).unwrap();
                assert!(n > 0, "client hung up");
                buf.extend_from_slice(&chunk[..n]);
            };
            let req = next(&mut conn, &mut buf);
            assert_eq!(req["method"], "transact");
            assert_eq!(req["params"][0], "Open_vSwitch");
            conn.write_all(br#"{"method":"echo","params":["probe"],"id":"echo"}"#).unwrap();
            let echo = next(&mut conn, &mut buf);
            assert_eq!(echo, json!({"id": "echo", "result": ["probe"], "error": null}));
            // A stale answer first, then ours in two pieces.
            conn.write_all(br#"{"id":999,"result":[],"error":null}"#).unwrap();
            let answer = format!(r#"{{"id":{},"result":[{{"rows":[{{"next_cfg":7}}]}}],"error":null}}"#, req["id"]);
            let (a, b) = answer.split_at(10);
            conn.write_all(a.as_bytes()).unwrap();
            conn.flush().unwrap();
            conn.write_all(b.as_bytes()).unwrap();
            let req = next(&mut conn, &mut buf);
            let refusal = format!(r#"{{"id":{},"result":null,"error":"unknown method"}}"#, req["id"]);
            conn.write_all(refusal.as_bytes()).unwrap();
            // Then silence until the client hangs up: the third call must time out.
            let _ = next(&mut conn, &mut buf);
            let mut rest = [0u8; 1024];
            while conn.read(&mut rest).is_ok_and(|n| n > 0) {}
        });
        let mut client = Client::connect(&format!("unix:{}", sock.display())).unwrap();
        let ops = [json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]})];
        let results = client.transact("Open_vSwitch", &ops, Duration::from_secs(5)).unwrap();
        assert_eq!(rows(&results[0])[0]["next_cfg"], 7);
        let err = client.call("frob", json!([]), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, OvsdbError::Rpc { .. }), "{err}");
        let started = Instant::now();
        let err = client.call("list_dbs", json!([]), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, OvsdbError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(client);
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
