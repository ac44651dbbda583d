//! `berth`: a minimal engine over berth's plugins. It runs CNI plugins exactly as a runtime
//! does (conflists, prevResult, cached results) and serves volumes.

mod demo;
mod net;
mod target;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "berth", version, about = "Wire Linux containers to networks and storage")]
struct Cli {
    /// Where network configuration lists (*.conflist) live.
    #[arg(long, global = true, default_value = "/etc/berth/net.d", env = "BERTH_CONFIG_DIR")]
    config_dir: PathBuf,
    /// Where berth keeps state (cached CNI results).
    #[arg(long, global = true, default_value = "/var/lib/berth", env = "BERTH_STATE_DIR")]
    state_dir: PathBuf,
    /// Directories searched for plugins; default: berth's own directory, /opt/cni/bin, /usr/lib/cni.
    #[arg(long, global = true, env = "CNI_PATH", value_delimiter = ':')]
    cni_path: Vec<PathBuf>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Net(net::NetCommand),
    /// Attach a container (netns path, netns name or PID) to a network.
    Attach(target::AttachArgs),
    /// Detach a container from a network; succeeds when it is already detached.
    Detach(target::AttachArgs),
    /// Check that an attachment is still as ADD made it (CNI CHECK through the chain).
    Check(target::AttachArgs),
    /// pipework's bridge mode: `berth pipework br0 TARGET 172.17.2.24/24@172.17.2.1`.
    Pipework(target::PipeworkArgs),
    /// Create, list, inspect, mount and remove volumes; run the Docker volume plugin endpoint.
    #[command(subcommand)]
    Volume(berth_volumes::cli::VolumeCommand),
    /// Project quotas on XFS and ext4 directories: set, get, list and clear limits.
    #[command(subcommand)]
    Quota(berth_quota::cli::QuotaCommand),
    /// Wire two sandboxes to a network and volumes, show it working, and remove everything again.
    Demo,
}

pub struct Context {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cni_path: Vec<PathBuf>,
}

impl Context {
    fn from_cli(cli: &Cli) -> Context {
        let cni_path = if cli.cni_path.is_empty() { default_cni_path() } else { cli.cni_path.clone() };
        Context { config_dir: cli.config_dir.clone(), state_dir: cli.state_dir.clone(), cni_path }
    }

    pub fn runtime(&self) -> berth_cni::runtime::Runtime {
        berth_cni::runtime::Runtime { cni_path: self.cni_path.clone(), cache_dir: self.state_dir.join("cni-cache"), host: None }
    }
}

fn default_cni_path() -> Vec<PathBuf> {
    let own = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
    own.into_iter().chain(["/opt/cni/bin", "/usr/lib/cni"].map(PathBuf::from)).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Context::from_cli(&cli);
    let outcome = match cli.command {
        Commands::Net(cmd) => net::run(&ctx, cmd),
        Commands::Attach(args) => target::attach(&ctx, &args),
        Commands::Detach(args) => target::detach(&ctx, &args),
        Commands::Check(args) => target::check(&ctx, &args),
        Commands::Pipework(args) => target::pipework(&ctx, &args),
        Commands::Volume(cmd) => return berth_volumes::cli::run_and_report(cmd, &ctx.state_dir),
        Commands::Quota(cmd) => return berth_quota::cli::run_and_report(cmd),
        Commands::Demo => demo::run(&ctx),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}
