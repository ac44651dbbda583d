//! What `berth` tells a person at a shell when something fails, and its exit status.
//!
//! Inside, berth acts as a runtime: plugins answer with CNI errors, whose codes are for
//! runtimes. A person gets the message and its causes, and an exit status that says what
//! kind of failure it was (documented in README.md).

use berth_cni::{CniError, Code};
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum BerthError {
    /// A command-line value that cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// A network, container or attachment that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A plugin, or berth acting as the runtime, failed.
    #[error("{}", describe(.0))]
    Cni(CniError),
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
    /// The demo saw something other than what it shows.
    #[error("{0}")]
    Demo(String),
    #[error(transparent)]
    File(#[from] berth_util::fs::FileError),
}

pub type BerthResult<T> = Result<T, BerthError>;

/// Exit statuses (2 is clap's, for a command line it cannot parse).
pub mod exit {
    /// An operation failed: a plugin, the kernel, a file.
    pub const FAILED: u8 = 1;
    /// The named network, container or namespace does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// A value on the command line or in a network's configuration is invalid.
    pub const INVALID: u8 = 4;
}

// Not `#[from]`: that would make the CniError its own cause, printed twice.
impl From<CniError> for BerthError {
    fn from(e: CniError) -> BerthError {
        BerthError::Cni(e)
    }
}

// The kernel crates' errors are classified (not found, invalid, failed) as plugins see them.
impl From<berth_netns::NetnsError> for BerthError {
    fn from(e: berth_netns::NetnsError) -> BerthError {
        BerthError::Cni(e.into())
    }
}

impl From<berth_netlink::NetlinkError> for BerthError {
    fn from(e: berth_netlink::NetlinkError) -> BerthError {
        BerthError::Cni(e.into())
    }
}

impl BerthError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BerthError {
        let what = what.into();
        move |source| BerthError::Io { what, source }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            BerthError::InvalidArgument(_) => exit::INVALID,
            BerthError::NotFound(_) => exit::NOT_FOUND,
            BerthError::Io { .. } | BerthError::File(_) | BerthError::Demo(_) => exit::FAILED,
            BerthError::Cni(e) => match e.code {
                c if c == Code::UnknownContainer as u32 => exit::NOT_FOUND,
                c if [Code::InvalidConfig, Code::InvalidEnvironment, Code::Decoding, Code::IncompatibleVersion]
                    .iter()
                    .any(|&k| k as u32 == c) =>
                {
                    exit::INVALID
                }
                _ => exit::FAILED,
            },
        })
    }

    /// The message with every cause, one `: ` apart, for stderr.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            out += &format!(": {cause}");
            next = cause.source();
        }
        out
    }
}

/// A CNI error as a sentence: the message, then the details, without the code.
fn describe(e: &CniError) -> String {
    if e.details.is_empty() {
        e.msg.clone()
    } else {
        format!("{}: {}", e.msg, e.details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_see_no_cni_codes_and_get_distinct_exit_codes() {
        let e = BerthError::from(CniError::invalid_config("subnet: bad").with_details("10.0.0.0/33"));
        assert_eq!(e.report(), "subnet: bad: 10.0.0.0/33");
        assert_eq!(e.exit_code(), ExitCode::from(exit::INVALID));
        let gone = BerthError::from(CniError::new(Code::UnknownContainer, "cannot open network namespace /x"));
        assert_eq!(gone.exit_code(), ExitCode::from(exit::NOT_FOUND));
        let io = BerthError::io("read /etc/berth")(std::io::Error::from_raw_os_error(13));
        assert!(io.report().starts_with("read /etc/berth: Permission denied"), "{}", io.report());
    }
}
