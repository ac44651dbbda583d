//! Every fuzz target, by input surface. The `berth` front-end's CLI targets live in its own
//! crate (`src/fuzz_cli.rs`), since its parsers are a binary's.

mod cni;
mod kernel;
mod units;
mod volumes;
mod wire;

use crate::engine::Target;

/// All targets, in the order the tests and `berth-fuzz list` show them.
pub fn all() -> Vec<Target> {
    let mut targets = cni::targets();
    targets.extend(volumes::targets());
    targets.extend(units::targets());
    targets.extend(kernel::targets());
    targets.extend(wire::targets());
    targets
}

/// The target called `name`.
pub fn find(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}
