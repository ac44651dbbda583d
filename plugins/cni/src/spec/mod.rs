//! CNI spec types: network configurations, results in every supported version, and the conversions.

mod config;
mod result;
mod version;

pub use config::{decode_plugin_conf, ConfList, IpamConf, NetConf, PortMapping, ValidAttachment, VALID_ATTACHMENTS};
pub use result::{Dns, Interface, IpConfig, Route, RunResult};
pub use version::{Version, LATEST, SUPPORTED};
