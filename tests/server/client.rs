//! A raw HTTP/1.1 client (so paths reach the server exactly as written, `..` included) and
//! WebSocket helpers.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = std::str::from_utf8(&body[..end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    // The address as `Host`, unless the caller sends its own.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"").await
}

pub async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Response {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

/// What a socket received for one job until it ended.
#[derive(Default, Debug)]
pub struct Seen {
    pub events: Vec<Value>,
    pub previews: Vec<Vec<u8>>,
}

impl Seen {
    pub fn types(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn last(&self) -> &Value {
        self.events.last().unwrap()
    }
}

/// Reads `ws` until job `job` is done, stopped or failed, or `stop_when` says so; calls
/// `on_event` for each event of the job.
pub async fn follow(ws: &mut Ws, job: u64, mut on_event: impl FnMut(&Value) -> bool) -> Seen {
    let mut seen = Seen::default();
    let deadline = Duration::from_secs(300);
    // The job the next binary frame previews, from the `preview` header before it.
    let mut previewed = None;
    loop {
        let message = tokio::time::timeout(deadline, ws.next())
            .await
            .expect("no event within 300 s")
            .expect("the socket closed")
            .unwrap();
        match message {
            Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                // A `preview` header belongs to the binary frame after it, not to the events.
                if event["type"] == "preview" {
                    previewed = event["job_id"].as_u64();
                    continue;
                }
                if event["job_id"].as_u64() != Some(job) {
                    continue;
                }
                let kind = event["type"].as_str().unwrap_or("").to_string();
                seen.events.push(event.clone());
                if on_event(&event) || matches!(kind.as_str(), "done" | "stopped" | "failed") {
                    return seen;
                }
            }
            Message::Binary(bytes) => {
                assert!(
                    previewed.is_some(),
                    "a preview frame came without its header"
                );
                if previewed.take() == Some(job) {
                    seen.previews.push(bytes.to_vec());
                }
            }
            _ => {}
        }
    }
}

/// How many images the history holds, over all days.
pub async fn saved_images(addr: SocketAddr) -> usize {
    let history = get(addr, "/api/history").await.json();
    history["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["images"].as_array().unwrap().len())
        .sum()
}

/// Polls `GET /api/jobs/{id}` until the job has finished.
pub async fn wait_job(addr: SocketAddr, job: u64) -> Value {
    for _ in 0..3000 {
        let status = get(addr, &format!("/api/jobs/{job}")).await.json();
        if matches!(
            status["state"].as_str(),
            Some("done" | "stopped" | "failed")
        ) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job} did not finish");
}

/// A WebSocket handshake on a raw socket with a small receive buffer and small segments, for a
/// client that then never reads: the server's kernel sizes its send buffer by the segment size,
/// so its sends back up after some 100 KB instead of megabytes.
pub async fn raw_websocket(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket2::SockRef::from(&socket).set_tcp_mss(536).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{answer:?}");
        answer.push(byte[0]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    stream
}
