//! The one error type of the crate: what failed, and on which volume, path or option.

use std::fmt::Display;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("invalid mount ID {id:?}: {reason}")]
    InvalidMountId { id: String, reason: &'static str },

    #[error("unknown driver {driver:?} for volume {volume} (known drivers: bind, named, loop, xfsquota, thin)")]
    UnknownDriver { volume: String, driver: String },

    #[error("unknown option(s) {options} for {driver} volume {volume} (accepted: {accepted})")]
    UnknownOptions { volume: String, driver: &'static str, options: String, accepted: String },

    #[error("missing option {option:?} for {driver} volume {volume}")]
    MissingOption { volume: String, driver: &'static str, option: &'static str },

    #[error("invalid value {value:?} of option {option:?} for volume {volume}: {reason}")]
    InvalidOption { volume: String, option: String, value: String, reason: String },

    #[error("no such volume: {0}")]
    NotFound(String),

    #[error("volume {name} already exists with other settings ({existing})")]
    AlreadyExists { name: String, existing: String },

    #[error("volume {name} is in use by mount ID(s) {ids}; unmount them first")]
    InUse { name: String, ids: String },

    #[error("{object} is busy: {detail}")]
    Busy { object: String, detail: String },

    #[error("metadata of volume {volume} is unreadable: {detail}")]
    CorruptMetadata { volume: String, detail: String },

    #[error("{action} {object}: {source}")]
    Io {
        action: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },

    #[error("{command} for {object} failed: {detail}")]
    Command { command: &'static str, object: String, detail: String },

    #[error("bad request: {0}")]
    BadRequest(String),

    /// The kernel lacks what a driver needs (device-mapper for `thin`).
    #[error("the {driver} driver cannot work on this machine: {detail}")]
    Unavailable { driver: &'static str, detail: String },

    #[error("{action} {object}: {detail}")]
    DeviceMapper { action: &'static str, object: String, detail: String },

    #[error("thin pool {pool} is full: {detail}")]
    PoolFull { pool: String, detail: String },

    /// A state file or lock file (berth_util::fs) that could not be written or taken.
    #[error(transparent)]
    File(#[from] berth_util::fs::FileError),

    #[error(transparent)]
    Quota(#[from] berth_quota::QuotaError),
}

pub type VolumeResult<T> = Result<T, VolumeError>;

impl VolumeError {
    /// Builds the mapper for `map_err`: `.map_err(VolumeError::io("mounting", &path))`.
    /// Takes anything convertible to `io::Error`, so nix's `Errno` works as well.
    pub fn io<E: Into<io::Error>>(action: &'static str, object: impl Display) -> impl FnOnce(E) -> VolumeError {
        let object = object.to_string();
        move |err| VolumeError::Io { action, object, source: err.into() }
    }
}
