//! What a user may ask for, in the terms every driver shares: volume names, mount IDs,
//! sizes, the driver's kind and its options as a map, each checked once here with
//! messages that name the offending value. What a driver makes of its options is the
//! driver's own (see [`crate::driver`]): drivers import this module, never the reverse.

use crate::error::{VolumeError, VolumeResult};
use berth_util::names::check_identifier;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A file name holds at most 255 bytes; the store adds `.creating.` or `.lock` to names.
const MAX_NAME_LEN: usize = 240;
const MAX_MOUNT_ID_LEN: usize = 256;

/// A volume name: an identifier (berth_util's, as for CNI container IDs:
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`), so it is always one safe path component (never empty,
/// `.`, `..`, hidden, or containing `/`), of at most 240 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn parse(name: &str) -> VolumeResult<Self> {
        let invalid = |reason| VolumeError::InvalidName { name: name.to_string(), reason };
        check_identifier(name).map_err(|err| invalid(err.reason))?;
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("it is longer than 240 characters"));
        }
        Ok(VolumeName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl<'de> Deserialize<'de> for VolumeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        VolumeName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Who holds a mount of a volume: the container ID a runtime sends with Mount and Unmount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MountId(String);

impl MountId {
    pub fn parse(id: &str) -> VolumeResult<Self> {
        let invalid = |reason| VolumeError::InvalidMountId { id: id.to_string(), reason };
        if id.is_empty() {
            return Err(invalid("it is empty"));
        }
        if id.len() > MAX_MOUNT_ID_LEN {
            return Err(invalid("it is longer than 256 characters"));
        }
        if id.chars().any(char::is_control) {
            return Err(invalid("it contains control characters"));
        }
        Ok(MountId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Sizes in bytes (`64M`, `1G`), shared with berth-quota.
pub use berth_quota::Bytes;

/// The drivers berth knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Bind,
    Named,
    Loop,
    #[serde(rename = "xfsquota")]
    XfsQuota,
    Thin,
}

impl DriverKind {
    pub const ALL: [DriverKind; 5] =
        [DriverKind::Bind, DriverKind::Named, DriverKind::Loop, DriverKind::XfsQuota, DriverKind::Thin];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Bind => "bind",
            DriverKind::Named => "named",
            DriverKind::Loop => "loop",
            DriverKind::XfsQuota => "xfsquota",
            DriverKind::Thin => "thin",
        }
    }

    pub fn parse(volume: &str, driver: &str) -> VolumeResult<DriverKind> {
        DriverKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == driver)
            .ok_or_else(|| VolumeError::UnknownDriver { volume: volume.to_string(), driver: driver.to_string() })
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The options a user gave a volume: `-o key=value` on the command line, `Opts` in a
/// Create request.
pub type OptionMap = BTreeMap<String, String>;

/// The one option every driver takes: which driver, when none is given otherwise.
pub const TYPE_OPTION: &str = "type";

/// A volume's options as a driver reads them, with the checks that drivers share; each
/// error names the volume, the option and its value. Every driver parses its own options
/// (`from_options` in [`crate::driver`]'s modules).
pub struct DriverOptions<'a> {
    volume: &'a VolumeName,
    options: &'a OptionMap,
}

impl<'a> DriverOptions<'a> {
    pub fn new(volume: &'a VolumeName, options: &'a OptionMap) -> Self {
        DriverOptions { volume, options }
    }

    pub fn volume(&self) -> &'a VolumeName {
        self.volume
    }

    /// The driver `driver` names (a command line's `--driver`), else the `type` option,
    /// else `named`; the two must agree when both are given.
    pub fn kind(&self, driver: Option<&str>) -> VolumeResult<DriverKind> {
        let name = self.volume.as_str();
        match (driver, self.get(TYPE_OPTION)) {
            (Some(given), Some(typed)) if given != typed => {
                Err(self.invalid(TYPE_OPTION, typed, format!("it contradicts the driver {given:?}")))
            }
            (Some(given), _) => DriverKind::parse(name, given),
            (None, Some(typed)) => DriverKind::parse(name, typed),
            (None, None) => Ok(DriverKind::Named),
        }
    }

    /// Refuses every key but `type` and the driver's `accepted` ones, listing them all.
    pub fn check_known(&self, kind: DriverKind, accepted: &[&str]) -> VolumeResult<()> {
        let known = |key: &str| key == TYPE_OPTION || accepted.contains(&key);
        let unknown: Vec<&str> = self.options.keys().map(String::as_str).filter(|key| !known(key)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let all: Vec<&str> = std::iter::once(TYPE_OPTION).chain(accepted.iter().copied()).collect();
        Err(VolumeError::UnknownOptions {
            volume: self.volume.to_string(),
            driver: kind.as_str(),
            options: unknown.join(", "),
            accepted: all.join(", "),
        })
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.options.get(key).map(String::as_str)
    }

    /// The error for an option the driver cannot do without.
    pub fn missing(&self, kind: DriverKind, key: &'static str) -> VolumeError {
        VolumeError::MissingOption { volume: self.volume.to_string(), driver: kind.as_str(), option: key }
    }

    /// The error for a value the driver refuses, and why.
    pub fn invalid(&self, key: &str, value: &str, reason: impl Into<String>) -> VolumeError {
        VolumeError::InvalidOption {
            volume: self.volume.to_string(),
            option: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// A yes/no option: absent or `false`, or `true` or given bare (`-o ro`, which arrives
    /// as an empty value).
    pub fn flag(&self, key: &str) -> VolumeResult<bool> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("" | "true") => Ok(true),
            Some(other) => Err(self.invalid(key, other, "expected true or false")),
        }
    }

    /// A size (`64M`, `1G`), if given; one below `minimum` is refused with the reason
    /// `too_small` gives.
    pub fn size(&self, key: &str, minimum: Bytes, too_small: impl FnOnce(Bytes) -> String) -> VolumeResult<Option<Bytes>> {
        let Some(text) = self.get(key) else { return Ok(None) };
        let size = Bytes::parse(text).map_err(|reason| self.invalid(key, text, reason))?;
        if size < minimum {
            return Err(self.invalid(key, text, too_small(minimum)));
        }
        Ok(Some(size))
    }

    /// An absolute path, if given; a relative one is refused with `reason`.
    pub fn absolute_path(&self, key: &str, reason: &str) -> VolumeResult<Option<PathBuf>> {
        match self.get(key) {
            None => Ok(None),
            Some(path) if path.starts_with('/') => Ok(Some(PathBuf::from(path))),
            Some(path) => Err(self.invalid(key, path, reason)),
        }
    }
}

/// Splits `key=value` as given on a command line; a bare `key` means an empty value.
pub fn parse_option(text: &str) -> (String, String) {
    match text.split_once('=') {
        Some((key, value)) => (key.to_string(), value.to_string()),
        None => (text.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_path_components() {
        for good in ["v1", "a", "Data_2.backup-old", "0"] {
            assert!(VolumeName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "../etc", "a/b", "-x", "_x", ".hidden", "a b", "é", "a\0b", "v1/"] {
            let err = VolumeName::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "message names the input: {err}");
        }
        assert!(VolumeName::parse(&"a".repeat(240)).is_ok());
        assert!(VolumeName::parse(&"a".repeat(241)).is_err());
    }

    #[test]
    fn names_are_checked_when_read_back() {
        assert!(serde_json::from_str::<VolumeName>("\"../x\"").is_err());
        assert_eq!(serde_json::from_str::<VolumeName>("\"ok\"").ok(), VolumeName::parse("ok").ok());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(Bytes::parse("64M"), Ok(Bytes(64 << 20)));
        assert_eq!(Bytes::parse("1G"), Ok(Bytes(1 << 30)));
        assert_eq!(Bytes::parse("1g"), Ok(Bytes(1 << 30)));
        assert_eq!(Bytes::parse("512KiB"), Ok(Bytes(512 << 10)));
        assert_eq!(Bytes::parse("4096"), Ok(Bytes(4096)));
        assert_eq!(Bytes::parse("2T"), Ok(Bytes(2 << 40)));
        for bad in ["", "M", "-1M", "1.5G", "64X", "99999999999999999999", "20000000T"] {
            assert!(Bytes::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Bytes(64 << 20).to_string(), "64M");
        assert_eq!(Bytes(1000).to_string(), "1000");
    }

    #[test]
    fn mount_ids_are_checked() {
        assert!(MountId::parse("4f2a9c").is_ok());
        assert!(MountId::parse("").is_err());
        assert!(MountId::parse("a\nb").is_err());
        assert!(MountId::parse(&"x".repeat(257)).is_err());
    }
}
