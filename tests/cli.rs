//! The `fooocus` binary: `generate` on the tiny checkpoints prints the saved path and exits 0;
//! a bad request exits non-zero naming the field; `inspect` reports a checkpoint; a bad auth file
//! stops the server from starting, naming the file and the fault; so does a broker that cannot
//! be reached, for the server and for a worker.

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
fn inspect_reports_a_checkpoint_by_name_with_the_configs_head_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_tiny_config(dir.path());
    // The config's [head_dims] for the file apply without a flag.
    let out = fooocus(&config, &["inspect", "sdxl_base.safetensors"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SDXL base checkpoint"), "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let out = fooocus(&config, &["inspect", "missing.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn inspect_takes_head_sizes_per_network_and_names_the_one_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_tiny_config(dir.path());
    let h = common::tiny_heads("base_unet_sgm");
    let given = format!("clip_l={},clip_g={},unet={}", h.clip_l, h.clip_g, h.unet);
    let out = fooocus(
        &config,
        &["inspect", "sdxl_base.safetensors", "--head-dims", &given],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let hidden = common::json("tiny_configs.json")["clip_g"]["hidden_size"]
        .as_u64()
        .unwrap();
    let wrong = format!("clip_g={}", hidden + 1);
    let out = fooocus(
        &config,
        &["inspect", "sdxl_base.safetensors", "--head-dims", &wrong],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("CLIP-G"), "{text}");
    assert!(text.contains("clip_g=N"), "{text}");

    let out = fooocus(
        &config,
        &["inspect", "sdxl_base.safetensors", "--head-dims", "vae=8"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("clip_l, clip_g or unet"));
}

#[test]
fn inspect_says_a_folder_is_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_tiny_config(dir.path());
    let folder = dir.path().display().to_string();
    let out = fooocus(&config, &["inspect", &folder]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is a folder"), "{stderr}");
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

/// `fooocus generate --input-image FILE --upscale fast`: the input upscaled by the fixture
/// upscaler and saved, its metadata naming the method and the input's sha256; the same image
/// twice gives the same bytes; a bad method value exits non-zero naming the choices.
#[test]
fn generate_with_an_input_image_upscales_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_tiny_config(dir.path());
    let input = common::image_fixtures().join("upscale_input.png");
    let input_arg = input.display().to_string();
    let args = [
        "generate",
        "",
        "--input-image",
        input_arg.as_str(),
        "--upscale",
        "fast",
        "--no-download",
    ];
    let run = || {
        let out = fooocus(&config, &args);
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let paths: Vec<String> = stdout.lines().map(str::to_string).collect();
        assert_eq!(paths.len(), 1, "{stdout}");
        std::path::PathBuf::from(&paths[0])
    };
    let first = run();
    let meta = fooocus::store::read_metadata(&first).unwrap().unwrap();
    let record = meta.input_image.unwrap();
    assert_eq!(record.method, "Upscale (Fast 2x)");
    assert_eq!(
        record.sha256,
        fooocus::store::file_sha256(&input).unwrap(),
        "the metadata names the input file's sha256"
    );
    let reference = image::open(common::image_fixtures().join("upscale_resized.png"))
        .unwrap()
        .to_rgb8();
    let ours = image::open(&first).unwrap().to_rgb8();
    assert_eq!(ours.dimensions(), reference.dimensions());
    let second = run();
    assert_eq!(
        image::open(&second).unwrap().to_rgb8().into_raw(),
        ours.into_raw()
    );
    let out = fooocus(
        &config,
        &[
            "generate",
            "x",
            "--input-image",
            &input_arg,
            "--vary",
            "wild",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("subtle") && stderr.contains("strong"),
        "{stderr}"
    );
}

#[test]
fn a_broker_that_cannot_be_reached_stops_the_server_and_the_worker_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_tiny_config(dir.path());
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let serve = ["--no-browser", "--no-download", "--port", "0", "--broker"];
    for (args, says) in [
        (
            [&serve[..], &[url.as_str()]].concat(),
            format!("cannot reach the broker at {url}"),
        ),
        (
            vec!["worker", "--broker", url.as_str()],
            format!("cannot reach the broker at {url}"),
        ),
        (
            [&serve[..], &["http://example.com/"]].concat(),
            "is not a Redis URL".to_owned(),
        ),
    ] {
        let out = fooocus(&config, &args);
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&says), "{args:?}: {stderr}");
    }
}
