//! The `fooocus` command line: one subcommand per module in `commands`.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fooocus::config::Config;

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
    Inspect(commands::inspect::InspectArgs),
    /// Generate images from the command line with the full Fooocus pipeline.
    Generate(Box<commands::generate::GenerateArgs>),
    /// Download the models a preset needs (resumable, verified).
    Download(commands::download::DownloadArgs),
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
        Command::Inspect(args) => commands::inspect::run(args, &config),
        Command::Generate(args) => commands::generate::run(*args, config),
        Command::Download(args) => commands::download::run(args, &config),
    }
}
