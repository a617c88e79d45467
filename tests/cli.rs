//! The `fooocus` binary: `generate` on the tiny checkpoints prints the saved path and exits 0;
//! a bad request exits non-zero naming the field; `inspect` reports a checkpoint; a bad auth file
//! stops the server from starting, naming the file and the fault.

mod common;

use std::path::Path;
use std::process::Command;

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
    let config = common::write_tiny_config(dir.path());
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
    let config = common::write_tiny_config(dir.path());
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
    let config = common::write_tiny_config(dir.path());
    let out = fooocus(
        &config,
        &["inspect", "sdxl_refiner.safetensors", "--head-dim", "8"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SDXL refiner checkpoint"), "{stdout}");
    let out = fooocus(&config, &["inspect", "missing.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serving_with_a_bad_auth_file_exits_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_tiny_config(dir.path());
    let auth = dir.path().join("auth.json");
    // The server must refuse to start: a server that starts anyway is killed and fails the test.
    let serve = |auth: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fooocus"))
            .arg("--config")
            .arg(&config)
            .args([
                "--no-browser",
                "--no-download",
                "--port",
                "0",
                "--auth-file",
            ])
            .arg(auth)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!(
                    "the server started with the bad auth file {}",
                    auth.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    };
    for (text, says) in [
        ("[{\"user\": \"ann\"}]", "needs a non-empty \"pass\""),
        ("[]", "lists nobody"),
    ] {
        std::fs::write(&auth, text).unwrap();
        let out = serve(&auth);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
    let out = serve(&dir.path().join("none.json"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("none.json"), "{stderr}");
}
