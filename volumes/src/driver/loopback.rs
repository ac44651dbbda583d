//! `loop`: an ext4 file system in a sparse image of a fixed size, attached to a loop device
//! and mounted on the first Mount, unmounted on the last (autoclear then detaches the
//! device). A write past the size fails with ENOSPC, in the host and in containers alike.

use super::{make_dir, Driver, Usage, VolumeLayout};
use crate::error::{VolumeError, VolumeResult};
use crate::spec::{Bytes, DriverKind, DriverOptions};
use crate::sys::{self, loopdev, MountTable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Duration;

/// How long Remove waits for the kernel to let go of a detached loop device.
const DETACH_PATIENCE: Duration = Duration::from_secs(2);

/// Smallest loop volume: below this mkfs.ext4 leaves almost no room for data.
pub const MIN_LOOP_SIZE: Bytes = Bytes(8 * Bytes::MIB);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopDriver {
    pub size: Bytes,
    #[serde(default)]
    pub usrquota: bool,
    #[serde(default)]
    pub grpquota: bool,
}

impl LoopDriver {
    /// What `-o` may set, besides `type`.
    pub const OPTIONS: &'static [&'static str] = &["size", "usrquota", "grpquota"];

    /// `-o size=SIZE [-o usrquota] [-o grpquota]`.
    pub fn from_options(options: &DriverOptions) -> VolumeResult<LoopDriver> {
        let size = options
            .size("size", MIN_LOOP_SIZE, |minimum| format!("the smallest loop volume is {minimum}"))?
            .ok_or_else(|| options.missing(DriverKind::Loop, "size"))?;
        Ok(LoopDriver { size, usrquota: options.flag("usrquota")?, grpquota: options.flag("grpquota")? })
    }

    fn mount_options(&self) -> String {
        let wanted = [(self.usrquota, "usrquota"), (self.grpquota, "grpquota")];
        wanted.iter().filter(|(on, _)| *on).map(|(_, option)| *option).collect::<Vec<_>>().join(",")
    }
}

impl Driver for LoopDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Loop
    }

    fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("size".to_string(), self.size.to_string()),
            ("usrquota".to_string(), self.usrquota.to_string()),
            ("grpquota".to_string(), self.grpquota.to_string()),
        ])
    }

    fn create(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        make_dir(&layout.data())?;
        let image = layout.image();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&image)
            .map_err(VolumeError::io("creating image", image.display()))?;
        // set_len makes a sparse file: the host gives blocks only as the volume fills.
        file.set_len(self.size.0).map_err(VolumeError::io("sizing image", image.display()))?;
        drop(file);
        sys::make_ext4(&image)
    }

    fn activate(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        // A device left attached to this image (say, by a crash) would keep a second,
        // unsynchronised view of the file system: let it go before attaching anew.
        loopdev::detach_all(&layout.image(), DETACH_PATIENCE)?;
        let device = loopdev::attach(&layout.image(), false)?;
        sys::mount_ext4(&device.path, &layout.data(), &self.mount_options())
        // Dropping `device` closes it: the mount keeps it attached, or, if mounting
        // failed, autoclear detaches it.
    }

    fn deactivate(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        sys::unmount(&layout.data())
    }

    fn is_active(&self, layout: &VolumeLayout, mounts: &MountTable) -> bool {
        mounts.is_mount_point(&layout.data())
    }

    fn release(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        if !layout.image().exists() {
            return Ok(());
        }
        loopdev::detach_all(&layout.image(), DETACH_PATIENCE)
    }

    fn usage(&self, layout: &VolumeLayout, mounts: &MountTable) -> VolumeResult<Usage> {
        let image = layout.image();
        let allocated = std::fs::metadata(&image).map_err(VolumeError::io("measuring", image.display()))?.blocks() * 512;
        let mut usage = Usage { size_limit: Some(self.size), image_allocated: Some(Bytes(allocated)), ..Usage::default() };
        if self.is_active(layout, mounts) {
            let (_, used, available) = sys::fs_usage(&layout.data())?;
            usage.used = Some(Bytes(used));
            usage.available = Some(Bytes(available));
        }
        Ok(usage)
    }
}
