//! `berth volume ...`: the same operations as the endpoint, on the same state directory
//! (the per-volume locks make the two safe to use at the same time). The state directory
//! comes from the caller: the `berth` front-end has a global `--state-dir`.

use crate::driver::DriverConfig;
use crate::error::{VolumeError, VolumeResult};
use crate::plugin::{self, RequestLog, ServerOptions, DEFAULT_SOCKET};
use crate::spec::{self, MountId, OptionMap, VolumeName};
use crate::store::{UnmountOutcome, VolumeStore};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        name: String,
        /// named (a directory berth manages), bind (an existing directory: -o source=DIR
        /// [-o ro]), loop (an ext4 image of a fixed size: -o size=64M [-o usrquota] [-o grpquota]),
        /// xfsquota (a directory with a project quota: -o base=DIR -o size=10G [-o inodes=N])
        /// or thin (a device-mapper thin volume: [-o size=10G] [-o fs=ext4|xfs] [-o pool=NAME]
        /// [-o from=VOLUME] [-o datadev=DEV -o metadatadev=DEV | -o loopdatasize=SIZE ...]).
        #[arg(long, short = 'd')]
        driver: Option<String>,
        /// Driver option KEY=VALUE (repeatable).
        #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// List volumes.
    Ls {
        /// Print names only.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show volumes as JSON, with their usage.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes and their data (never a bind volume's source).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Mount a volume for a holder ID and print its mount point.
    Mount {
        name: String,
        #[arg(long, default_value = "berth-cli")]
        id: String,
    },
    /// Release a holder ID's mount; the last holder unmounts the data.
    Unmount {
        name: String,
        #[arg(long, default_value = "berth-cli")]
        id: String,
    },
    /// Run the Docker volume plugin endpoint in the foreground (stops on SIGTERM).
    Serve {
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Log errors only, not every request.
        #[arg(long)]
        quiet: bool,
        /// Seconds a client may take to send a whole request; a connection idle or slow
        /// for longer is answered 408 and closed.
        #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
        request_timeout: u64,
    },
}

/// Runs one command and reports a failure on stderr as `berth volume: ...`.
pub fn run_and_report(command: VolumeCommand, state_dir: &Path) -> ExitCode {
    match run(command, state_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth volume: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one `berth volume` command on the volumes of `state_dir`, printing its result on stdout.
pub fn run(command: VolumeCommand, state_dir: &Path) -> VolumeResult<()> {
    match command {
        VolumeCommand::Create { name, driver, options } => create(state_dir, &name, driver.as_deref(), &options),
        VolumeCommand::Ls { quiet } => list(state_dir, quiet),
        VolumeCommand::Inspect { names } => inspect(state_dir, &names),
        VolumeCommand::Rm { names } => remove(state_dir, &names),
        VolumeCommand::Mount { name, id } => mount(state_dir, &name, &id),
        VolumeCommand::Unmount { name, id } => unmount(state_dir, &name, &id),
        VolumeCommand::Serve { socket, quiet, request_timeout } => {
            let request_log = if quiet { RequestLog::Failures } else { RequestLog::All };
            let request_timeout = std::time::Duration::from_secs(request_timeout);
            plugin::serve(state_dir, ServerOptions { request_log, request_timeout, ..ServerOptions::new(socket) })
        }
    }
}

fn create(state_dir: &Path, name: &str, driver: Option<&str>, options: &[String]) -> VolumeResult<()> {
    let name = VolumeName::parse(name)?;
    let options: OptionMap = options.iter().map(|o| spec::parse_option(o)).collect();
    let config = DriverConfig::from_options(&name, driver, &options)?;
    VolumeStore::open(state_dir)?.create(&name, config)?;
    println!("{name}");
    Ok(())
}

fn list(state_dir: &Path, quiet: bool) -> VolumeResult<()> {
    let volumes = VolumeStore::open(state_dir)?.list()?;
    if !quiet {
        println!("{:<8}  {:<24}  MOUNTS", "DRIVER", "VOLUME NAME");
    }
    for volume in volumes {
        if quiet {
            println!("{}", volume.name);
        } else {
            println!("{:<8}  {:<24}  {}", volume.kind(), volume.name, volume.mounts.len());
        }
    }
    Ok(())
}

fn inspect(state_dir: &Path, names: &[String]) -> VolumeResult<()> {
    let store = VolumeStore::open(state_dir)?;
    let statuses = names.iter().map(|name| store.inspect(&VolumeName::parse(name)?)).collect::<VolumeResult<Vec<_>>>()?;
    let json = serde_json::to_string_pretty(&statuses)
        .map_err(|err| VolumeError::BadRequest(format!("cannot print volume status: {err}")))?;
    println!("{json}");
    Ok(())
}

fn remove(state_dir: &Path, names: &[String]) -> VolumeResult<()> {
    let store = VolumeStore::open(state_dir)?;
    for name in names {
        store.remove(&VolumeName::parse(name)?)?;
        println!("{name}");
    }
    Ok(())
}

fn mount(state_dir: &Path, name: &str, id: &str) -> VolumeResult<()> {
    let (name, id) = (VolumeName::parse(name)?, MountId::parse(id)?);
    let mountpoint = VolumeStore::open(state_dir)?.mount(&name, &id)?;
    println!("{}", mountpoint.display());
    Ok(())
}

fn unmount(state_dir: &Path, name: &str, id: &str) -> VolumeResult<()> {
    let (name, id) = (VolumeName::parse(name)?, MountId::parse(id)?);
    let store = VolumeStore::open(state_dir)?;
    match store.unmount(&name, &id)? {
        UnmountOutcome::Released => Ok(()),
        UnmountOutcome::StillMounted { holders } => {
            eprintln!("volume {name} stays mounted for {holders} other holder(s)");
            Ok(())
        }
        UnmountOutcome::NotMounted => {
            let holders: Vec<String> = store.get(&name)?.mounts.iter().map(ToString::to_string).collect();
            Err(VolumeError::BadRequest(format!("volume {name} is not mounted for ID {id} (holders: [{}])", holders.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The shape of the root `berth` front-end: global options, then `volume <command>`.
    #[derive(Parser)]
    struct Berth {
        #[arg(long, global = true, default_value = crate::store::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(long, global = true, default_value = "/etc/berth/net.d")]
        config_dir: PathBuf,
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        #[command(subcommand)]
        Volume(VolumeCommand),
    }

    #[test]
    fn fits_under_the_root_front_end() {
        Berth::command().debug_assert();
        let parsed = Berth::try_parse_from([
            "berth",
            "volume",
            "create",
            "v1",
            "--driver",
            "loop",
            "-o",
            "size=64M",
            "--state-dir",
            "/tmp/s",
        ])
        .unwrap();
        assert_eq!(parsed.state_dir, PathBuf::from("/tmp/s"));
        let Top::Volume(VolumeCommand::Create { name, driver, options }) = parsed.command else {
            panic!("not a create command");
        };
        assert_eq!((name.as_str(), driver.as_deref(), options), ("v1", Some("loop"), vec!["size=64M".to_string()]));
        let serve = Berth::try_parse_from(["berth", "volume", "serve", "--socket", "/tmp/p.sock"]).unwrap();
        assert!(matches!(serve.command, Top::Volume(VolumeCommand::Serve { quiet: false, .. })));
    }
}
