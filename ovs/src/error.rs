//! berth-ovs's own error: an Open vSwitch operation that failed, on which database, and the
//! OVSDB error with its causes. It becomes a `CniError` in one place, the `From` below.

use crate::ovsdb::OvsdbError;
use berth_cni::{CniError, Code};

#[derive(Debug, thiserror::Error)]
#[error("{what} (ovsdb {socket})")]
pub struct OvsError {
    /// What berth-ovs was doing: "add port vethXXXX to Open vSwitch bridge br0".
    pub what: String,
    /// The configuration's `ovsdbSocket`.
    pub socket: String,
    #[source]
    pub source: OvsdbError,
}

/// Wraps an OVSDB error with what was being done on `socket`, for `map_err`.
pub fn doing(what: impl Into<String>, socket: &str) -> impl FnOnce(OvsdbError) -> OvsError + '_ {
    let what = what.into();
    move |source| OvsError { what, socket: socket.to_string(), source }
}

/// Code 100, as every failure of the system below the plugin: the message says what failed,
/// the details why (the OVSDB error and what caused it).
impl From<OvsError> for CniError {
    fn from(e: OvsError) -> CniError {
        CniError::caused_by(Code::Kernel, &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_kept_in_the_details() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = doing("connect to Open vSwitch", "unix:/run/db.sock")(OvsdbError::Connect {
            path: "/run/db.sock".into(),
            source: refused,
        });
        let cni = CniError::from(e);
        assert_eq!(cni.code, 100);
        assert_eq!(cni.msg, "connect to Open vSwitch (ovsdb unix:/run/db.sock)");
        assert!(cni.details.starts_with("cannot connect to ovsdb-server at /run/db.sock"), "{}", cni.details);
        assert!(cni.details.contains("refused"), "{}", cni.details);
    }
}
