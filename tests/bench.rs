//! `fooocus bench --tiny` runs on the tiny fixtures and reports every requested part as JSON
//! (CI checks that the benchmark works, not how fast it is).

mod common;

use std::process::Command;

#[test]
fn bench_runs_on_the_tiny_fixtures() {
    let out = Command::new(env!("CARGO_BIN_EXE_fooocus"))
        .args(["bench", "--tiny"])
        .arg(common::fixtures())
        .args([
            "--parts",
            "text,unet512,generate512",
            "--repeats",
            "1",
            "--steps",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
}
