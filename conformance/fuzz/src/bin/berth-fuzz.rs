//! `berth-fuzz`: the fuzz targets outside `cargo test`.
//!
//! ```text
//! berth-fuzz list
//! berth-fuzz run TARGET [SECONDS]        the mutation engine, as long as asked (default 120)
//! berth-fuzz seeds TARGET DIR            the seeds and corpus as files (AFL++'s -i)
//! berth-fuzz replay TARGET FILE...       runs inputs (a finding, AFL++'s crashes), timed
//! berth-fuzz afl TARGET                  under afl-fuzz (built with `cargo afl build --features afl`)
//! berth-fuzz capture-netlink DIR         real rtnetlink replies of this namespace, as seeds
//! ```

use berth_fuzz::engine::{fuzz, seeds_of, Budget};
use berth_fuzz::{targets, Target};
use std::process::ExitCode;

mod capture;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match words.as_slice() {
        ["list"] => {
            targets::all().iter().for_each(|t| println!("{}", t.name));
            Ok(())
        }
        ["run", name, rest @ ..] => run(name, rest.first().and_then(|s| s.parse().ok()).unwrap_or(120.0)),
        ["seeds", name, dir] => write_seeds(name, dir),
        ["replay", name, files @ ..] => replay(name, files),
        ["afl", name] => afl(name),
        ["capture-netlink", dir] => capture::netlink(std::path::Path::new(dir)),
        _ => Err("usage: berth-fuzz list | run TARGET [SECONDS] | seeds TARGET DIR | replay TARGET FILE... | afl TARGET | capture-netlink DIR"
            .into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("berth-fuzz: {message}");
            ExitCode::FAILURE
        }
    }
}

fn target(name: &str) -> Result<Target, String> {
    targets::find(name).ok_or_else(|| format!("no target {name} (berth-fuzz list)"))
}

fn run(name: &str, secs: f64) -> Result<(), String> {
    let target = target(name)?;
    let budget = Budget { time: std::time::Duration::from_secs_f64(secs), ..Budget::from_env(secs) };
    let report = fuzz(&target, budget).map_err(|finding| finding.to_string())?;
    println!("{name}: {}", report.summary(budget.seed));
    Ok(())
}

fn write_seeds(name: &str, dir: &str) -> Result<(), String> {
    let target = target(name)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {dir}: {e}"))?;
    for (i, seed) in seeds_of(&target).iter().enumerate() {
        let path = std::path::Path::new(dir).join(format!("seed-{i:03}"));
        std::fs::write(&path, seed).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn replay(name: &str, files: &[&str]) -> Result<(), String> {
    let target = target(name)?;
    for file in files {
        let input = std::fs::read(file).map_err(|e| format!("read {file}: {e}"))?;
        let started = std::time::Instant::now();
        let outcome = berth_fuzz::engine::run_one(&target, &input).map_err(|finding| finding.to_string())?;
        println!("{file}: {} bytes, {} in {:?}", input.len(), if outcome { "accepted" } else { "refused" }, started.elapsed());
    }
    Ok(())
}

#[cfg(feature = "afl")]
fn afl(name: &str) -> Result<(), String> {
    let target = target(name)?;
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
    Ok(())
}

#[cfg(not(feature = "afl"))]
fn afl(_: &str) -> Result<(), String> {
    Err("built without AFL++: cargo afl build --features afl -p berth-fuzz --bin berth-fuzz".into())
}
