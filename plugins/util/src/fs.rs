//! Files berth keeps state in: replaced whole so a crash leaves the old or the new content,
//! never a torn one, and lock files that serialise berth's processes.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A file operation that failed: what was being done, on which path, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}", path.display())]
pub struct FileError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    pub fn new(what: &'static str, path: &Path, source: impl Into<std::io::Error>) -> FileError {
        FileError { what, path: path.to_path_buf(), source: source.into() }
    }

    /// The errno, for callers that tell "not there" from other failures.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }
}

fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::new(what, path, source)
}

/// Replaces `path` with `contents` (mode 0600 when created): a sibling file is written and
/// fsynced, renamed over `path`, and the directory fsynced, so a crash or power loss leaves
/// either the old or the new file. Creates the parent directory when missing.
pub fn write_durably(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    replace(path, contents, true)?;
    sync_dir(parent_of(path))
}

/// Replaces `path` with `contents` as [`write_durably`] does, without the fsyncs: a process
/// killed at any instant leaves the old or the new file, a machine that loses power may
/// leave neither. For state that means nothing after a reboot anyway (what is kept for the
/// containers of this boot), where an fsync on every write would cost milliseconds.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    replace(path, contents, false)
}

/// Removes the staged copies of `path` that writers killed before their rename left
/// behind. Only for files whose writers take a lock first, and with that lock held: then no
/// other writer is under way.
pub fn remove_staged(path: &Path) {
    let Some(prefix) = path.with_extension("tmp.").file_name().map(|n| n.to_string_lossy().into_owned()) else { return };
    let Ok(entries) = std::fs::read_dir(parent_of(path)) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn replace(path: &Path, contents: &[u8], sync: bool) -> Result<(), FileError> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(at("creating directory", dir))?;
    // One sibling per process: two writers never write the same staging file.
    let staged = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)
            .map_err(at("creating", &staged))?;
        file.write_all(contents).map_err(at("writing", &staged))?;
        if sync {
            file.sync_all().map_err(at("syncing", &staged))?;
        }
        std::fs::rename(&staged, path).map_err(at("renaming into place", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    result
}

/// Makes a rename, link or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at("syncing directory", dir))
}

/// The directory holding `path` (`/` for a bare name at the root, `.` for a relative one).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ if path.is_absolute() => Path::new("/"),
        _ => Path::new("."),
    }
}

/// An exclusive flock on a file, held until dropped. The lock file itself is never removed
/// by [`LockFile::acquire`]'s users that share it between processes; see
/// [`LockFile::acquire_removable`] for lock files that may be deleted while held.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    _held: Flock<File>,
}

impl LockFile {
    /// Creates `path` (and its directory) when missing and waits for its exclusive lock.
    pub fn acquire(path: &Path) -> Result<LockFile, FileError> {
        let dir = parent_of(path);
        std::fs::create_dir_all(dir).map_err(at("creating directory", dir))?;
        Self::acquire_in_existing_dir(path)?.ok_or_else(|| FileError::new("opening lock", path, Errno::ENOENT))
    }

    /// As [`LockFile::acquire`], but `None` when the directory does not exist (nothing to
    /// lock, so nothing is created).
    pub fn acquire_in_existing_dir(path: &Path) -> Result<Option<LockFile>, FileError> {
        let mut file = match OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FileError::new("opening lock", path, e)),
        };
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(held) => return Ok(Some(LockFile { path: path.to_path_buf(), _held: held })),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(FileError::new("locking", path, e)),
            }
        }
    }

    /// For a lock file that its holder may delete (a volume's, removed with the volume): once
    /// locked, the file must still be the one at `path`, else the lock is taken again on the
    /// new file.
    pub fn acquire_removable(path: &Path) -> Result<LockFile, FileError> {
        loop {
            let lock = Self::acquire(path)?;
            let held = lock._held.metadata().map_err(at("reading", path))?;
            match std::fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(lock),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FileError::new("reading", path, e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_durably(&path, b"one").unwrap();
        write_durably(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no staging file left");
    }

    #[test]
    fn staged_copies_of_a_killed_writer_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        write_durably(&path, b"kept").unwrap();
        // What a writer killed between its write and its rename leaves.
        for name in ["records.tmp.4242", "records.tmp.7", "records.json.bak", "other.tmp.1"] {
            std::fs::write(dir.path().join(name), b"staged").unwrap();
        }
        remove_staged(&path);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["other.tmp.1", "records.json", "records.json.bak"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }

    #[test]
    fn locks_exclude_each_other_and_release_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = LockFile::acquire(&path).unwrap();
        let path2 = path.clone();
        let waiter = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            drop(LockFile::acquire(&path2).unwrap());
            start.elapsed()
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(held);
        assert!(waiter.join().unwrap() >= std::time::Duration::from_millis(90));
        assert!(LockFile::acquire_in_existing_dir(&dir.path().join("missing/x.lock")).unwrap().is_none());
    }

    #[test]
    fn removable_locks_follow_the_file_now_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.lock");
        let lock = LockFile::acquire_removable(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(lock);
        let again = LockFile::acquire_removable(&path).unwrap();
        assert!(again.path().exists());
    }
}
