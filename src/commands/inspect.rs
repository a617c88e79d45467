//! `fooocus inspect FILE`: what a model file is, and why it would not load.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fooocus::config::{Config, HeadDimsConfig, ModelKind};
use fooocus::nets::sdxl::inspect::inspect;
use fooocus::nets::sdxl::shapes::HeadDims;

#[derive(Args)]
pub struct InspectArgs {
    /// The `.safetensors` file: a path, or a name in a checkpoint folder of the config.
    file: PathBuf,
    /// Attention head sizes, when the model is not standard SDXL: `clip_l=8,clip_g=12,unet=16`
    /// (any subset). Unset networks take the config's `[head_dims."FILE"]`, else 64.
    #[arg(long, value_parser = parse_head_dims)]
    head_dims: Option<HeadDimsOverride>,
}

/// Head sizes given on the command line; `None` keeps the config's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadDimsOverride {
    clip_l: Option<usize>,
    clip_g: Option<usize>,
    unet: Option<usize>,
}

impl HeadDimsOverride {
    fn over(self, base: HeadDimsConfig) -> HeadDims {
        HeadDims {
            clip_l: self.clip_l.unwrap_or(base.clip_l),
            clip_g: self.clip_g.unwrap_or(base.clip_g),
            unet: self.unet.unwrap_or(base.unet),
        }
    }
}

/// Parses `clip_l=8,clip_g=12,unet=16` (any subset, any order).
fn parse_head_dims(text: &str) -> Result<HeadDimsOverride, String> {
    let mut dims = HeadDimsOverride::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("\"{part}\" is not NAME=SIZE (e.g. clip_l=8)"))?;
        let size = value
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| format!("the head size of {name} must be a positive number"))?;
        let slot = match name.trim() {
            "clip_l" => &mut dims.clip_l,
            "clip_g" => &mut dims.clip_g,
            "unet" => &mut dims.unet,
            other => {
                return Err(format!(
                    "unknown network \"{other}\"; use clip_l, clip_g or unet"
                ))
            }
        };
        *slot = Some(size);
    }
    Ok(dims)
}

/// Exit 0 when the file loads, 2 when it cannot be used, 1 when it cannot be read.
pub fn run(args: InspectArgs, config: &Config) -> ExitCode {
    if args.file.is_dir() {
        eprintln!(
            "error: {} is a folder; give a .safetensors file in it",
            args.file.display()
        );
        return ExitCode::FAILURE;
    }
    // A path on this machine as given (the command line is local), else a model name.
    let found = if args.file.is_file() {
        args.file.clone()
    } else {
        match config.find_model(ModelKind::Checkpoint, &args.file.to_string_lossy()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let heads = args
        .head_dims
        .unwrap_or_default()
        .over(config.head_dims(&found));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_dims_parse_any_subset_and_refuse_nonsense() {
        let parsed = parse_head_dims("clip_l=8, unet=16");
        assert_eq!(
            parsed,
            Ok(HeadDimsOverride {
                clip_l: Some(8),
                clip_g: None,
                unet: Some(16),
            })
        );
        let base = HeadDimsConfig {
            clip_l: 64,
            clip_g: 12,
            unet: 64,
        };
        let heads = parsed.unwrap_or_default().over(base);
        assert_eq!((heads.clip_l, heads.clip_g, heads.unet), (8, 12, 16));
        assert!(parse_head_dims("clip_x=8").is_err_and(|e| e.contains("clip_x")));
        assert!(parse_head_dims("clip_l=0").is_err());
        assert!(parse_head_dims("clip_l").is_err());
    }
}
