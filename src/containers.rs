//! Containers named the way their engine names them: a Docker container by name, ID or unique
//! ID prefix (through the Docker Engine API, as the `docker` CLI asks it), or a podman
//! container by name or ID.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A container an engine knows, and where its network namespace is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineContainer {
    /// The engine's full ID: what the plugins get as CNI_CONTAINERID.
    pub id: String,
    /// The PID of its first process; `None` when it is not running.
    pub pid: Option<u32>,
}

/// Why a lookup found nothing: a sentence naming where it looked.
pub type NotFound = String;

/// The Docker daemon's socket: `DOCKER_HOST` (unix:// only), else /var/run/docker.sock.
pub fn docker_socket() -> Result<PathBuf, NotFound> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
            Some(path) => Ok(PathBuf::from(path)),
            None => Err(format!("DOCKER_HOST={host} is not a unix:// socket")),
        },
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// Docker's `GET /containers/NAME/json`: the daemon resolves names, IDs and ID prefixes.
pub fn docker(name: &str) -> Result<EngineContainer, NotFound> {
    let socket = docker_socket()?;
    let where_ = format!("Docker (unix://{})", socket.display());
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(format!("{where_}: not a container name"));
    }
    let (status, body) = http_get(&socket, &format!("/containers/{name}/json")).map_err(|e| format!("{where_}: {e}"))?;
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(format!("{where_}: {message}"));
    }
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("{where_}: bad answer: {e}"))?;
    let id = json["Id"].as_str().filter(|id| !id.is_empty()).ok_or_else(|| format!("{where_}: answer without Id"))?;
    let pid = json["State"]["Pid"].as_u64().filter(|&p| p > 0 && json["State"]["Running"] == true);
    Ok(EngineContainer { id: id.to_string(), pid: pid.map(|p| p as u32) })
}

/// One HTTP/1.0 GET on a unix socket: the status and the body. HTTP/1.0 makes the daemon
/// close the connection after a plain body (no chunks), so reading to the end is the body.
fn http_get(socket: &std::path::Path, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.take(16 * 1024 * 1024).read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header in the answer"))?;
    let status_line = String::from_utf8_lossy(&response[..head_end]).lines().next().unwrap_or_default().to_string();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    Ok((status, response[head_end + 4..].to_vec()))
}

/// `podman container inspect NAME`, when podman is installed.
pub fn podman(name: &str) -> Result<EngineContainer, NotFound> {
    let Some(podman) = berth_util::tool::find("podman") else { return Err("podman: not installed".into()) };
    let out = Command::new(podman)
        .args(["container", "inspect", "--format", "{{.Id}} {{.State.Pid}} {{.State.Running}}", name])
        .output()
        .map_err(|e| format!("podman: {e}"))?;
    if !out.status.success() {
        return Err("podman: no such container".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let (Some(id), Some(pid), Some(running)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(format!("podman: unexpected answer {text:?}"));
    };
    let pid = pid.parse::<u32>().ok().filter(|&p| p > 0 && running == "true");
    Ok(EngineContainer { id: id.to_string(), pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_picks_the_socket() {
        // Only this test touches DOCKER_HOST in this process's test binary.
        std::env::set_var("DOCKER_HOST", "tcp://127.0.0.1:2375");
        assert!(docker_socket().is_err());
        std::env::set_var("DOCKER_HOST", "unix:///tmp/d.sock");
        assert_eq!(docker_socket().unwrap(), PathBuf::from("/tmp/d.sock"));
        std::env::set_var("DOCKER_HOST", "unix:///nonexistent/berth-test.sock");
        let err = docker("web").unwrap_err();
        assert!(err.contains("unix:///nonexistent/berth-test.sock"), "{err}");
        std::env::remove_var("DOCKER_HOST");
        assert_eq!(docker_socket().unwrap(), PathBuf::from("/var/run/docker.sock"));
    }
}
