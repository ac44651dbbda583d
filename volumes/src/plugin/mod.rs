//! The Docker volume plugin endpoint: [`http`] parsing, the [`api`] protocol, the [`server`].

pub mod api;
pub mod http;
pub mod server;

pub use server::{RequestLog, Server, ServerOptions, StopHandle, DEFAULT_SOCKET};

use crate::error::{VolumeError, VolumeResult};
use crate::logging::log;
use crate::store::VolumeStore;
use nix::sys::signal::{SigSet, Signal};
use std::path::Path;

/// `berth volume serve`: reconciles the state with the kernel, then serves in the
/// foreground until SIGTERM or SIGINT, and stops cleanly (requests under way finish,
/// the socket is removed; volumes stay mounted for the containers using them).
pub fn serve(state_dir: &Path, options: ServerOptions) -> VolumeResult<()> {
    // Blocked before any thread starts, so every thread inherits the mask and only the
    // waiting thread below ever sees these signals.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(VolumeError::io("blocking signals in", "berth volume serve"))?;

    raise_open_file_limit();
    let store = VolumeStore::open(state_dir)?;
    let report = store.reconcile()?;
    log(format_args!(
        "state {}: {} volume(s); remounted [{}]; unmounted [{}]; discarded [{}]; resumed [{}]",
        state_dir.display(),
        report.volumes,
        join(&report.remounted),
        join(&report.unmounted),
        join(&report.discarded),
        join(&report.resumed),
    ));
    for (what, err) in &report.failures {
        log(format_args!("could not reconcile {what}: {err}"));
    }

    let server = Server::bind(store, options.clone())?;
    let stop = server.stop_handle();
    std::thread::Builder::new()
        .name("berth-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                log(format_args!("{signal} received: stopping"));
            }
            stop.stop();
        })
        .map_err(VolumeError::io("starting the signal thread of", "berth volume serve"))?;
    log(format_args!("listening on {}", options.socket.display()));
    server.run();
    log(format_args!("stopped"));
    Ok(())
}

/// Raises the soft limit on open files to the hard one: a service manager's usual soft
/// limit (1024) is below what the cap on connections needs, two descriptors each.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write one `struct rlimit` we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
