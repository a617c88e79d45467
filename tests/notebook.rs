//! `notebook/fooocus.ipynb` runs: its code cells, in order, under plain `python3` (as a kernel
//! would run them, minus Jupyter), with the binary under test as `FOOOCUS_RS_BINARY` and the tiny
//! models' config in `FOOOCUS_RS_DIR`. The server must come up (also with `--auth`, where the
//! health wait gets 401), answer through the cells' health wait, offer the page's link and stop
//! at the last cell.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// The notebook's code cells joined into one script.
fn notebook_script() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("notebook/fooocus.ipynb");
    let notebook: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(notebook["nbformat"], 4);
    let cells = notebook["cells"].as_array().unwrap();
    let mut script = String::new();
    for cell in cells.iter().filter(|c| c["cell_type"] == "code") {
        for line in cell["source"].as_array().unwrap() {
            script += line.as_str().unwrap();
        }
        script += "\n\n";
    }
    script
}

#[test]
fn the_notebook_starts_the_server_and_stops_it() {
    if !common::require_tool("python3", "apt-get install python3") {
        return;
    }
    for args in ["--no-download", "--no-download --auth ann:pw"] {
        run_notebook(args);
    }
}

fn run_notebook(server_args: &str) {
    let dir = tempfile::tempdir().unwrap();
    common::write_tiny_config(dir.path());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("python3")
        .arg("-c")
        .arg(notebook_script())
        .env("FOOOCUS_RS_DIR", dir.path())
        .env("FOOOCUS_RS_BINARY", env!("CARGO_BIN_EXE_fooocus"))
        .env("FOOOCUS_RS_PORT", port.to_string())
        .env("FOOOCUS_RS_ARGS", server_args)
        .output()
        .expect("python3 runs (install python3; .ci/run does)");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("fooocus-rs is up on port {port}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Fooocus is running at http://127.0.0.1:{port}/")),
        "{log}"
    );
    assert!(log.contains(&format!("the page: /proxy/{port}/")), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
