//! `berth volume ...`: the same operations as the endpoint, on the same state directory
//! (the per-volume locks make the two safe to use at the same time).

use crate::error::{VolumeError, VolumeResult};
use crate::plugin::{self, RequestLog, ServerOptions, DEFAULT_SOCKET};
use crate::spec::{self, MountId, VolumeName};
use crate::store::{UnmountOutcome, VolumeStore, DEFAULT_STATE_DIR};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// Where berth keeps volumes and their metadata.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        name: String,
        /// named (a directory berth manages), bind (an existing directory: -o source=DIR
        /// [-o ro]) or loop (an ext4 image of a fixed size: -o size=64M [-o usrquota] [-o grpquota]).
        #[arg(long, short = 'd')]
        driver: Option<String>,
        /// Driver option KEY=VALUE (repeatable).
        #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE")]
        options: Vec<String>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List volumes.
    Ls {
        /// Print names only.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show volumes as JSON, with their usage.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Remove volumes and their data (never a bind volume's source).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Mount a volume for a holder ID and print its mount point.
    Mount {
        name: String,
        #[arg(long, default_value = "berth-cli")]
        id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Release a holder ID's mount; the last holder unmounts the data.
    Unmount {
        name: String,
        #[arg(long, default_value = "berth-cli")]
        id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Run the Docker volume plugin endpoint in the foreground (stops on SIGTERM).
    Serve {
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Log errors only, not every request.
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        state: StateArgs,
    },
}

/// Runs one `berth volume` command, printing its result on stdout.
pub fn run(command: VolumeCommand) -> VolumeResult<()> {
    match command {
        VolumeCommand::Create { name, driver, options, state } => {
            let name = VolumeName::parse(&name)?;
            let options: BTreeMap<String, String> = options.iter().map(|o| spec::parse_option(o)).collect();
            let config = spec::driver_config(&name, driver.as_deref(), &options)?;
            VolumeStore::open(&state.state_dir)?.create(&name, config)?;
            println!("{name}");
        }
        VolumeCommand::Ls { quiet, state } => {
            let volumes = VolumeStore::open(&state.state_dir)?.list()?;
            if !quiet {
                println!("{:<8}  {:<24}  {}", "DRIVER", "VOLUME NAME", "MOUNTS");
            }
            for volume in volumes {
                if quiet {
                    println!("{}", volume.name);
                } else {
                    println!("{:<8}  {:<24}  {}", volume.kind(), volume.name, volume.mounts.len());
                }
            }
        }
        VolumeCommand::Inspect { names, state } => {
            let store = VolumeStore::open(&state.state_dir)?;
            let statuses = names
                .iter()
                .map(|name| store.inspect(&VolumeName::parse(name)?))
                .collect::<VolumeResult<Vec<_>>>()?;
            let json = serde_json::to_string_pretty(&statuses)
                .map_err(|err| VolumeError::BadRequest(format!("cannot print volume status: {err}")))?;
            println!("{json}");
        }
        VolumeCommand::Rm { names, state } => {
            let store = VolumeStore::open(&state.state_dir)?;
            for name in names {
                store.remove(&VolumeName::parse(&name)?)?;
                println!("{name}");
            }
        }
        VolumeCommand::Mount { name, id, state } => {
            let (name, id) = (VolumeName::parse(&name)?, MountId::parse(&id)?);
            let mountpoint = VolumeStore::open(&state.state_dir)?.mount(&name, &id)?;
            println!("{}", mountpoint.display());
        }
        VolumeCommand::Unmount { name, id, state } => {
            let (name, id) = (VolumeName::parse(&name)?, MountId::parse(&id)?);
            let store = VolumeStore::open(&state.state_dir)?;
            match store.unmount(&name, &id)? {
                UnmountOutcome::Released => {}
                UnmountOutcome::StillMounted { holders } => {
                    eprintln!("volume {name} stays mounted for {holders} other holder(s)")
                }
                UnmountOutcome::NotMounted => {
                    let holders: Vec<String> = store.get(&name)?.mounts.iter().map(ToString::to_string).collect();
                    return Err(VolumeError::BadRequest(format!(
                        "volume {name} is not mounted for ID {id} (holders: [{}])",
                        holders.join(", ")
                    )));
                }
            }
        }
        VolumeCommand::Serve { socket, quiet, state } => {
            let request_log = if quiet { RequestLog::Failures } else { RequestLog::All };
            let options = ServerOptions { request_log, ..ServerOptions::new(socket) };
            plugin::serve(&state.state_dir, options)?;
        }
    }
    Ok(())
}
