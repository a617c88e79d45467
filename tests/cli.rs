//! The `fooocus` binary: `generate` on the tiny checkpoints prints the saved path and exits 0;
//! a bad request exits non-zero naming the field; `inspect` reports a checkpoint.

mod common;

use std::path::Path;
use std::process::Command;

/// A config.toml for the tiny fixtures, with outputs in `dir`.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let fx = common::fixtures();
    let cfg = common::json("tiny_configs.json");
    let n = |k: &str, f: &str| cfg[k][f].as_u64().unwrap();
    let heads = |unet: &str| {
        format!(
            "clip_l = {}\nclip_g = {}\nunet = {}\n",
            n("clip_l", "hidden_size") / n("clip_l", "num_attention_heads"),
            n("clip_g", "hidden_size") / n("clip_g", "num_attention_heads"),
            n(unet, "num_head_channels")
        )
    };
    let text = format!(
        r#"[paths]
checkpoints = [{fx:?}]
loras = [{loras:?}]
tokenizer = {tok:?}
styles = {styles:?}
wildcards = {wild:?}
outputs = {out:?}

[presets.default]
base_model = "sdxl_base.safetensors"
refiner_model = "sdxl_refiner.safetensors"
loras = []

[head_dims."sdxl_base.safetensors"]
{base}
[head_dims."sdxl_refiner.safetensors"]
{refiner}"#,
        fx = fx.display().to_string(),
        loras = fx.join("lora").display().to_string(),
        tok = fx
            .join("tokenizer/clip-tokenizer.json")
            .display()
            .to_string(),
        styles = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("styles")
            .display()
            .to_string(),
        wild = dir.join("wildcards").display().to_string(),
        out = dir.join("outputs").display().to_string(),
        base = heads("base_unet_sgm"),
        refiner = heads("refiner_unet_sgm"),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn fooocus(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fooocus"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn generate_saves_and_prints_the_paths() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = fooocus(
        &config,
        &[
            "generate",
            "a small red boat",
            "--width",
            "512",
            "--height",
            "512",
            "--steps",
            "2",
            "-n",
            "1",
            "--seed",
            "7",
            "--style",
            "Paint: Watercolor",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths: Vec<&str> = stdout.lines().collect();
    assert_eq!(paths.len(), 1, "{stdout}");
    assert!(Path::new(paths[0]).is_file());
    assert!(paths[0].starts_with(&dir.path().join("outputs").display().to_string()));
    let meta = fooocus::store::read_metadata(Path::new(paths[0]))
        .unwrap()
        .unwrap();
    assert_eq!((meta.seed, meta.steps, meta.width), (7, 2, 512));
    assert_eq!(meta.styles, vec!["Paint: Watercolor".to_string()]);
}

#[test]
fn bad_requests_exit_non_zero_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = fooocus(&config, &["generate", "x", "--steps", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`steps`"), "{stderr}");
    let out = fooocus(&config, &["generate", "x", "--preset", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset"));
}

#[test]
fn inspect_reports_a_checkpoint_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = fooocus(
        &config,
        &["inspect", "sdxl_refiner.safetensors", "--head-dim", "8"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SDXL refiner checkpoint"), "{stdout}");
    let out = fooocus(&config, &["inspect", "missing.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
}
