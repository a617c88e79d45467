//! `fooocus bench --tiny` runs on the tiny fixtures and reports every requested part as JSON, in
//! f32, in f16 (the GPU path), with lean weights and with bf16 products, with the refiner in
//! `generate256` (CI checks that the benchmark works, not how fast it is).

mod common;

use std::process::Command;

fn bench_json(parts: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fooocus"))
        .args(["bench", "--tiny"])
        .arg(common::fixtures())
        .args(["--parts", parts, "--repeats", "1", "--steps", "3", "--json"])
        .args(["--device", "cpu"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_runs_on_the_tiny_fixtures() {
    let report = bench_json("text,unet512,generate512", &["--vram", "normal"]);
    assert_eq!(report["device"], "cpu f32 (VAE f32), --vram normal");
    let parts: Vec<(&str, &str)> = report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["part"].as_str().unwrap(), m["kernels"].as_str().unwrap()))
        .collect();
    assert_eq!(parts.len(), 3, "{parts:?}");
    for m in report["measurements"].as_array().unwrap() {
        assert!(m["median_s"].as_f64().unwrap() > 0.0);
        assert!(m["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
}

/// The parts a report measured, in order.
fn part_names(report: &serde_json::Value) -> Vec<&str> {
    report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["part"].as_str().unwrap())
        .collect()
}

#[test]
fn bench_runs_in_half_precision_with_the_refiner() {
    let args = ["--precision", "f16", "--refiner-switch", "0.667"];
    let report = bench_json("generate256,unet128", &args);
    assert!(
        report["device"]
            .as_str()
            .unwrap()
            .starts_with("cpu f16 (VAE f32), --vram "),
        "{}",
        report["device"]
    );
    let parts = part_names(&report);
    assert_eq!(parts, ["generate256", "unet128"]);
}

/// `--vram low` on the CPU keeps the weights in the fixture's f16, and says so.
#[test]
fn bench_runs_with_lean_weights() {
    let report = bench_json("unet128,generate256", &["--vram", "low"]);
    assert_eq!(
        report["device"],
        "cpu f32, half-precision weights widened per layer (VAE f32), --vram low"
    );
}

/// `--cpu-bf16` multiplies the UNet's linear layers in bf16 and says so; it has no effect where
/// the networks do not compute in f32.
#[test]
fn bench_runs_with_bf16_products() {
    let report = bench_json("unet128,generate256", &["--vram", "normal", "--cpu-bf16"]);
    assert_eq!(
        report["device"],
        "cpu f32, UNet linear layers in bf16 (VAE f32), --vram normal"
    );
    let args = ["--vram", "normal", "--cpu-bf16", "--precision", "f16"];
    let report = bench_json("unet128", &args);
    assert_eq!(report["device"], "cpu f16 (VAE f32), --vram normal");
}

#[test]
fn bench_refuses_an_unknown_part() {
    let out = Command::new(env!("CARGO_BIN_EXE_fooocus"))
        .args(["bench", "--tiny"])
        .arg(common::fixtures())
        .args(["--parts", "warp9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown part `warp9`"));
    let out = Command::new(env!("CARGO_BIN_EXE_fooocus"))
        .args(["bench", "--tiny"])
        .arg(common::fixtures())
        .args(["--parts", "unet1000"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("a multiple of 64"));
}

/// The Upscale parts: Fooocus' upscaler at its real size (random weights) and a tiled encode.
#[test]
fn bench_times_the_upscaler_and_the_tiled_encode() {
    let report = bench_json("upscaler64,encode128", &[]);
    let parts = part_names(&report);
    assert_eq!(parts, ["upscaler64", "encode128"]);
}
