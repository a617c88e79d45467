//! `fooocus inspect FILE`: what a model file is, and why it would not load.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fooocus::config::{Config, ModelKind};
use fooocus::nets::sdxl::inspect::inspect;
use fooocus::nets::sdxl::shapes::HeadDims;

#[derive(Args)]
pub struct InspectArgs {
    /// The `.safetensors` file: a path, or a name in a checkpoint folder of the config.
    file: PathBuf,
    /// Attention head width of the networks, if the model is not standard SDXL (64).
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
}

/// Exit 0 when the file loads, 2 when it cannot be used, 1 when it cannot be read.
pub fn run(args: InspectArgs, config: &Config) -> ExitCode {
    let heads = HeadDims {
        clip_l: args.head_dim,
        clip_g: args.head_dim,
        unet: args.head_dim,
    };
    let found = match config.find_model(ModelKind::Checkpoint, &args.file.to_string_lossy()) {
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
