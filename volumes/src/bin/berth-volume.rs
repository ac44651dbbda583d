//! `berth-volume`: `berth volume ...` as a binary of its own, shaped like the root `berth`
//! front-end (a global `--state-dir`); the end-to-end tests run the server through it.

use berth_volumes::cli::{self, VolumeCommand};
use berth_volumes::store::DEFAULT_STATE_DIR;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "berth-volume", about = "berth's volumes: drivers, Docker volume plugin endpoint, front-end")]
struct Cli {
    /// Where berth keeps volumes and their metadata.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: VolumeCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::run_and_report(cli.command, &cli.state_dir)
}
