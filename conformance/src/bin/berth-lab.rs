//! berth-lab: runs a command as root under Debian's stock kernel in a qemu VM (the kernel
//! lab), with the host's files visible read-only under a throwaway overlay.
//!
//!   berth-lab [--timeout SECS] [--console] [--env K=V]... -- CMD ARGS...
//!   berth-lab --prepare          (fetch and cache the kernel only)
//!
//! Prints the command's stdout and stderr and exits with its status (125 for lab failures).
//! `BERTH_LAB_KEEP=1` keeps the run's results folder under target/kernel-lab/runs/.

use berth_conformance::lab::Lab;
use std::io::Write;
use std::time::Duration;

fn usage() -> ! {
    eprintln!("usage: berth-lab [--timeout SECS] [--console] [--env K=V]... -- CMD ARGS...\n       berth-lab --prepare");
    std::process::exit(125);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut timeout, mut console, mut prepare, mut env) = (None, false, false, Vec::new());
    let mut argv = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => {
                argv.extend(args.by_ref());
                break;
            }
            "--timeout" => {
                let secs = args.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| usage());
                timeout = Some(Duration::from_secs(secs));
            }
            "--console" => console = true,
            "--prepare" => prepare = true,
            "--env" => {
                let kv = args.next().unwrap_or_else(|| usage());
                let (k, v) = kv.split_once('=').unwrap_or_else(|| usage());
                env.push((k.to_string(), v.to_string()));
            }
            _ => usage(),
        }
    }
    let lab = Lab::ensure().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(125);
    });
    if prepare {
        println!("kernel {} ready: {}", lab.kernel.version, lab.kernel.vmlinuz.display());
        return;
    }
    if argv.is_empty() {
        usage();
    }
    let mut cmd = lab.command(&argv);
    for (k, v) in &env {
        cmd = cmd.env(k, v);
    }
    if let Some(t) = timeout {
        cmd = cmd.timeout(t);
    }
    match cmd.run() {
        Ok(out) => {
            if console {
                eprintln!("{}", out.console);
            }
            let _ = std::io::stdout().write_all(out.stdout.as_bytes());
            let _ = std::io::stderr().write_all(out.stderr.as_bytes());
            let boot = out.booted_after.map(|b| format!(", command started at {:.1}s", b.as_secs_f64())).unwrap_or_default();
            eprintln!("berth-lab: exit status {} after {:.1}s{boot}", out.status, out.elapsed.as_secs_f64());
            std::process::exit(out.status.clamp(0, 255));
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(125);
        }
    }
}
