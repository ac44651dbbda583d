//! berth's CNI SDK: what every berth plugin and the `berth` front-end share.
//!
//! - [`spec`]: configurations and results of every supported cniVersion, and conversions;
//! - [`skel`]: turns CNI_* variables and stdin into a typed request, and an error into the
//!   spec's JSON and exit status;
//! - [`exec`]: runs a plugin binary as a runtime does (IPAM delegation, conflist chains);
//! - [`netns`], [`netlink`], [`sysctl`]: the kernel side.

pub mod error;
pub mod exec;
pub mod firewall;
pub mod host;
pub mod iface;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod none;
pub mod runtime;
pub mod skel;
pub mod spec;
pub mod sysctl;

pub use error::{CniError, CniResult, Code};
