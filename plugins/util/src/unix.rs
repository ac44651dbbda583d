//! Unix sockets at paths of any length. `sun_path` holds 107 bytes and a NUL, and a socket
//! under a data directory named after a network (berth-dns's control socket) or chosen by a
//! user (berth-dhcp's `daemonSocketPath`) can be longer. Such a path is reached through its
//! directory, opened with O_PATH and named by its `/proc/self/fd` link: the socket file is
//! the same one, whichever way it was named.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path `sun_path` takes (108 bytes with its NUL).
const SUN_PATH_MAX: usize = 107;

/// Listens at `path`.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    reachable(path, |p| UnixListener::bind(p))
}

/// Connects to `path`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    reachable(path, |p| UnixStream::connect(p))
}

/// Runs `f` on `path`, or on a short name of it while its directory is held open.
fn reachable<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return f(path) };
    let dir = open_directory(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?;
    f(&PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name))
}

fn open_directory(dir: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC).open(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_socket_past_sun_paths_length_listens_and_answers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n".repeat(150));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("control.sock");
        assert!(path.as_os_str().len() > 160);
        assert!(UnixListener::bind(&path).is_err(), "the plain bind refuses it");
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "the socket file is at the long path");
        let client = std::thread::spawn(move || {
            let mut conn = connect(&path).unwrap();
            conn.write_all(b"ping").unwrap();
        });
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        client.join().unwrap();
        assert_eq!(got, "ping");
    }
}
