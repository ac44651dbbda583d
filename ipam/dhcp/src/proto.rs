//! What the plugin asks the keeper, over its unix socket: one JSON request, one JSON answer
//! per connection. The plugin starts the keeper when nobody listens.

use crate::error::{DhcpError, KeeperCode, Result};
use crate::lease::{Lease, Pending};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the plugin waits for a keeper it started to listen.
const START_WAIT: Duration = Duration::from_secs(5);
/// Longer than any one thing the keeper does for a request (a release: about a millisecond).
const ANSWER_WAIT: Duration = Duration::from_secs(10);
pub const MAX_MESSAGE: u64 = 1 << 20;
/// The longest one ask can take: a keeper started, then its answer.
pub const LONGEST_ASK: Duration = START_WAIT.saturating_add(ANSWER_WAIT);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Ask {
    /// The plugin is about to ask the server for this address: record it durably, to be
    /// released by DEL, GC, or the keeper itself once `abandon_at` passes, unless a Hold of
    /// the same attempt comes first. Replaces any record of the attachment.
    Pending { pending: Box<Pending> },
    /// Keep this lease alive until it is released or its namespace is gone. With `attempt`,
    /// only while the attachment's pending record is that attempt's (a plugin of before
    /// pending records sends none).
    Hold {
        lease: Box<Lease>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u64>,
    },
    /// Send DHCPRELEASE and forget the lease (fine when there is none).
    Release { key: String },
    /// Whether the lease is held and its latest renewal succeeded.
    Check { key: String },
    /// Whether every lease of the network was renewed when it was due.
    Status { network: String },
    /// Release the network's leases whose keys are not in `keep`.
    Gc { network: String, keep: Vec<String> },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<KeeperCode>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Answer {
    pub fn ok() -> Answer {
        Answer { ok: true, code: None, message: String::new() }
    }

    pub fn refused(code: KeeperCode, message: impl Into<String>) -> Answer {
        Answer { ok: false, code: Some(code), message: message.into() }
    }
}

/// The files of the keeper listening on `socket`: its state directory (one file per lease),
/// the lock only a running keeper holds, and its process ID.
pub struct Paths {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub lock: PathBuf,
    pub pid: PathBuf,
}

impl Paths {
    pub fn new(socket: &Path) -> Paths {
        let with = |suffix: &str| PathBuf::from(format!("{}.{suffix}", socket.display()));
        Paths { socket: socket.to_path_buf(), state_dir: with("leases"), lock: with("lock"), pid: with("pid") }
    }
}

/// Asks the keeper at `socket`, first starting it when `start` and nobody listens there.
pub fn ask(socket: &Path, request: &Ask, start: bool) -> Result<()> {
    let unreachable = |what: &str| {
        let what = what.to_string();
        move |source| DhcpError::KeeperUnreachable { socket: socket.to_path_buf(), what, source }
    };
    let mut stream = match berth_util::unix::connect(socket) {
        Ok(s) => s,
        Err(_) if start => start_keeper(socket)?,
        Err(e) => return Err(unreachable("nothing listens there")(e)),
    };
    stream.set_read_timeout(Some(ANSWER_WAIT)).map_err(unreachable("cannot set a timeout"))?;
    let body = serde_json::to_vec(request).map_err(|e| unreachable("cannot encode the request")(e.into()))?;
    stream.write_all(&body).map_err(unreachable("cannot send the request"))?;
    stream.shutdown(std::net::Shutdown::Write).map_err(unreachable("cannot send the request"))?;
    // The answer is complete when its JSON value is, without waiting for the keeper's
    // thread to close the connection.
    let answer: Answer = match serde_json::Deserializer::from_reader(stream.take(MAX_MESSAGE)).into_iter().next() {
        Some(Ok(answer)) => answer,
        Some(Err(e)) if e.is_io() => return Err(unreachable("no answer")(e.into())),
        Some(Err(e)) => return Err(unreachable("unreadable answer")(e.into())),
        None => return Err(unreachable("no answer")(std::io::ErrorKind::UnexpectedEof.into())),
    };
    if answer.ok {
        return Ok(());
    }
    Err(DhcpError::Keeper {
        socket: socket.to_path_buf(),
        message: answer.message,
        code: answer.code.unwrap_or(KeeperCode::Failed),
    })
}

/// Whether the keeper that refused `ask` runs a berth-dhcp of before pending records: one
/// started by the previous binary, still running after an upgrade. ADD then goes on as it
/// did (its Hold is understood).
pub fn predates_pending(e: &DhcpError) -> bool {
    matches!(e, DhcpError::Keeper { code: KeeperCode::Failed, message, .. } if message.contains("unknown variant `pending`"))
}

/// Starts `berth-dhcp daemon` detached (it forks again and leaves its session, so it is
/// nobody's child and holds none of the runtime's pipes) and waits for it to listen. Of
/// several plugins starting one at once, the first to take the keeper's lock stays.
fn start_keeper(socket: &Path) -> Result<UnixStream> {
    let failed = |what: &str| {
        let what = what.to_string();
        move |source| DhcpError::KeeperUnreachable { socket: socket.to_path_buf(), what, source }
    };
    let exe = std::env::current_exe().map_err(failed("cannot find the berth-dhcp executable to start it"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("daemon").arg("--socket").arg(socket).arg("--detach");
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // Returns once the intermediate process forked the keeper off.
    let status = cmd.status().map_err(failed("cannot start it"))?;
    if !status.success() {
        return Err(failed("it failed to start")(std::io::Error::other(format!("berth-dhcp daemon: {status}"))));
    }
    let deadline = Instant::now() + START_WAIT;
    loop {
        match berth_util::unix::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(failed(&format!("started it, but it did not listen within {START_WAIT:?}"))(e))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}
