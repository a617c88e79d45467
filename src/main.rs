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
    about = "Fooocus rebuilt in Rust: SDXL image generation",
    long_about = "Fooocus rebuilt in Rust: SDXL image generation. With no subcommand it serves the browser UI on 127.0.0.1:7865."
)]
struct Cli {
    /// The configuration file (missing: the documented defaults).
    #[arg(
        long,
        global = true,
        env = "FOOOCUS_CONFIG",
        default_value = "config.toml"
    )]
    config: PathBuf,
    /// Flags of the server (no subcommand).
    #[command(flatten)]
    serve: fooocus::cli::serve::ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Serve the browser UI and the HTTP/WebSocket API (the default).
    Serve(fooocus::cli::serve::ServeArgs),
    /// Run the jobs a `fooocus --broker URL` server puts on Redis, on this host's models.
    Worker(fooocus::cli::worker::WorkerArgs),
    /// Time the networks (UNet step with CFG, text encoders, VAE decode, a generation): median
    /// seconds, peak RSS and load average.
    Bench(fooocus::bench::BenchArgs),
}

fn main() -> ExitCode {
    fooocus::kernels::memory::reuse_freed_memory();
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
        Some(Command::Bench(args)) => fooocus::bench::main(&args),
        Some(Command::Inspect(args)) => commands::inspect::run(args, &config),
        Some(Command::Generate(args)) => commands::generate::run(*args, config),
        Some(Command::Download(args)) => commands::download::run(args, &config),
        Some(Command::Serve(args)) => fooocus::cli::serve::serve(args, config),
        Some(Command::Worker(args)) => fooocus::cli::worker::run(args, config),
        None => fooocus::cli::serve::serve(cli.serve, config),
    }
}
