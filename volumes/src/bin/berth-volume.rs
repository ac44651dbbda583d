//! `berth-volume`: `berth volume ...` as a binary of its own, until the root `berth`
//! front-end carries the subcommand; the end-to-end tests run the server through it.

use berth_volumes::cli::{self, VolumeCommand};
use clap::Parser;

#[derive(Parser)]
#[command(name = "berth-volume", about = "berth's volumes: drivers, Docker volume plugin endpoint, front-end")]
struct Cli {
    #[command(subcommand)]
    command: VolumeCommand,
}

fn main() {
    if let Err(err) = cli::run(Cli::parse().command) {
        eprintln!("berth volume: {err}");
        std::process::exit(1);
    }
}
