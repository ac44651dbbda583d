//! `berth quota ...`: project quotas on directories, by hand.
//!
//! ```text
//! berth quota set DIR --size 10M [--inodes N]
//! berth quota get DIR [--json]
//! berth quota ls MOUNTPOINT [--json]
//! berth quota clear DIR
//! ```

use crate::{Bytes, Control, Limits, ProjectQuota, QuotaResult};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Subcommand)]
pub enum QuotaCommand {
    /// Give DIR a project of its own with these limits; what is in DIR and what is made
    /// there later counts towards them. The file system must be XFS or ext4 mounted with
    /// -o prjquota.
    Set {
        dir: PathBuf,
        /// Most bytes DIR may hold (64M, 1G, ...; 0: no limit).
        #[arg(long, value_parser = parse_size)]
        size: Bytes,
        /// Most files and directories DIR may hold.
        #[arg(long)]
        inodes: Option<u64>,
    },
    /// Show DIR's project, limits and usage.
    Get {
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the projects of the file system mounted at MOUNTPOINT, with their directories.
    Ls {
        mountpoint: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove DIR's limits and give it back to project 0, freeing its project ID.
    Clear { dir: PathBuf },
}

fn parse_size(text: &str) -> Result<Bytes, String> {
    Bytes::parse(text)
}

/// Runs one command and reports a failure on stderr as `berth quota: ...`.
pub fn run_and_report(command: QuotaCommand) -> ExitCode {
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth quota: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one `berth quota` command, printing its result on stdout.
pub fn run(command: QuotaCommand) -> QuotaResult<()> {
    match command {
        QuotaCommand::Set { dir, size, inodes } => {
            let limits = Limits { size: (size.0 > 0).then_some(size), inodes };
            let project = Control::for_path(&dir)?.set(&dir, limits)?;
            let inodes = inodes.map_or("no inode limit".to_string(), |n| format!("{n} inodes"));
            let size = limits.size.map_or("no size limit".to_string(), |s| format!("size {s}"));
            println!("{}: project {project}, {size}, {inodes}", dir.display());
        }
        QuotaCommand::Get { dir, json } => {
            let quota = Control::for_path(&dir)?.get(&dir)?;
            print_quotas(&[quota], json);
        }
        QuotaCommand::Ls { mountpoint, json } => {
            let quotas = Control::for_path(&mountpoint)?.list()?;
            print_quotas(&quotas, json);
        }
        QuotaCommand::Clear { dir } => match Control::for_path(&dir)?.clear(&dir)? {
            Some(project) => println!("{}: project {project} freed", dir.display()),
            None => println!("{}: had no project", dir.display()),
        },
    }
    Ok(())
}

fn print_quotas(quotas: &[ProjectQuota], json: bool) {
    if json {
        // Serialising plain structs of numbers and paths cannot fail.
        println!("{}", serde_json::to_string_pretty(quotas).unwrap_or_default());
        return;
    }
    println!("{:<10}  {:>8}  {:>8}  {:>8}  {:>8}  PATH", "PROJECT", "USED", "SIZE", "INODES", "MAX");
    for quota in quotas {
        let size = quota.size_limit.map_or("-".to_string(), |s| s.to_string());
        let max = quota.inode_limit.map_or("-".to_string(), |n| n.to_string());
        let path = quota.path.as_ref().map_or("-".to_string(), |p| p.display().to_string());
        println!("{:<10}  {:>8}  {:>8}  {:>8}  {:>8}  {path}", quota.project, quota.used, size, quota.inodes, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The shape of the root `berth` front-end: `berth quota <command>`.
    #[derive(Parser)]
    struct Berth {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        #[command(subcommand)]
        Quota(QuotaCommand),
    }

    #[test]
    fn fits_under_the_root_front_end() {
        Berth::command().debug_assert();
        let parsed = Berth::try_parse_from(["berth", "quota", "set", "/srv/v", "--size", "10M", "--inodes", "100"]).unwrap();
        let Top::Quota(QuotaCommand::Set { dir, size, inodes }) = parsed.command else { panic!("not set") };
        assert_eq!((dir, size, inodes), (PathBuf::from("/srv/v"), Bytes(10 << 20), Some(100)));
        let ls = Berth::try_parse_from(["berth", "quota", "ls", "/srv", "--json"]).unwrap();
        assert!(matches!(ls.command, Top::Quota(QuotaCommand::Ls { json: true, .. })));
    }

    #[test]
    fn bad_sizes_and_missing_sizes_are_refused_by_the_parser() {
        let err = Berth::try_parse_from(["berth", "quota", "set", "/srv/v", "--size", "10Q"]).err().unwrap().to_string();
        assert!(err.contains("10Q") && err.contains("unit"), "{err}");
        assert!(Berth::try_parse_from(["berth", "quota", "set", "/srv/v"]).is_err(), "--size is required");
    }
}
