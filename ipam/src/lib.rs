//! berth's IPAM plugins:
//!
//! - [`host_local::HostLocal`] (`berth-host-local`): addresses from ranges, recorded per
//!   network on the host's disk, compatible with the reference host-local;
//! - [`static_ipam::Static`] (`berth-static`): the addresses the configuration names.
//!
//! Modules: [`config`] (host-local's configuration), [`store`] (the on-disk store and its
//! lock), [`allocator`] (which address a container gets).

mod addr;
pub mod allocator;
pub mod config;
pub mod host_local;
pub mod static_ipam;
pub mod store;

/// berth's IPAM plugins by `ipam.type`, for main plugins that run them in-process
/// (`berth_cni::ipam::Ipam`).
pub const BUILTINS: berth_cni::ipam::Builtins =
    &[("berth-host-local", &host_local::HostLocal), ("berth-static", &static_ipam::Static)];

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("berth-ipam-unit-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

