//! The one error type of the crate: what failed, and on which directory, mount or project.

use std::fmt::Display;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The file system cannot do project quotas, or was not mounted for them.
    #[error("project quotas are not available for {path}: {reason}")]
    Unsupported { path: String, reason: String },

    #[error("{path}: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue { what: &'static str, value: String, reason: String },

    #[error("no free project ID from {first} to {last} on {mount}")]
    Exhausted { mount: String, first: u32, last: u32 },

    #[error("project state {path} is unreadable: {detail}")]
    CorruptState { path: String, detail: String },

    #[error("{action} {object}: {source}")]
    Io {
        action: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },

    /// The records file or its lock (berth_util::fs) that could not be written or taken.
    #[error(transparent)]
    File(#[from] berth_util::fs::FileError),
}

pub type QuotaResult<T> = Result<T, QuotaError>;

impl QuotaError {
    /// Builds the mapper for `map_err`: `.map_err(QuotaError::io("reading", &path))`.
    /// Takes anything convertible to `io::Error`, so nix's `Errno` works as well.
    pub fn io<E: Into<io::Error>>(action: &'static str, object: impl Display) -> impl FnOnce(E) -> QuotaError {
        let object = object.to_string();
        move |err| QuotaError::Io { action, object, source: err.into() }
    }

    /// The errno behind an I/O failure, if that is what this is.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            QuotaError::Io { source, .. } => source.raw_os_error(),
            QuotaError::File(err) => err.source.raw_os_error(),
            _ => None,
        }
    }
}
