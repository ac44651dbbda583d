//! berth's volumes: the `bind`, `named`, `loop`, `xfsquota` (a directory with a project
//! quota, through berth-quota) and `thin` (a device-mapper thin volume) drivers, the store
//! that names, locks, persists and reference-counts volumes, the Docker volume plugin
//! endpoint, and the `berth volume` front-end.
//!
//! - [`spec`]: names, mount IDs, sizes and driver options, checked;
//! - [`driver`]: how each kind of volume stores its data;
//! - [`store`]: the volumes of a state directory, mounts counted by mount ID, reconciliation;
//! - [`plugin`]: the HTTP endpoint on a unix socket;
//! - [`cli`]: `berth volume create|ls|inspect|rm|mount|unmount|serve`;
//! - [`sys`]: mounts, loop devices, mkfs, disk usage.

pub mod cli;
pub mod driver;
pub mod error;
mod logging;
pub mod plugin;
pub mod spec;
pub mod store;
pub mod sys;
mod timestamp;

pub use error::{VolumeError, VolumeResult};
pub use store::{Volume, VolumeStore};
