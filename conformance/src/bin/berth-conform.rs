//! berth-conform: a CNI conformance tester for any plugin binary.
//!
//!   berth-conform PLUGIN... [--config FILE] [--versions 1.0.0,1.1.0] [--main PLUGIN]
//!                 [--format text|json|junit]
//!
//! Runs each plugin in throwaway network namespaces (never the machine's own), reports every
//! check as pass, fail or skip with its reason and SPEC.md section, and exits 1 on any
//! failure, 2 on a usage error. Needs root.

use berth_conformance::conform::report::{render, Format};
use berth_conformance::conform::{conform, Options};
use std::path::PathBuf;

const USAGE: &str = "usage: berth-conform PLUGIN... [--config FILE] [--versions LIST] [--main PLUGIN] [--format text|json|junit]";

fn main() {
    let (plugins, opts, format) = match parse(std::env::args().skip(1).collect()) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("berth-conform: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    berth_conformance::require_root();
    let reports: Vec<_> = plugins.iter().map(|p| conform(p, &opts)).collect();
    print!("{}", render(&reports, format));
    std::process::exit(if reports.iter().any(|r| r.failed()) { 1 } else { 0 });
}

fn parse(args: Vec<String>) -> Result<(Vec<PathBuf>, Options, Format), String> {
    let mut plugins = Vec::new();
    let mut opts = Options::default();
    let mut format = Format::Text;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--config" => {
                let file = value("--config")?;
                let text = std::fs::read(&file).map_err(|e| format!("read {file}: {e}"))?;
                opts.config = Some(serde_json::from_slice(&text).map_err(|e| format!("{file} is not JSON: {e}"))?);
            }
            "--versions" => opts.versions = Some(value("--versions")?.split(',').map(str::to_string).collect()),
            "--main" => opts.main = Some(PathBuf::from(value("--main")?)),
            "--format" => {
                let f = value("--format")?;
                format = Format::parse(&f).ok_or_else(|| format!("unknown format {f:?}"))?;
            }
            "-h" | "--help" => return Err("help".into()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            plugin => plugins.push(PathBuf::from(plugin)),
        }
    }
    if plugins.is_empty() {
        return Err("no plugin given".into());
    }
    Ok((plugins, opts, format))
}
