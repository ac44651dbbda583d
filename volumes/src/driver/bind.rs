//! `bind`: an existing host directory, bind-mounted on the volume's mount point on first
//! Mount; or, with `ro`, shown there through a read-only overlay, so that the kernel
//! refuses writes whatever the runtime does with the mount.

use super::{make_dir, Driver, Usage, VolumeLayout};
use crate::error::{VolumeError, VolumeResult};
use crate::spec::{Bytes, DriverKind, DriverOptions};
use crate::sys::{self, MountTable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindDriver {
    pub source: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

impl BindDriver {
    /// What `-o` may set, besides `type`.
    pub const OPTIONS: &'static [&'static str] = &["source", "ro"];

    /// `-o source=DIR [-o ro]`.
    pub fn from_options(options: &DriverOptions) -> VolumeResult<BindDriver> {
        let source = options
            .absolute_path("source", "it must be an absolute path")?
            .ok_or_else(|| options.missing(DriverKind::Bind, "source"))?;
        Ok(BindDriver { source, read_only: options.flag("ro")? })
    }

    fn check_source(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        let invalid = |reason: String| VolumeError::InvalidOption {
            volume: layout.name.to_string(),
            option: "source".into(),
            value: self.source.display().to_string(),
            reason,
        };
        match std::fs::metadata(&self.source) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(invalid("it is not a directory".into())),
            Err(err) => Err(invalid(err.to_string())),
        }
    }
}

impl Driver for BindDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Bind
    }

    fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("source".to_string(), self.source.display().to_string()),
            ("ro".to_string(), self.read_only.to_string()),
        ])
    }

    fn create(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        self.check_source(layout)?;
        make_dir(&layout.data())
    }

    fn activate(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        self.check_source(layout)?;
        if !self.read_only {
            return sys::bind_mount(&self.source, &layout.data());
        }
        let empty = layout.dir.join("_empty");
        if !empty.exists() {
            make_dir(&empty)?;
        }
        sys::mount_read_only_view(&self.source, &empty, &layout.data())
    }

    fn deactivate(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        sys::unmount(&layout.data())
    }

    fn is_active(&self, layout: &VolumeLayout, mounts: &MountTable) -> bool {
        mounts.is_mount_point(&layout.data())
    }

    fn usage(&self, _layout: &VolumeLayout, _mounts: &MountTable) -> VolumeResult<Usage> {
        Ok(Usage { used: Some(Bytes(sys::allocated_bytes(&self.source)?)), ..Usage::default() })
    }
}
