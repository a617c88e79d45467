//! The real third-party clients from PyPI against the server: `webuiapi` (A1111's `/sdapi/v1`)
//! and `openai` (`/v1/images`), pinned in `tests/api_clients/requirements.txt` and installed
//! into a venv cached under the target folder. The checks are in `tests/api_clients/clients.py`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{require, require_tool};
use crate::harness::{serve, Spec};

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_clients")
}

/// The venv with the pinned clients, made (or remade when the pins change) under the target
/// folder. `None` when it cannot be made (no `venv` module, no registry).
fn venv() -> Option<PathBuf> {
    let requirements = client_dir().join("requirements.txt");
    let pins = std::fs::read_to_string(&requirements).ok()?;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-clients-venv");
    let marker = dir.join("installed-requirements.txt");
    let python = dir.join("bin/python");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(pins.as_str()) && python.is_file() {
        return Some(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .ok()?
        .success();
    let installed = made
        && Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .ok()?
            .success();
    if !installed {
        return None;
    }
    std::fs::write(&marker, pins).ok()?;
    Some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_webuiapi_and_openai_clients() {
    if !require_tool("python3", "apt-get install python3 python3-venv") {
        return;
    }
    let python = tokio::task::spawn_blocking(venv).await.unwrap();
    if !require(
        python.is_some(),
        "a venv with webuiapi and openai",
        "apt-get install python3-venv (and reach PyPI)",
    ) {
        return;
    }
    let python = python.unwrap();
    let server = serve(Spec {
        steps: Some(1),
        ..Spec::default()
    })
    .await;
    let port = server.addr().port().to_string();
    let script = client_dir().join("clients.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["127.0.0.1", &port])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the clients' checks failed:\n{text}"
    );
    assert!(
        text.contains("webuiapi: ok") && text.contains("openai: ok"),
        "{text}"
    );
    // Their jobs are the page's: every image is in the history.
    let saved = crate::client::saved_images(server.addr()).await;
    assert!(saved >= 5, "{saved} images in the history");
}
