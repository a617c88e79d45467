//! `fooocus worker --broker URL`: a host that runs the jobs a `fooocus --broker URL` server puts
//! on Redis, with its own models, until Ctrl+C (its running job is then taken over by another
//! worker).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::broker::{run_host, HostOptions};
use crate::cli::ComputeArgs;
use crate::config::{Config, DEFAULT_PRESET};
use crate::hub::HubClient;
use crate::pipeline::styles::StyleLibrary;
use crate::runtime::describe;

/// Flags of `fooocus worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The Redis broker the server uses, `redis://HOST:6379/0`.
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// This worker's name among the workers (default: host name and process id).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds a job may go without its worker renewing its claim before another worker takes
    /// it over (a dead host's job waits this long).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub visibility_timeout: u64,
    /// The preset (from config.toml) that fills what a job leaves out (jobs carry every field).
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// A models folder with `checkpoints/` and `loras/` inside (replaces the config's folders).
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Do not download a missing upscaler on first use.
    #[arg(long)]
    pub no_download: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Runs the worker until Ctrl+C.
pub fn run(args: WorkerArgs, mut config: Config) -> ExitCode {
    match prepare(&args, &mut config) {
        Ok(options) => serve(options),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn prepare(args: &WorkerArgs, config: &mut Config) -> Result<HostOptions, String> {
    if let Some(dir) = &args.models_dir {
        config.paths.checkpoints = vec![dir.join("checkpoints")];
        config.paths.loras = vec![dir.join("loras")];
    }
    let preset = config
        .preset(&args.preset)
        .map_err(|e| e.to_string())?
        .clone();
    let placement = args.compute.placement().map_err(|e| e.to_string())?;
    println!(
        "computing on {} in {}",
        describe(&placement.device),
        placement.precision.dtype_on(&placement.device).as_str()
    );
    let styles = StyleLibrary::load(&config.paths.styles).map_err(|e| e.to_string())?;
    let host = gethostname::gethostname().to_string_lossy().to_string();
    Ok(HostOptions {
        broker: args.broker.clone(),
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        config: config.clone(),
        preset,
        styles,
        placement,
        hub: (!args.no_download).then(|| HubClient::from_env(None)),
        visibility: Duration::from_secs(args.visibility_timeout),
        pipeline: crate::jobs::local_pipeline(),
    })
}

fn serve(options: HostOptions) -> ExitCode {
    let runtime = match crate::cli::async_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = options.name.clone();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match runtime.block_on(run_host(options, stop)) {
        Ok(()) => {
            println!("worker {name} stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
