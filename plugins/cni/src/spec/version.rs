//! cniVersion strings, compared as numbers.

use crate::error::{CniError, CniResult, Code};
use std::fmt;

/// Every cniVersion berth's plugins speak, oldest first.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const LATEST: &str = "1.1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub const V0_3_0: Version = Version(0, 3, 0);
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    pub fn parse(s: &str) -> CniResult<Version> {
        let bad = || CniError::new(Code::IncompatibleVersion, format!("invalid cniVersion {s:?}"));
        let mut parts = s.trim().split('.').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let major = parts.next().ok_or_else(bad)??;
        let minor = parts.next().unwrap_or(Ok(0))?;
        let patch = parts.next().unwrap_or(Ok(0))?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Version(major, minor, patch))
    }

    /// Fails with code 1 unless `s` is one of `supported`.
    pub fn require_supported(s: &str, supported: &[&str]) -> CniResult<Version> {
        let v = Version::parse(s)?;
        if supported.iter().any(|known| Version::parse(known).ok() == Some(v)) {
            Ok(v)
        } else {
            Err(CniError::new(Code::IncompatibleVersion, "incompatible CNI versions")
                .with_details(format!("config is {s:?}, plugin supports {supported:?}")))
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(Version::parse("0.10.0").unwrap() > Version::parse("0.4.0").unwrap());
        assert_eq!(Version::parse("1.0").unwrap(), Version::V1_0_0);
        assert!(Version::parse("x.1").is_err());
    }

    #[test]
    fn unsupported_version_is_code_1() {
        let err = Version::require_supported("0.2.0", SUPPORTED).unwrap_err();
        assert_eq!(err.code, 1);
        assert!(Version::require_supported("0.4.0", SUPPORTED).is_ok());
    }
}
