//! The crate's one error type, and the one place it becomes a `CniError` with a code.

use berth_cni::{CniError, Code};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("no DHCP server answered on {ifname} within {waited:?} ({what})")]
    NoAnswer { ifname: String, waited: Duration, what: &'static str },
    #[error("the DHCP server {server} refused the lease on {ifname}: {message}")]
    Refused { ifname: String, server: String, message: String },
    #[error("malformed DHCP message: {0}")]
    Malformed(String),
    #[error("{what} on {ifname}")]
    Socket { what: String, ifname: String, source: std::io::Error },
    #[error("{ifname} is missing from the container")]
    NoInterface { ifname: String },
    #[error("the lease keeper at {} is not reachable: {what}", socket.display())]
    KeeperUnreachable { socket: PathBuf, what: String, source: std::io::Error },
    #[error("the lease keeper at {} answered: {message}", socket.display())]
    Keeper { socket: PathBuf, message: String, code: KeeperCode },
    #[error(transparent)]
    Netns(#[from] berth_netns::NetnsError),
    #[error(transparent)]
    Netlink(#[from] berth_netlink::NetlinkError),
    #[error(transparent)]
    File(#[from] berth_util::fs::FileError),
}

/// What a keeper's refusal means for the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeeperCode {
    /// It holds no lease for that container and interface.
    Unknown,
    /// The lease is held but its latest renewal failed, or it ran out: the server is away.
    NotRenewed,
    /// Another ADD of the same attachment replaced this one's pending record: the lease is
    /// that ADD's now (the server knows one client per attachment).
    Superseded,
    /// Anything else the keeper could not do.
    Failed,
}

pub type Result<T, E = DhcpError> = std::result::Result<T, E>;

impl From<DhcpError> for CniError {
    fn from(e: DhcpError) -> CniError {
        let code = match e {
            // berth-cni gives namespace and netlink failures their codes (3 for a namespace
            // that is gone, 7 for an invalid request, 100 for the kernel).
            DhcpError::Netns(inner) => return inner.into(),
            DhcpError::Netlink(inner) => return inner.into(),
            // Transient: a server or a keeper that may be back for the runtime's retry.
            DhcpError::NoAnswer { .. } | DhcpError::KeeperUnreachable { .. } => Code::TryAgainLater,
            DhcpError::Keeper { code: KeeperCode::Unknown, .. } | DhcpError::NoInterface { .. } => Code::UnknownContainer,
            DhcpError::Keeper { code: KeeperCode::NotRenewed | KeeperCode::Superseded, .. } => Code::TryAgainLater,
            DhcpError::File(_) => Code::Io,
            DhcpError::Socket { .. } | DhcpError::Refused { .. } | DhcpError::Malformed(_) | DhcpError::Keeper { .. } => {
                Code::Kernel
            }
        };
        CniError::caused_by(code, &e)
    }
}
