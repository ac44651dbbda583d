//! `berth`: a minimal engine over berth's plugins. It runs CNI plugins exactly as a runtime
//! does (conflists, prevResult, cached results) and serves volumes.

mod containers;
mod demo;
mod error;
mod firewall;
#[cfg(test)]
mod fuzz_cli;
mod net;
mod netconf;
mod pipework;
mod ps;
mod rate;
mod target;

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "berth", version, about = "Wire Linux containers to networks and storage")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

/// Where berth keeps its state; shared by networks and volumes.
#[derive(Args, Clone)]
struct StateOptions {
    /// Where berth keeps state (cached CNI results, volumes).
    #[arg(long, global = true, default_value = "/var/lib/berth", env = "BERTH_STATE_DIR")]
    state_dir: PathBuf,
}

/// What the network commands need to run plugins as a runtime does.
#[derive(Args, Clone)]
struct NetworkOptions {
    /// Where network configuration lists (*.conflist) live.
    #[arg(long, global = true, default_value = "/etc/berth/net.d", env = "BERTH_CONFIG_DIR")]
    config_dir: PathBuf,
    #[command(flatten)]
    state: StateOptions,
    /// Directories searched for plugins; default: berth's own directory, /opt/cni/bin, /usr/lib/cni.
    #[arg(long, global = true, env = "CNI_PATH", value_delimiter = ':')]
    cni_path: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Commands {
    /// Create, list, inspect and remove networks.
    Net {
        #[command(flatten)]
        options: NetworkOptions,
        #[command(subcommand)]
        command: net::NetCommand,
    },
    /// Attach a container (netns path, netns name, PID, Docker or podman container) to a network.
    Attach {
        #[command(flatten)]
        options: NetworkOptions,
        #[command(flatten)]
        args: target::AttachArgs,
    },
    /// Detach a container from a network; succeeds when it is already detached.
    Detach {
        #[command(flatten)]
        options: NetworkOptions,
        #[command(flatten)]
        args: target::AttachArgs,
    },
    /// Check that an attachment is still as ADD made it (CNI CHECK through the chain).
    Check {
        #[command(flatten)]
        options: NetworkOptions,
        #[command(flatten)]
        args: target::AttachArgs,
    },
    /// pipework's command lines: wire a container to a bridge, OVS, a NIC or a VLAN by hand.
    Pipework {
        #[command(flatten)]
        options: NetworkOptions,
        #[command(flatten)]
        args: pipework::PipeworkArgs,
    },
    /// List attachments: network, container, interface, addresses, published ports.
    Ps {
        #[command(flatten)]
        options: NetworkOptions,
        #[command(flatten)]
        args: ps::PsArgs,
    },
    /// Undo the attachments of containers that are gone, and GC every network's plugins.
    Gc {
        #[command(flatten)]
        options: NetworkOptions,
    },
    /// Create, list, inspect, mount and remove volumes; run the Docker volume plugin endpoint.
    Volume {
        #[command(flatten)]
        state: StateOptions,
        #[command(subcommand)]
        command: berth_volumes::cli::VolumeCommand,
    },
    /// Project quotas on XFS and ext4 directories: set, get, list and clear limits.
    #[command(subcommand)]
    Quota(berth_quota::cli::QuotaCommand),
    /// berth's firewall state (masquerade, published ports, isolation) for every live
    /// attachment, put back after `nft flush ruleset` or a firewall reload.
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// Check CNI plugin binaries against the spec (runs berth-conform; see CONFORMANCE.md).
    #[command(disable_help_flag = true)]
    Conform {
        /// berth-conform's arguments: PLUGIN... [--config FILE] [--versions LIST] [--format text|json|junit]
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Print a shell completion script: `berth completion bash > /etc/bash_completion.d/berth`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print berth's man page (roff): `berth man > /usr/local/share/man/man1/berth.1`.
    Man,
    /// Wire two sandboxes to a network and volumes, show it working, and remove everything again.
    Demo {
        #[command(flatten)]
        options: NetworkOptions,
    },
}

#[derive(Subcommand)]
enum FirewallCommand {
    /// Add back every live attachment's entries; what is there stays (running it twice changes nothing).
    Restore {
        #[command(flatten)]
        options: NetworkOptions,
    },
}

pub struct Context {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cni_path: Vec<PathBuf>,
}

impl Context {
    fn new(options: NetworkOptions) -> Context {
        let cni_path = if options.cni_path.is_empty() { default_cni_path() } else { options.cni_path };
        Context { config_dir: options.config_dir, state_dir: options.state.state_dir, cni_path }
    }

    pub fn runtime(&self) -> berth_cni::runtime::Runtime {
        berth_cni::runtime::Runtime { cni_path: self.cni_path.clone(), cache_dir: self.state_dir.join("cni-cache"), host: None }
    }
}

fn default_cni_path() -> Vec<PathBuf> {
    let own = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
    own.into_iter().chain(["/opt/cni/bin", "/usr/lib/cni"].map(PathBuf::from)).collect()
}

/// `berth conform ARGS`: berth-conform, from next to this binary or PATH, with its exit status.
fn conform(args: &[String]) -> ExitCode {
    let beside = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("berth-conform"))).filter(|p| p.is_file());
    let Some(program) = beside.or_else(|| berth_util::tool::find("berth-conform")) else {
        eprintln!("berth: berth-conform is not installed next to berth or in PATH");
        return ExitCode::from(error::exit::FAILED);
    };
    match std::process::Command::new(program).args(args).status() {
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("berth: cannot run berth-conform: {e}");
            ExitCode::from(error::exit::FAILED)
        }
    }
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Commands::Net { options, command } => net::run(&Context::new(options), command),
        Commands::Attach { options, args } => target::attach(&Context::new(options), &args),
        Commands::Detach { options, args } => target::detach(&Context::new(options), &args),
        Commands::Check { options, args } => target::check(&Context::new(options), &args),
        Commands::Pipework { options, args } => pipework::run(&Context::new(options), &args),
        Commands::Ps { options, args } => ps::ps(&Context::new(options), &args),
        Commands::Gc { options } => ps::gc(&Context::new(options)),
        Commands::Volume { state, command } => return berth_volumes::cli::run_and_report(command, &state.state_dir),
        Commands::Quota(command) => return berth_quota::cli::run_and_report(command),
        Commands::Demo { options } => demo::run(&Context::new(options)),
        Commands::Firewall(FirewallCommand::Restore { options }) => firewall::restore(&Context::new(options)),
        Commands::Conform { args } => return conform(&args),
        Commands::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut std::io::stdout());
            Ok(())
        }
        Commands::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(error::BerthError::io("write the man page")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {}", e.report());
            e.exit_code()
        }
    }
}
