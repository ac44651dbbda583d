//! berth-dns's one error type; [`From<DnsError> for CniError`](berth_cni::CniError) gives each
//! failure its CNI code.

use berth_cni::{CniError, Code};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A configuration key or runtime argument is wrong.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    /// Another live container already answers to `name` on `network`.
    #[error("the name {name:?} is taken on network {network} by container {owner}; choose another name or alias")]
    NameTaken { name: String, network: String, owner: String },
    /// Reading or writing the network's records.
    #[error(transparent)]
    File(#[from] berth_util::fs::FileError),
    #[error("the records in {} are corrupt", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Starting, asking or stopping the network's DNS server.
    #[error("DNS server of {}: {what}", dir.display())]
    Server {
        what: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server refused to start (its own words).
    #[error("DNS server of {} did not start: {reason}", dir.display())]
    Start { dir: PathBuf, reason: String },
    /// CHECK found a difference.
    #[error("{0}")]
    Check(String),
}

pub type DnsResult<T> = Result<T, DnsError>;

impl DnsError {
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> DnsError {
        DnsError::Config { field: field.into(), reason: reason.into() }
    }

    pub fn server(what: impl Into<String>, dir: &std::path::Path, source: std::io::Error) -> DnsError {
        DnsError::Server { what: what.into(), dir: dir.to_path_buf(), source }
    }
}

/// The one place a berth-dns failure gets its CNI code.
impl From<DnsError> for CniError {
    fn from(e: DnsError) -> CniError {
        let code = match &e {
            DnsError::Config { .. } | DnsError::NameTaken { .. } => Code::InvalidConfig,
            DnsError::File(_) | DnsError::Corrupt { .. } | DnsError::Server { .. } | DnsError::Start { .. } => Code::Io,
            DnsError::Check(_) => Code::Kernel,
        };
        CniError::caused_by(code, &e)
    }
}
