//! Fuzzing every input surface of berth on the stable toolchain.
//!
//! - [`engine`]: the mutation engine `cargo test` runs, deterministic per seed and bounded in
//!   time (`BERTH_FUZZ_SECS`, default a few seconds per target);
//! - [`mutate`]: byte mutations and structure-aware JSON mutations;
//! - [`targets`]: one per input surface (CNI environment and configs, results, IPAM, the
//!   volume endpoint, driver options, units, netlink and firewall replies, DNS and DHCP);
//! - [`examples`]: real configurations of every plugin, also the seeds of the black-box runs
//!   (`tests/blackbox.rs`).
//!
//! `berth-fuzz` runs a target for longer, and, built with `cargo afl build --features afl`,
//! under AFL++'s coverage-guided engine (RELIABILITY.md, "Fuzzing").

pub mod engine;
pub mod examples;
pub mod mutate;
pub mod targets;

pub use engine::{check, fuzz, Budget, Report, Target};
