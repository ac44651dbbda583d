//! berth-firewall's one error type, and its one mapping to a CNI error code.

use berth_cni::error::{CniError, Code};
use std::fmt;

/// Why a firewall operation failed: the message says what was being done and on which
/// attachment; the cause (a tool's output, the kernel's answer, an I/O error) is kept.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A value of the configuration or the attachment the firewall cannot use.
    #[error("{msg}")]
    InvalidConfig {
        msg: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The kernel or a firewall tool refused, or the firewall does not hold what it should.
    #[error("{what}")]
    Kernel {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// A sysctl (IP forwarding) could not be written.
    #[error(transparent)]
    Sysctl(#[from] berth_netns::sysctl::SysctlError),
    /// A file berth keeps (the iptables lock) could not be used.
    #[error(transparent)]
    File(#[from] berth_util::fs::FileError),
}

/// A cause given as text: what a tool printed, or the kernel's answer described.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Cause(pub String);

pub type FirewallResult<T> = Result<T, FirewallError>;

impl FirewallError {
    pub fn invalid_config(msg: impl Into<String>) -> FirewallError {
        FirewallError::InvalidConfig { msg: msg.into(), cause: None }
    }

    pub fn invalid_config_because(msg: impl Into<String>, cause: impl fmt::Display) -> FirewallError {
        FirewallError::InvalidConfig { msg: msg.into(), cause: Some(Cause(cause.to_string())) }
    }

    /// A kernel or tool failure with nothing more to say than `what`.
    pub fn kernel(what: impl Into<String>) -> FirewallError {
        FirewallError::Kernel { what: what.into(), cause: None }
    }

    pub fn kernel_because(what: impl Into<String>, cause: impl fmt::Display) -> FirewallError {
        FirewallError::Kernel { what: what.into(), cause: Some(Cause(cause.to_string())) }
    }
}

impl From<FirewallError> for CniError {
    fn from(e: FirewallError) -> CniError {
        let code = match e {
            FirewallError::InvalidConfig { .. } => Code::InvalidConfig,
            FirewallError::Kernel { .. } | FirewallError::Sysctl(_) => Code::Kernel,
            FirewallError::File(_) => Code::Io,
        };
        CniError::caused_by(code, &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_causes() {
        let e = CniError::from(FirewallError::kernel_because("iptables-nft: cannot read the rules", "exit 4"));
        assert_eq!((e.code, e.msg.as_str(), e.details.as_str()), (100, "iptables-nft: cannot read the rules", "exit 4"));
        assert_eq!(CniError::from(FirewallError::invalid_config("x")).code, 7);
        let file = berth_util::fs::FileError::new("locking", "/run/x".as_ref(), std::io::Error::other("busy"));
        let e = CniError::from(FirewallError::from(file));
        assert_eq!((e.code, e.details.as_str()), (5, "busy"));
    }
}
