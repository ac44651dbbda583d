//! The drivers: how a volume's data is stored and made reachable at its mount point.
//!
//! A driver only provides storage. Names, metadata, locking and the reference counting of
//! mounts by mount ID live once, in [`crate::store`], above all drivers.

mod bind;
mod loopback;
mod named;

pub use bind::BindDriver;
pub use loopback::LoopDriver;
pub use named::NamedDriver;

use crate::error::VolumeResult;
use crate::spec::{Bytes, DriverKind, VolumeName};
use crate::sys::MountTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where one volume lives: `<state>/volumes/NAME/` with `volume.json`, `_data` (the data or
/// the mount point) and, for `loop`, `disk.img`.
#[derive(Debug, Clone)]
pub struct VolumeLayout {
    pub name: VolumeName,
    pub dir: PathBuf,
}

impl VolumeLayout {
    pub fn new(name: VolumeName, dir: PathBuf) -> Self {
        VolumeLayout { name, dir }
    }
    pub fn data(&self) -> PathBuf {
        self.dir.join("_data")
    }
    pub fn image(&self) -> PathBuf {
        self.dir.join("disk.img")
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("volume.json")
    }
}

/// How much room a volume takes and has, as far as its driver can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Usage {
    /// The most the volume can hold (loop: its size), when it is limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<Bytes>,
    /// Disk space the loop image really takes on the host (it is sparse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_allocated: Option<Bytes>,
}

pub trait Driver {
    fn kind(&self) -> DriverKind;
    /// The settings as `key=value` options, for display.
    fn options(&self) -> BTreeMap<String, String>;
    /// Prepares the storage in `layout.dir`, a fresh directory not yet visible under the name.
    fn create(&self, layout: &VolumeLayout) -> VolumeResult<()>;
    /// Makes the data reachable at `layout.data()`: the first Mount.
    fn activate(&self, layout: &VolumeLayout) -> VolumeResult<()>;
    /// Undoes `activate`: the last Unmount. Succeeds when nothing is active.
    fn deactivate(&self, layout: &VolumeLayout) -> VolumeResult<()>;
    /// Whether the data must be mounted to be reachable; `named` data always is.
    fn mounts_on_demand(&self) -> bool {
        true
    }
    /// Whether the kernel holds what `activate` sets up.
    fn is_active(&self, layout: &VolumeLayout, mounts: &MountTable) -> bool;
    /// Lets go of kernel objects other than mounts (loop devices) before the volume's
    /// directory is deleted.
    fn release(&self, _layout: &VolumeLayout) -> VolumeResult<()> {
        Ok(())
    }
    fn usage(&self, layout: &VolumeLayout, mounts: &MountTable) -> VolumeResult<Usage>;
}

/// A volume's driver and its settings, as persisted in `volume.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum DriverConfig {
    Bind(BindDriver),
    Named(NamedDriver),
    Loop(LoopDriver),
}

impl DriverConfig {
    pub fn driver(&self) -> &dyn Driver {
        match self {
            DriverConfig::Bind(driver) => driver,
            DriverConfig::Named(driver) => driver,
            DriverConfig::Loop(driver) => driver,
        }
    }
}

/// Creates an empty directory for a mount point or for data.
fn make_dir(path: &Path) -> VolumeResult<()> {
    std::fs::create_dir(path).map_err(crate::error::VolumeError::io("creating directory", path.display()))
}
