//! The `fooocus` command line: `inspect` tells what a model file is.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fooocus::config::{Config, ModelKind};
use fooocus::engine::config::HeadDims;
use fooocus::engine::inspect::inspect;

#[derive(Parser)]
#[command(
    name = "fooocus",
    version,
    about = "Fooocus rebuilt in Rust: SDXL image generation"
)]
struct Cli {
    /// The configuration file (missing: the documented defaults).
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what a checkpoint is: architecture, dtype, parameters per component, missing and
    /// unused tensors. Run this when a model does not load.
    Inspect {
        /// The `.safetensors` file: a path, or a name in a checkpoint folder of the config.
        file: PathBuf,
        /// Attention head width of the networks, if the model is not standard SDXL (64).
        #[arg(long, default_value_t = 64)]
        head_dim: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Inspect { file, head_dim } => {
            let heads = HeadDims {
                clip_l: head_dim,
                clip_g: head_dim,
                unet: head_dim,
            };
            let found = match config.find_model(ModelKind::Checkpoint, &file.to_string_lossy()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match inspect(&found, heads) {
                Ok(report) => {
                    print!("{report}");
                    if report.problems.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
