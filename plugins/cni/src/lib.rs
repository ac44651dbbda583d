//! berth's CNI SDK: what every berth plugin and the `berth` front-end share.
//!
//! - [`spec`]: configurations and results of every supported cniVersion, and conversions;
//! - [`skel`]: turns CNI_* variables and stdin into a typed request, and an error into the
//!   spec's JSON and exit status;
//! - [`error`]: the error a plugin returns, with its CNI code; the kernel crates' own errors
//!   (`berth_netns`, `berth_netlink`) become one here, and nowhere else;
//! - [`exec`], [`runtime`]: runs plugin binaries as a runtime does (conflist chains);
//! - [`ipam`]: delegation to an IPAM plugin, in-process for berth's own;
//! - [`iface`]: what the plugins that create a container interface share;
//! - [`rollback`]: undoing a failed ADD, in reverse order.

pub mod error;
pub mod exec;
pub mod iface;
pub mod ipam;
pub mod rollback;
pub mod runtime;
pub mod skel;
pub mod spec;

pub use error::{CniError, CniResult, Code};
