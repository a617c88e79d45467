//! The page in real headless Chromium (Debian's `chromium`, driven by `tests/browser/ui.mjs`
//! through playwright-core): type a prompt, press Ctrl+Enter, see the preview change and an
//! image appear in the gallery; directly, and again behind a path-prefix reverse proxy started
//! here; then the same page at phone width (one column, nothing cut off). Screenshots go to
//! `target/`. `.ci/run` installs Chromium and the node package. Its own
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

/// Runs the page script against `url`, saving `shot`; panics with its output on failure.
async fn drive(url: String, shot: PathBuf) {
    let (script, page, file) = (browser_dir().join("ui.mjs"), url.clone(), shot.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(page)
            .arg(file)
            .output()
    })
    .await
    .expect("the node task ends")
    .expect("node runs (install Node.js)");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the page test failed at {url}:\n{log}"
    );
    assert!(log.contains("image in the gallery"), "{log}");
    assert!(log.contains("phone layout fits"), "{log}");
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    let phone = shot.with_file_name(format!(
        "{}-phone.png",
        shot.file_stem().unwrap().to_string_lossy()
    ));
    assert!(phone.is_file(), "no screenshot at {}", phone.display());
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
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "run `npm install` in tests/browser and install Debian's chromium (.ci/run does both)"
    );
    let server = serve(Spec::default()).await;
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    drive(
        format!("http://{}/", server.addr()),
        target.join("browser-direct.png"),
    )
    .await;
    let proxy = start_proxy(server.addr()).await;
    drive(
        format!("http://{proxy}{PREFIX}/"),
        target.join("browser-proxied.png"),
    )
    .await;
}
