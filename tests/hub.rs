//! Downloads against a fake hub served on loopback, speaking the protocol the client uses:
//! a `Range: bytes=0-0` metadata request answered with `ETag`, `X-Repo-Commit` and
//! `Content-Range`, and ranged data requests honoured. Never an `X-Xet-Hash` header.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fooocus::hub::{CatalogEntry, DownloadProgress, Folder, HubClient, HubError};
use sha2::{Digest, Sha256};

#[derive(Clone, Default)]
struct Served {
    bytes: Vec<u8>,
    /// The ETag announced (the real sha256 unless a test lies).
    etag: String,
    /// Close the first data connection after this many bytes.
    drop_after: Option<usize>,
    /// Pause between 4 KiB chunks.
    delay: Option<Duration>,
}

#[derive(Default)]
struct Hub {
    files: HashMap<String, Served>,
    /// Every Range header the hub received, in order.
    ranges: Vec<String>,
    dropped: bool,
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn serve(hub: Arc<Mutex<Hub>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let hub = hub.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &hub);
            });
        }
    });
    format!("http://{addr}")
}

fn answer(mut stream: TcpStream, hub: &Mutex<Hub>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let name = path.rsplit('/').next().unwrap_or("").to_string();
    let (served, drop_now) = {
        let mut h = hub.lock().unwrap();
        if let Some(r) = &range {
            h.ranges.push(r.clone());
        }
        let served = h.files.get(&name).cloned();
        let is_data = range.as_deref() != Some("bytes=0-0");
        let drop_now =
            is_data && !h.dropped && served.as_ref().is_some_and(|s| s.drop_after.is_some());
        if drop_now {
            h.dropped = true;
        }
        (served, drop_now)
    };
    let Some(served) = served else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let total = served.bytes.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b
                .parse()
                .map(|b: usize| b.min(total - 1))
                .unwrap_or(total - 1);
            (a, b)
        }
        None => (0, total - 1),
    };
    let body = &served.bytes[start..=end];
    let head = format!(
        "HTTP/1.1 206 Partial Content\r\nETag: \"{}\"\r\nX-Repo-Commit: 0123456789abcdef\r\nContent-Range: bytes {start}-{end}/{total}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        served.etag,
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    let limit = if drop_now {
        served.drop_after.unwrap_or(0).min(body.len())
    } else {
        body.len()
    };
    for chunk in body[..limit].chunks(4096) {
        stream.write_all(chunk)?;
        stream.flush()?;
        if let Some(d) = served.delay {
            std::thread::sleep(d);
        }
    }
    Ok(())
}

fn entry(file: &str) -> CatalogEntry {
    CatalogEntry {
        name: file.into(),
        repo: "org/model".into(),
        revision: "main".into(),
        file: file.into(),
        folder: Folder::Checkpoints,
        size: None,
        sha256: None,
    }
}

fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn setup(name: &str, served: Served) -> (Arc<Mutex<Hub>>, HubClient) {
    let hub = Arc::new(Mutex::new(Hub::default()));
    hub.lock().unwrap().files.insert(name.into(), served);
    let endpoint = serve(hub.clone());
    let client = HubClient::new(endpoint).with_retries(3, Duration::from_millis(10));
    (hub, client)
}

fn good(bytes: Vec<u8>) -> Served {
    Served {
        etag: sha256(&bytes),
        bytes,
        ..Default::default()
    }
}

#[test]
fn a_fresh_download_lands_with_the_right_bytes() {
    let bytes = content(100_000);
    let (_, client) = setup("model.safetensors", good(bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("checkpoints/model.safetensors");
    let path = client
        .download(&entry("model.safetensors"), &dest, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(!dir
        .path()
        .join("checkpoints/model.safetensors.part")
        .exists());
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let bytes = content(200_000);
    let served = Served {
        drop_after: Some(70_000),
        ..good(bytes.clone())
    };
    let (hub, client) = setup("big.safetensors", served);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.safetensors");
    client
        .download(&entry("big.safetensors"), &dest, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let ranges = hub.lock().unwrap().ranges.clone();
    assert_eq!(ranges.first().map(String::as_str), Some("bytes=0-0"));
    assert!(ranges.iter().any(|r| r == "bytes=70000-"), "{ranges:?}");
}

#[test]
fn a_restart_continues_the_partial_file() {
    let bytes = content(50_000);
    let (hub, client) = setup("m.safetensors", good(bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.safetensors");
    std::fs::write(dir.path().join("m.safetensors.part"), &bytes[..20_000]).unwrap();
    client
        .download(&entry("m.safetensors"), &dest, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(hub
        .lock()
        .unwrap()
        .ranges
        .iter()
        .any(|r| r == "bytes=20000-"));
}

#[test]
fn a_hash_mismatch_is_rejected_and_leaves_nothing() {
    let bytes = content(30_000);
    let served = Served {
        etag: sha256(b"something else"),
        ..good(bytes)
    };
    let (_, client) = setup("bad.safetensors", served);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bad.safetensors");
    let err = client
        .download(&entry("bad.safetensors"), &dest, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, HubError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(!dest.exists());
    assert!(!dir.path().join("bad.safetensors.part").exists());
}

#[test]
fn a_missing_file_names_the_repository_and_file() {
    let (_, client) = setup("other.safetensors", good(content(10)));
    let dir = tempfile::tempdir().unwrap();
    let err = client
        .download(
            &entry("absent.safetensors"),
            &dir.path().join("absent.safetensors"),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("org/model/absent.safetensors") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn no_network_says_where_to_put_the_file() {
    let client = HubClient::new("http://127.0.0.1:9").with_retries(0, Duration::from_millis(1));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.safetensors");
    let err = client
        .download(&entry("x.safetensors"), &dest, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("put the file at") && err.contains(&dest.display().to_string()),
        "{err}"
    );
}

#[test]
fn progress_events_arrive_while_a_slow_hub_sends() {
    let bytes = content(64 * 1024);
    let served = Served {
        delay: Some(Duration::from_millis(5)),
        ..good(bytes.clone())
    };
    let (_, client) = setup("slow.safetensors", served);
    let dir = tempfile::tempdir().unwrap();
    let mut events: Vec<DownloadProgress> = Vec::new();
    client
        .download(
            &entry("slow.safetensors"),
            &dir.path().join("slow.safetensors"),
            &mut |p| events.push(p),
        )
        .unwrap();
    assert!(events.len() >= 8, "{} events", events.len());
    assert!(events
        .windows(2)
        .all(|w| w[0].downloaded <= w[1].downloaded));
    let last = events.last().unwrap();
    assert_eq!(
        (last.downloaded, last.total),
        (bytes.len() as u64, bytes.len() as u64)
    );
}
