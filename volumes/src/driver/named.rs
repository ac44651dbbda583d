//! `named`: a plain directory under berth's state root, always reachable.

use super::{make_dir, Driver, Usage, VolumeLayout};
use crate::error::VolumeResult;
use crate::spec::{Bytes, DriverKind};
use crate::sys::{self, MountTable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedDriver {}

impl Driver for NamedDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Named
    }

    fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn create(&self, layout: &VolumeLayout) -> VolumeResult<()> {
        make_dir(&layout.data())
    }

    fn activate(&self, _layout: &VolumeLayout) -> VolumeResult<()> {
        Ok(())
    }

    fn deactivate(&self, _layout: &VolumeLayout) -> VolumeResult<()> {
        Ok(())
    }

    fn mounts_on_demand(&self) -> bool {
        false
    }

    fn is_active(&self, _layout: &VolumeLayout, _mounts: &MountTable) -> bool {
        true
    }

    fn usage(&self, layout: &VolumeLayout, _mounts: &MountTable) -> VolumeResult<Usage> {
        Ok(Usage { used: Some(Bytes(sys::allocated_bytes(&layout.data())?)), ..Usage::default() })
    }
}
