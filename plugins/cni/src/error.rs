//! The one error type of the SDK, carrying a CNI error code (spec "Error" section).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Well-known CNI error codes. Codes 100 and above belong to plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decoding = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot take ADDs now (e.g. no address left in a range).
    NotAvailable = 50,
    /// STATUS: the plugin's resources are limited (CNI 1.1).
    LimitedConnectivity = 51,
    /// An operation on the kernel (netlink, sysctl, firewall) failed.
    Kernel = 100,
    /// A delegated plugin (IPAM or a chained plugin) failed without a code of its own.
    Delegate = 101,
}

/// A failure to report to the runtime: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

pub type CniResult<T> = std::result::Result<T, CniError>;

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError { code: code as u32, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidConfig, msg)
    }

    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidEnvironment, msg)
    }

    pub fn io(what: impl fmt::Display, err: impl fmt::Display) -> Self {
        Self::new(Code::Io, what.to_string()).with_details(err)
    }

    pub fn kernel(what: impl fmt::Display, err: impl fmt::Display) -> Self {
        Self::new(Code::Kernel, what.to_string()).with_details(err)
    }

    /// Another crate's error as a `CniError` of `code`: its message, and its causes as the
    /// details. For a plugin's own error type (berth-ovs's OVSDB errors, say), in the one
    /// `From` impl that gives it its code.
    pub fn caused_by(code: Code, err: &dyn std::error::Error) -> CniError {
        CniError::new(code, err.to_string()).with_details(causes(err))
    }

    /// Prefixes the message with what was being done, keeping code and details.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    /// The JSON the spec asks for on stdout, in the version the runtime spoke.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v.to_string()
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// `error: cause: cause of the cause`, for the `details` of a CniError built from another
/// crate's error: the runtime's log keeps the whole chain.
fn causes(err: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut next = err.source();
    while let Some(cause) = next {
        out.push(cause.to_string());
        next = cause.source();
    }
    out.join(": ")
}

impl From<berth_netns::NetnsError> for CniError {
    fn from(e: berth_netns::NetnsError) -> CniError {
        use berth_netns::NetnsError::*;
        let code = match e {
            Open { .. } | NotNamespace { .. } => Code::UnknownContainer,
            InvalidName { .. } => Code::InvalidConfig,
            System { .. } => Code::Io,
        };
        CniError::caused_by(code, &e)
    }
}

impl From<berth_netns::sysctl::SysctlError> for CniError {
    fn from(e: berth_netns::sysctl::SysctlError) -> CniError {
        CniError::caused_by(Code::Kernel, &e)
    }
}

impl From<berth_netlink::NetlinkError> for CniError {
    fn from(e: berth_netlink::NetlinkError) -> CniError {
        match e {
            berth_netlink::NetlinkError::Netns(e) => e.into(),
            berth_netlink::NetlinkError::Invalid(_) => CniError::caused_by(Code::InvalidConfig, &e),
            berth_netlink::NetlinkError::Kernel { .. } => CniError::caused_by(Code::Kernel, &e),
        }
    }
}

impl From<berth_util::fs::FileError> for CniError {
    fn from(e: berth_util::fs::FileError) -> CniError {
        CniError::caused_by(Code::Io, &e)
    }
}

/// Adds "what was being done" to any error on its way into a `CniError`.
pub trait Context<T> {
    fn io_context(self, what: impl FnOnce() -> String) -> CniResult<T>;
    fn kernel_context(self, what: impl FnOnce() -> String) -> CniResult<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn io_context(self, what: impl FnOnce() -> String) -> CniResult<T> {
        self.map_err(|e| CniError::io(what(), e))
    }
    fn kernel_context(self, what: impl FnOnce() -> String) -> CniResult<T> {
        self.map_err(|e| CniError::kernel(what(), e))
    }
}
