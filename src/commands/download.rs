//! `fooocus download`: fetches the files a preset needs ahead of time, with a progress bar.

use std::process::ExitCode;

use clap::Args;
use fooocus::config::Config;
use fooocus::hub::{builtin_catalog, missing, HubClient};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct DownloadArgs {
    /// The preset whose models to fetch.
    #[arg(long, default_value = fooocus::config::DEFAULT_PRESET)]
    preset: String,
    /// A hub mirror to use instead of `HF_ENDPOINT` or huggingface.co.
    #[arg(long)]
    hf_mirror: Option<String>,
}

pub fn run(args: DownloadArgs, config: &Config) -> ExitCode {
    let preset = match config.preset(&args.preset) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = HubClient::from_env(args.hf_mirror.as_deref());
    let needed = missing(config, preset, &builtin_catalog());
    if needed.is_empty() {
        println!("everything the preset `{}` needs is in place", args.preset);
        return ExitCode::SUCCESS;
    }
    let mut failed = false;
    for item in needed {
        let Some(entry) = &item.entry else {
            eprintln!(
                "error: {} is not in the download catalog: put it at {}",
                item.name,
                item.dest.display()
            );
            failed = true;
            continue;
        };
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(item.name.clone());
        let result = client.download(entry, &item.dest, &mut |p| {
            bar.set_length(p.total);
            bar.set_position(p.downloaded);
        });
        bar.finish_and_clear();
        match result {
            Ok(path) => println!("{}", path.display()),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
