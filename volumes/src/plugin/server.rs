//! The endpoint: HTTP/1.1 on a unix socket, one thread per connection (a runtime sends a
//! handful of requests per container, so no async runtime), a cap on connections, time
//! limits on slow clients, and a clean stop that lets requests under way finish.
//!
//! A stalled client holds its own thread and nobody else's: each request must arrive whole
//! within the request timeout (a deadline, not a limit per read, so that a client sending a
//! byte now and then is dropped too), and the cap on connections leaves room for many
//! stalled ones beside a crowd of real clients.

use super::api::{self, Reply};
use super::http::{self, ReadError};
use crate::error::{VolumeError, VolumeResult};
use crate::logging::log;
use crate::store::VolumeStore;
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/berth.sock";

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub socket: PathBuf,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send a whole request, from connecting or from the
    /// previous reply: an idle or slow connection is answered 408 and closed after it.
    pub request_timeout: Duration,
    /// How long a stop waits for requests under way.
    pub drain_timeout: Duration,
    pub request_log: RequestLog,
}

/// Which requests get a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestLog {
    All,
    Failures,
    Off,
}

impl ServerOptions {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ServerOptions {
            socket: socket.into(),
            // Two file descriptors and a thread (256 KiB of stack, touched only as used) each.
            max_connections: 1024,
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            request_log: RequestLog::All,
        }
    }
}

/// Connections being served, so that a stop can wake idle ones and wait for busy ones.
#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, UnixStream>>,
    all_closed: Condvar,
    next_id: AtomicU64,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, UnixStream>> {
        // A panicking handler cannot leave the map half-updated: recover it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a connection from the open set when its handler ends, however it ends.
struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.remove(&self.id);
        if open.is_empty() {
            self.connections.all_closed.notify_all();
        }
    }
}

/// Stops a running [`Server`] from another thread (a signal handler thread, a test).
#[derive(Clone)]
pub struct StopHandle {
    stopping: Arc<AtomicBool>,
    listener: Arc<UnixListener>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Shutting the listening socket down makes a blocked accept() return at once, even
        // when its path has been deleted and nobody could connect to wake it.
        let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

pub struct Server {
    listener: Arc<UnixListener>,
    /// The inode we bound, so that a stop never deletes another server's socket.
    socket_inode: u64,
    store: Arc<VolumeStore>,
    options: ServerOptions,
    stopping: Arc<AtomicBool>,
    connections: Arc<Connections>,
}

impl Server {
    /// Listens on `options.socket`, created with mode 0600. A stale socket file (nobody
    /// answering) is replaced; a live one is an error.
    pub fn bind(store: VolumeStore, options: ServerOptions) -> VolumeResult<Server> {
        let socket = &options.socket;
        if UnixStream::connect(socket).is_ok() {
            return Err(VolumeError::Busy {
                object: socket.display().to_string(),
                detail: "another server is listening there".into(),
            });
        }
        let listener = bind_private(socket)?;
        let socket_inode = std::fs::metadata(socket).map_err(VolumeError::io("reading", socket.display()))?.ino();
        Ok(Server {
            listener: Arc::new(listener),
            socket_inode,
            store: Arc::new(store),
            options,
            stopping: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Connections::default()),
        })
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { stopping: self.stopping.clone(), listener: self.listener.clone() }
    }

    /// Serves until stopped, then lets requests under way finish (up to the drain
    /// timeout) and removes the socket.
    pub fn run(self) {
        for incoming in self.listener.incoming() {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            match incoming {
                Ok(stream) => self.accept(stream),
                Err(err) => {
                    log(format_args!("accepting a connection: {err}"));
                    // Out of file descriptors: give handlers a moment to close some.
                    if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
        self.remove_socket();
        self.drain();
    }

    fn accept(&self, stream: UnixStream) {
        let _ = stream.set_write_timeout(Some(self.options.request_timeout));
        let Ok(registered) = stream.try_clone() else { return };
        let id = self.connections.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = self.connections.lock();
            if open.len() >= self.options.max_connections {
                drop(open);
                let reply = Reply::failure(503, format!("over {} connections; retry later", self.options.max_connections));
                respond(&mut &stream, &reply, false);
                return;
            }
            open.insert(id, registered);
        }
        let registration = Registration { connections: self.connections.clone(), id };
        let store = self.store.clone();
        let stopping = self.stopping.clone();
        let (request_log, request_timeout) = (self.options.request_log, self.options.request_timeout);
        // Shared with the thread, so that a thread that cannot start still gets an answer sent.
        let stream = Arc::new(stream);
        let served = stream.clone();
        let spawned = std::thread::Builder::new().name(format!("berth-conn-{id}")).stack_size(256 * 1024).spawn(move || {
            let _registration = registration;
            let connection = Connection { stream: &served, store: &store, stopping: &stopping, request_log, request_timeout };
            connection.serve();
        });
        if let Err(err) = spawned {
            log(format_args!("starting a connection thread: {err}"));
            respond(&mut &*stream, &Reply::failure(503, format!("cannot serve a connection now ({err}); retry later")), false);
        }
    }

    fn remove_socket(&self) {
        let socket = &self.options.socket;
        let ours = std::fs::metadata(socket).is_ok_and(|meta| meta.ino() == self.socket_inode);
        if ours {
            let _ = std::fs::remove_file(socket);
        }
    }

    /// Wakes idle keep-alive connections (their next read sees end of file) and waits for
    /// the others to finish their request.
    fn drain(&self) {
        let deadline = Instant::now() + self.options.drain_timeout;
        let mut open = self.connections.lock();
        for stream in open.values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log(format_args!("stopping with {} connection(s) still busy", open.len()));
                return;
            }
            open = self.connections.all_closed.wait_timeout(open, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// Binds the socket in a private directory, sets its mode, then renames it into place:
/// the socket is never reachable with looser permissions, and no process-wide umask is
/// changed under other threads.
fn bind_private(socket: &Path) -> VolumeResult<UnixListener> {
    let parent = socket.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(VolumeError::io("creating directory", parent.display()))?;
    let file_name = socket.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let private = parent.join(format!(".{file_name}.{}.bind", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(VolumeError::io("creating directory", private.display()))?;
    let staged = private.join("socket");
    let bound = UnixListener::bind(&staged).map_err(VolumeError::io("listening on", staged.display())).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(VolumeError::io("setting the mode of", staged.display()))?;
        std::fs::rename(&staged, socket).map_err(VolumeError::io("moving socket to", socket.display()))?;
        Ok(listener)
    });
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// One client's connection, served on its own thread until it closes, times out or errs.
struct Connection<'a> {
    stream: &'a UnixStream,
    store: &'a VolumeStore,
    stopping: &'a AtomicBool,
    request_log: RequestLog,
    request_timeout: Duration,
}

impl Connection<'_> {
    fn serve(&self) {
        let mut reader = BufReader::new(DeadlineReader { stream: self.stream, deadline: Instant::now() });
        let mut writer = self.stream;
        loop {
            reader.get_mut().deadline = Instant::now() + self.request_timeout;
            let Some((head, body)) = self.read_request(&mut reader) else { return };
            let started = Instant::now();
            let reply = api::dispatch(self.store, &head.method, &head.path, &body);
            if self.request_log == RequestLog::All || (self.request_log == RequestLog::Failures && reply.status != 200) {
                let elapsed = started.elapsed().as_secs_f64() * 1e3;
                log(format_args!("{} {} -> {} {} ({elapsed:.1} ms)", head.method, head.path, reply.status, reply.note));
            }
            let keep_alive = head.keep_alive && !self.stopping.load(Ordering::SeqCst);
            if !respond(&mut writer, &reply, keep_alive) || !keep_alive {
                return;
            }
        }
    }

    /// Reads one request, head and body; `None` once the connection is done (closed by the
    /// client, or refused, timed out or cut short, which is answered first).
    fn read_request(&self, reader: &mut BufReader<DeadlineReader>) -> Option<(http::Head, Vec<u8>)> {
        let mut writer = self.stream;
        let head = match http::read_head(reader) {
            Ok(head) => head,
            Err(ReadError::Closed) => return None,
            Err(ReadError::Io(err)) => {
                if is_timeout(&err) {
                    respond(&mut writer, &timed_out(), false);
                }
                return None;
            }
            Err(ReadError::Refused(refusal)) => {
                let reply = Reply::failure(refusal.status, refusal.message);
                if self.request_log != RequestLog::Off {
                    log(format_args!("refused a request: {} {}", reply.status, reply.note));
                }
                respond(&mut writer, &reply, false);
                return None;
            }
        };
        if head.expect_continue && http::write_continue(&mut writer).is_err() {
            return None;
        }
        match http::read_body(reader, head.content_length) {
            Ok(body) => Some((head, body)),
            Err(err) => {
                let reply = if is_timeout(&err) {
                    timed_out()
                } else {
                    Reply::failure(400, "the body ended before its Content-Length".into())
                };
                respond(&mut writer, &reply, false);
                None
            }
        }
    }
}

fn timed_out() -> Reply {
    Reply::failure(408, "timed out reading the request".into())
}

fn is_timeout(err: &std::io::Error) -> bool {
    matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Reads from a connection until a deadline: each read waits at most for what is left, so
/// a request must arrive whole in time however its bytes are spread out.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// Sends a reply; false when the client is gone.
fn respond(writer: &mut impl std::io::Write, reply: &Reply, keep_alive: bool) -> bool {
    let body = reply.body.to_string();
    http::write_response(writer, reply.status, api::CONTENT_TYPE, body.as_bytes(), keep_alive).is_ok()
}
