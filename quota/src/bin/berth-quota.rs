//! `berth-quota`: `berth quota ...` as a binary of its own, for the tests and for machines
//! without the front-end.

use berth_quota::cli::{self, QuotaCommand};
use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "berth-quota", about = "Project quotas on XFS and ext4 directories")]
struct Cli {
    #[command(subcommand)]
    command: QuotaCommand,
}

fn main() -> ExitCode {
    cli::run_and_report(Cli::parse().command)
}
