//! The page in real headless Chromium (Debian's `chromium`, driven by `tests/browser/ui.mjs`
//! through playwright-core): a short run at desktop size (1400×1000) straight to the server,
//! the same at phone size (390×844) behind a path-prefix reverse proxy started here, and a
//! server without models. `ui.mjs` checks what a user sees (the prompt box does not move, the
//! progress never covers the preview, small thumbnails, the viewer's parameters and buttons,
//! Generate off with the reason when models are missing; an image dropped on the Input Image box
//! varied, sent back and upscaled) and saves screenshots to
//! `target/browser/`. Without Chromium, Node.js or playwright-core the test says SKIPPED with
//! the install commands and passes (fails with `FOOOCUS_REQUIRE_ALL_TESTS=1`, as in CI). Its own
//! test binary, so that no other test competes with it for the CPU.

#[path = "common/mod.rs"]
mod common;
#[path = "server/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{serve, Spec};

const PREFIX: &str = "/proxy/7865";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Whether Node.js, playwright-core and Chromium are all here (see [`common::require`]).
fn tools_present() -> bool {
    common::require_tool("node", "apt-get install nodejs npm")
        && common::require(
            browser_dir().join("node_modules/playwright-core").is_dir(),
            "playwright-core",
            "(cd tests/browser && npm install)",
        )
        && common::require_tool(
            &chromium(),
            "apt-get install chromium (or set CHROMIUM to a Chromium binary)",
        )
}

/// Runs `ui.mjs` with `args`; panics with its output unless it succeeds and prints every line
/// of `expect`.
async fn drive(args: Vec<String>, expect: &[&str]) {
    let script = browser_dir().join("ui.mjs");
    let shown = args.join(" ");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .args(args)
            .output()
    })
    .await
    .expect("the node task ends")
    .expect("node runs");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("ui.mjs {shown}:\n{log}");
    assert!(
        out.status.success(),
        "the page test failed: {shown}:\n{log}"
    );
    for line in expect {
        assert!(log.contains(line), "no {line:?} in: {log}");
    }
}

/// Saves a small image on each of three earlier days, for the history's pages.
fn seed_history(outputs: &Path) {
    use fooocus::store::{EncodeOptions, ImageMetadata, OutputStore};
    let store = OutputStore::new(outputs);
    let image =
        image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128]));
    for day in 1..=3 {
        let at = chrono::NaiveDate::from_ymd_opt(2024, 1, day)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .unwrap();
        let meta = ImageMetadata {
            prompt: format!("an earlier image of 2024-01-0{day}"),
            width: 64,
            height: 64,
            ..ImageMetadata::default()
        };
        store
            .save_at(&image, &meta, &EncodeOptions::default(), at)
            .unwrap();
    }
}

/// A reverse proxy that serves `upstream` under `PREFIX`: each request line's path loses the
/// prefix (other paths get 404); a WebSocket upgrade is then piped both ways as it is.
async fn start_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = relay(client, upstream).await;
            });
        }
    });
    addr
}

async fn relay(client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut reader = BufReader::new(client_read);
    loop {
        let mut head = Vec::new();
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.splitn(3, ' ');
        let (method, path, rest) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        // A path outside the prefix (an absolute URL in the page) is dropped: the page breaks.
        let Some(stripped) = path.strip_prefix(PREFIX) else {
            return Ok(());
        };
        let stripped = if stripped.is_empty() { "/" } else { stripped };
        head.extend_from_slice(format!("{method} {stripped} {rest}").as_bytes());
        let mut length = 0usize;
        let mut upgrade = false;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).await?;
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("upgrade:") && lower.contains("websocket") {
                upgrade = true;
            }
            head.extend_from_slice(header.as_bytes());
            if header == "\r\n" || header.is_empty() {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        head.extend_from_slice(&body);
        server_write.write_all(&head).await?;
        if upgrade {
            tokio::io::copy(&mut reader, &mut server_write).await?;
            return Ok(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_generates_in_headless_chromium_directly_and_behind_a_proxy() {
    if !tools_present() {
        return;
    }
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let out = shots.display().to_string();
    let run = [
        "errors show without backticks",
        "preview shown, progress beside it",
        "image in the gallery",
        "the prompt box stays put",
        "history thumbnails are small",
        "the viewer lists the parameters, its buttons on screen",
        "a dropped image gives back its settings",
        "the log page shows with its style",
        "no Content-Security-Policy violations",
    ];

    let server = serve(Spec::default()).await;
    seed_history(&server.dir.path().join("outputs"));
    let direct = format!("http://{}/", server.addr());
    let desktop: Vec<&str> = run
        .iter()
        .copied()
        .chain([
            "the history pages back through earlier days",
            "the page lists several jobs",
            "a dropped image becomes the input",
            "Vary (Subtle) ran with",
            "Upscale (Fast 2x) of the sent image",
        ])
        .collect();
    drive(
        vec!["run".into(), "desktop".into(), direct, out.clone()],
        &desktop,
    )
    .await;
    let proxy = start_proxy(server.addr()).await;
    let proxied = format!("http://{proxy}{PREFIX}/");
    let phone: Vec<&str> = run
        .iter()
        .copied()
        .chain(["phone layout fits", "the Input Image panel fits the phone"])
        .collect();
    drive(
        vec!["run".into(), "phone".into(), proxied, out.clone()],
        &phone,
    )
    .await;

    let offline = fooocus::hub::HubClient::new("http://127.0.0.1:9")
        .with_retries(0, std::time::Duration::from_millis(1));
    let empty = serve(Spec {
        no_models: true,
        hub: Some(offline),
        ..Spec::default()
    })
    .await;
    let page = format!("http://{}/", empty.addr());
    drive(
        vec!["empty".into(), page, out],
        &[
            "no-models page checked",
            "no Content-Security-Policy violations",
        ],
    )
    .await;
}
