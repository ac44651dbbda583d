//! What a user may ask for: volume names, mount IDs, sizes, drivers and their options,
//! each checked once here with messages that name the offending value.

use crate::driver::thin::pool::{check_pool_name, PoolSetup, DEFAULT_POOL};
use crate::driver::{BindDriver, DriverConfig, LoopDriver, NamedDriver, ThinDriver, ThinFs, XfsQuotaDriver};
use crate::error::{VolumeError, VolumeResult};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A file name holds at most 255 bytes; the store adds `.creating.` or `.lock` to names.
const MAX_NAME_LEN: usize = 240;
const MAX_MOUNT_ID_LEN: usize = 256;

/// A volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, so it is always one safe path component
/// (never empty, `.`, `..`, hidden, or containing `/`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn parse(name: &str) -> VolumeResult<Self> {
        let invalid = |reason| VolumeError::InvalidName { name: name.to_string(), reason };
        let mut chars = name.chars();
        match chars.next() {
            None => return Err(invalid("it is empty")),
            Some(first) if !first.is_ascii_alphanumeric() => return Err(invalid("it must start with a letter or a digit")),
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(invalid("only letters, digits, '_', '.' and '-' are allowed"));
        }
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

/// Smallest loop volume: below this mkfs.ext4 leaves almost no room for data.
pub const MIN_LOOP_SIZE: Bytes = Bytes(8 * Bytes::MIB);
/// Smallest xfsquota volume: a limit below what one file takes on disk is no use.
pub const MIN_QUOTA_SIZE: Bytes = Bytes(Bytes::MIB);
/// Smallest thin pool: its metadata and data devices.
pub const MIN_POOL_METADATA: Bytes = Bytes(2 * Bytes::MIB);
pub const MIN_POOL_DATA: Bytes = Bytes(16 * Bytes::MIB);

/// Turns the options a user gave (`-o key=value`, with `type=` choosing the driver unless
/// `driver` is given) into a checked driver configuration. Every key must be known to
/// the chosen driver; `type` is accepted by all.
pub fn driver_config(
    volume: &VolumeName,
    driver: Option<&str>,
    options: &BTreeMap<String, String>,
) -> VolumeResult<DriverConfig> {
    let name = volume.as_str();
    let kind = match (driver, options.get("type")) {
        (Some(given), Some(typed)) if given != typed => {
            return Err(VolumeError::InvalidOption {
                volume: name.to_string(),
                option: "type".into(),
                value: typed.clone(),
                reason: format!("it contradicts the driver {given:?}"),
            })
        }
        (Some(given), _) => DriverKind::parse(name, given)?,
        (None, Some(typed)) => DriverKind::parse(name, typed)?,
        (None, None) => DriverKind::Named,
    };
    let accepted: &[&str] = match kind {
        DriverKind::Bind => &["type", "source", "ro"],
        DriverKind::Named => &["type"],
        DriverKind::Loop => &["type", "size", "usrquota", "grpquota"],
        DriverKind::XfsQuota => &["type", "base", "size", "inodes"],
        DriverKind::Thin => {
            &["type", "size", "fs", "pool", "from", "datadev", "metadatadev", "loopdatasize", "loopmetadatasize", "basesize"]
        }
    };
    let unknown: Vec<&str> = options.keys().map(String::as_str).filter(|key| !accepted.contains(key)).collect();
    if !unknown.is_empty() {
        return Err(VolumeError::UnknownOptions {
            volume: name.to_string(),
            driver: kind.as_str(),
            options: unknown.join(", "),
            accepted: accepted.join(", "),
        });
    }
    let invalid = |option: &str, value: &str, reason: String| VolumeError::InvalidOption {
        volume: name.to_string(),
        option: option.to_string(),
        value: value.to_string(),
        reason,
    };
    let flag = |option: &str| -> VolumeResult<bool> {
        match options.get(option).map(String::as_str) {
            None | Some("false") => Ok(false),
            // `-o ro` without a value arrives as an empty string.
            Some("" | "true") => Ok(true),
            Some(other) => Err(invalid(option, other, "expected true or false".into())),
        }
    };
    Ok(match kind {
        DriverKind::Named => DriverConfig::Named(NamedDriver {}),
        DriverKind::Bind => {
            let source = options.get("source").ok_or(VolumeError::MissingOption {
                volume: name.to_string(),
                driver: "bind",
                option: "source",
            })?;
            let path = PathBuf::from(source);
            if !path.is_absolute() {
                return Err(invalid("source", source, "it must be an absolute path".into()));
            }
            DriverConfig::Bind(BindDriver { source: path, read_only: flag("ro")? })
        }
        DriverKind::Loop => {
            let text = options.get("size").ok_or(VolumeError::MissingOption {
                volume: name.to_string(),
                driver: "loop",
                option: "size",
            })?;
            let size = Bytes::parse(text).map_err(|reason| invalid("size", text, reason))?;
            if size < MIN_LOOP_SIZE {
                return Err(invalid("size", text, format!("the smallest loop volume is {MIN_LOOP_SIZE}")));
            }
            DriverConfig::Loop(LoopDriver { size, usrquota: flag("usrquota")?, grpquota: flag("grpquota")? })
        }
        DriverKind::XfsQuota => {
            let base = options.get("base").ok_or(VolumeError::MissingOption {
                volume: name.to_string(),
                driver: "xfsquota",
                option: "base",
            })?;
            if !base.starts_with('/') {
                return Err(invalid("base", base, "it must be an absolute path".into()));
            }
            let text = options.get("size").ok_or(VolumeError::MissingOption {
                volume: name.to_string(),
                driver: "xfsquota",
                option: "size",
            })?;
            let size = Bytes::parse(text).map_err(|reason| invalid("size", text, reason))?;
            if size < MIN_QUOTA_SIZE {
                return Err(invalid("size", text, format!("the smallest xfsquota volume is {MIN_QUOTA_SIZE}")));
            }
            let inodes = match options.get("inodes") {
                None => None,
                Some(text) => match text.parse::<u64>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => return Err(invalid("inodes", text, "expected a positive number of files".into())),
                },
            };
            DriverConfig::XfsQuota(XfsQuotaDriver { base: PathBuf::from(base), size, inodes })
        }
        DriverKind::Thin => {
            let size_option = |option: &str, minimum: Bytes| -> VolumeResult<Option<Bytes>> {
                let Some(text) = options.get(option) else { return Ok(None) };
                let size = Bytes::parse(text).map_err(|reason| invalid(option, text, reason))?;
                if size < minimum {
                    return Err(invalid(option, text, format!("the smallest is {minimum}")));
                }
                Ok(Some(size))
            };
            let device_option = |option: &str| -> VolumeResult<Option<PathBuf>> {
                match options.get(option) {
                    None => Ok(None),
                    Some(path) if path.starts_with('/') => Ok(Some(PathBuf::from(path))),
                    Some(path) => Err(invalid(option, path, "it must be an absolute path to a block device".into())),
                }
            };
            let pool = options.get("pool").map_or(DEFAULT_POOL, String::as_str);
            check_pool_name(pool).map_err(|reason| invalid("pool", pool, reason))?;
            let fs = match options.get("fs") {
                None => None,
                Some(text) => Some(ThinFs::parse(text).ok_or_else(|| invalid("fs", text, "expected ext4 or xfs".into()))?),
            };
            let from = match options.get("from") {
                None => None,
                Some(origin) => Some(VolumeName::parse(origin).map_err(|err| invalid("from", origin, err.to_string()))?),
            };
            if from.as_ref() == Some(volume) {
                return Err(invalid("from", volume.as_str(), "a volume cannot be a snapshot of itself".into()));
            }
            let size = size_option("size", fs.unwrap_or_default().min_size())?;
            let setup = PoolSetup {
                datadev: device_option("datadev")?,
                metadatadev: device_option("metadatadev")?,
                loopdatasize: size_option("loopdatasize", MIN_POOL_DATA)?,
                loopmetadatasize: size_option("loopmetadatasize", MIN_POOL_METADATA)?,
                basesize: size_option("basesize", fs.unwrap_or_default().min_size())?,
            };
            DriverConfig::Thin(ThinDriver { pool: pool.to_string(), size, fs, from, setup, device: None })
        }
    })
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

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

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
    fn options_choose_and_configure_a_driver() {
        let v = VolumeName::parse("v").unwrap();
        assert_eq!(driver_config(&v, None, &options(&[])).unwrap(), DriverConfig::Named(NamedDriver {}));
        assert_eq!(
            driver_config(&v, None, &options(&[("type", "loop"), ("size", "64M"), ("usrquota", "")])).unwrap(),
            DriverConfig::Loop(LoopDriver { size: Bytes(64 << 20), usrquota: true, grpquota: false })
        );
        assert_eq!(
            driver_config(&v, Some("bind"), &options(&[("source", "/srv/x"), ("ro", "true")])).unwrap(),
            DriverConfig::Bind(BindDriver { source: "/srv/x".into(), read_only: true })
        );
    }

    #[test]
    fn bad_options_are_named_in_the_error() {
        let v = VolumeName::parse("v").unwrap();
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (None, &[("type", "zfs")], "\"zfs\""),
            (Some("nfs"), &[], "\"nfs\""),
            (None, &[("type", "named"), ("size", "1G")], "size"),
            (None, &[("type", "loop"), ("size", "1G"), ("color", "red"), ("mode", "1")], "color, mode"),
            (None, &[("type", "loop")], "\"size\""),
            (None, &[("type", "loop"), ("size", "lots")], "\"lots\""),
            (None, &[("type", "loop"), ("size", "1M")], "smallest"),
            (None, &[("type", "bind")], "\"source\""),
            (None, &[("type", "bind"), ("source", "rel/dir")], "absolute"),
            (None, &[("type", "bind"), ("source", "/x"), ("ro", "maybe")], "\"maybe\""),
            (Some("named"), &[("type", "loop")], "contradicts"),
        ];
        for (driver, pairs, expected) in cases {
            let err = driver_config(&v, *driver, &options(pairs)).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn xfsquota_and_thin_options_are_parsed() {
        let v = VolumeName::parse("v").unwrap();
        assert_eq!(
            driver_config(&v, Some("xfsquota"), &options(&[("base", "/srv/xfs"), ("size", "10M"), ("inodes", "500")])).unwrap(),
            DriverConfig::XfsQuota(XfsQuotaDriver { base: "/srv/xfs".into(), size: Bytes(10 << 20), inodes: Some(500) })
        );
        let DriverConfig::Thin(plain) = driver_config(&v, None, &options(&[("type", "thin")])).unwrap() else { panic!("thin") };
        assert_eq!((plain.pool.as_str(), plain.size, plain.fs, plain.device), ("berth", None, None, None));
        assert!(plain.setup.is_empty());
        let given = options(&[
            ("type", "thin"),
            ("size", "1G"),
            ("fs", "xfs"),
            ("pool", "fast"),
            ("loopdatasize", "256M"),
            ("loopmetadatasize", "16M"),
            ("basesize", "2G"),
        ]);
        let DriverConfig::Thin(thin) = driver_config(&v, None, &given).unwrap() else { panic!("thin") };
        assert_eq!((thin.pool.as_str(), thin.size, thin.fs), ("fast", Some(Bytes(1 << 30)), Some(ThinFs::Xfs)));
        assert_eq!((thin.setup.loopdatasize, thin.setup.basesize), (Some(Bytes(256 << 20)), Some(Bytes(2 << 30))));
        let DriverConfig::Thin(snapshot) = driver_config(&v, None, &options(&[("type", "thin"), ("from", "origin")])).unwrap()
        else {
            panic!("thin")
        };
        assert_eq!(snapshot.from, Some(VolumeName::parse("origin").unwrap()));
    }

    #[test]
    fn bad_xfsquota_and_thin_options_are_named_in_the_error() {
        let v = VolumeName::parse("v").unwrap();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("type", "xfsquota"), ("size", "1G")], "\"base\""),
            (&[("type", "xfsquota"), ("base", "rel"), ("size", "1G")], "absolute"),
            (&[("type", "xfsquota"), ("base", "/x")], "\"size\""),
            (&[("type", "xfsquota"), ("base", "/x"), ("size", "1K")], "smallest"),
            (&[("type", "xfsquota"), ("base", "/x"), ("size", "1G"), ("inodes", "0")], "\"0\""),
            (&[("type", "xfsquota"), ("base", "/x"), ("size", "1G"), ("pool", "p")], "pool"),
            (&[("type", "thin"), ("fs", "btrfs")], "\"btrfs\""),
            (&[("type", "thin"), ("fs", "xfs"), ("size", "100M")], "smallest is 300M"),
            (&[("type", "thin"), ("pool", "a/b")], "\"a/b\""),
            (&[("type", "thin"), ("from", "../x")], "\"../x\""),
            (&[("type", "thin"), ("from", "v")], "itself"),
            (&[("type", "thin"), ("datadev", "sdb")], "absolute"),
            (&[("type", "thin"), ("loopmetadatasize", "1M")], "smallest is 2M"),
            (&[("type", "thin"), ("base", "/x")], "base"),
        ];
        for (pairs, expected) in cases {
            let err = driver_config(&v, None, &options(pairs)).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn mount_ids_are_checked() {
        assert!(MountId::parse("4f2a9c").is_ok());
        assert!(MountId::parse("").is_err());
        assert!(MountId::parse("a\nb").is_err());
        assert!(MountId::parse(&"x".repeat(257)).is_err());
    }
}
