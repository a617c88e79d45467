//! Hardening: failed logins slow down then lock out (429 + Retry-After) and the right password
//! works after; a WebSocket client that stops reading is dropped while a reading one gets every
//! event; idle connections and slow requests time out; security headers on every answer.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use fooocus::server::{Accounts, Credentials, Limits, LoginPolicy};

use crate::client::{connect, follow, get, post_json, raw_websocket, request};
use crate::{serve, Spec};

fn basic(user_password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(user_password);
    format!("Basic {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_slow_down_then_lock_out_and_the_right_password_works_after() {
    let policy = LoginPolicy {
        free_failures: 2,
        first_delay: Duration::from_millis(300),
        max_delay: Duration::from_millis(600),
        max_lockout: Duration::from_millis(1500),
        ..LoginPolicy::default()
    };
    let server = serve(Spec {
        auth: Some(Accounts::from(
            &"alice:s3cret".parse::<Credentials>().unwrap(),
        )),
        limits: Limits {
            login: policy,
            ..Limits::default()
        },
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    let (right, wrong) = (basic("alice:s3cret"), basic("alice:guess"));
    let attempt = |auth: String| async move {
        let t0 = Instant::now();
        let r = request(addr, "GET", "/api/queue", &[("Authorization", &auth)], b"").await;
        (r, t0.elapsed())
    };
    // No credentials at all is not a failure: the browser's first request.
    for _ in 0..4 {
        let r = get(addr, "/").await;
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"fooocus\", charset=\"UTF-8\"")
        );
    }
    let mut took = Vec::new();
    for _ in 0..4 {
        let (r, elapsed) = attempt(wrong.clone()).await;
        assert_eq!(r.status, 401);
        assert!(r.json()["error"].as_str().unwrap().contains("--auth"));
        took.push(elapsed);
    }
    println!("401s took {took:?}");
    assert!(took[0] < Duration::from_millis(250) && took[1] < Duration::from_millis(250));
    assert!(took[2] >= Duration::from_millis(300), "{took:?}");
    assert!(took[3] >= Duration::from_millis(600), "{took:?}");
    // The fifth would wait 1.2 s: a lockout, answered at once.
    let (r, elapsed) = attempt(wrong.clone()).await;
    assert_eq!(r.status, 429);
    assert!(elapsed < Duration::from_millis(250), "{elapsed:?}");
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("try again in 2 s"), "{error}");
    // Locked out: even the right password waits.
    assert_eq!(attempt(right.clone()).await.0.status, 429);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r, _) = attempt(right.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Success reset the count: the next failures are free again.
    let (r, elapsed) = attempt(wrong.clone()).await;
    assert_eq!(r.status, 401);
    assert!(elapsed < Duration::from_millis(250), "{elapsed:?}");
    server.server.shutdown().await.unwrap();
}

/// A job with a preview frame per step.
fn flood(images: u32, steps: u32) -> serde_json::Value {
    json!({
        "prompt": "static", "width": 512, "height": 512, "steps": steps,
        "image_number": images, "refiner_switch": 1.0, "seed": 7,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_client_that_stops_reading_is_dropped_and_the_others_get_every_event() {
    let bound = Duration::from_secs(2);
    let server = serve(Spec {
        limits: Limits {
            ws_send: bound,
            // Shorter than the jobs: an upgraded connection is not an idle one.
            idle: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    let mut stalled = raw_websocket(addr).await;
    let mut reader = connect(addr).await;
    // Jobs until more has been sent than the kernel and the socket library buffer for the
    // stalled client (some 100 KB with its small segments): its sends have been blocked since.
    let enough = 512 * 1024;
    let (mut sent, mut jobs) = (0, 0);
    while sent < enough {
        let job = post_json(addr, "/api/generate", &flood(2, 6)).await.json()["job_id"]
            .as_u64()
            .unwrap();
        let seen = follow(&mut reader, job, |_| false).await;
        let types = seen.types();
        assert_eq!(types.first().map(String::as_str), Some("queued"));
        assert_eq!(seen.last()["type"], "done", "{types:?}");
        let count = |kind: &str| types.iter().filter(|t| *t == kind).count();
        assert_eq!(count("progress"), 2 * 6, "{types:?}");
        assert_eq!(count("image"), 2, "{types:?}");
        sent += seen.previews.iter().map(Vec::len).sum::<usize>();
        sent += seen
            .events
            .iter()
            .map(|e| e.to_string().len())
            .sum::<usize>();
        jobs += 1;
        assert!(jobs <= 10, "{jobs} jobs sent only {sent} bytes");
    }
    println!("{jobs} jobs sent {sent} bytes to the reading client");
    // The stalled client was dropped: reading now finds the end of the stream after its
    // buffered bytes (a client still connected would wait for the next event forever).
    tokio::time::sleep(bound + Duration::from_secs(1)).await;
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut received)).await;
    println!("the stalled client got {} bytes", received.len());
    assert!(read.is_ok(), "the stalled client is still connected");
    assert!(received.len() < sent, "{} of {sent}", received.len());
    server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_requests_time_out() {
    let server = serve(Spec {
        limits: Limits {
            idle: Duration::from_millis(500),
            request: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    // Connected, nothing sent: closed.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle connection stays open");
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    // A body that never arrives: 408 with the JSON body (also on the routes whose answer waits
    // for a job, where only the body is bounded in time).
    for path in [
        "/api/generate",
        "/sdapi/v1/txt2img",
        "/v1/images/generations",
    ] {
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{\"prompt\""
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("send it again"), "{path}: {answer}");
    }
    // A keep-alive connection between requests is closed the same way.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    kept.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "an idle keep-alive connection stays open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    server.server.shutdown().await.unwrap();
}

/// Checks the security headers of one answer.
fn assert_secured(r: &crate::client::Response, what: &str) {
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    let csp = r.header("content-security-policy").unwrap_or("");
    assert!(csp.contains("frame-ancestors 'self'"), "{what}: {csp}");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_are_on_every_answer() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let mut ws = connect(addr).await;
    let job = post_json(addr, "/api/generate", &flood(1, 1)).await.json()["job_id"]
        .as_u64()
        .unwrap();
    let seen = follow(&mut ws, job, |_| false).await;
    let image = seen.events.iter().find(|e| e["type"] == "image").unwrap();
    let url = image["url"].as_str().unwrap();
    let thumb = image["thumb"].as_str().unwrap();
    let log = format!("{}/log.html", url.rsplit_once('/').unwrap().0);
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    for part in [
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    for path in ["/", "/app.js", "/app.css", "/api/options", "/api/nothing"] {
        assert_secured(&get(addr, path).await, path);
    }
    for path in [format!("/{url}"), format!("/{thumb}"), format!("/{log}")] {
        let r = get(addr, &path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_secured(&r, &path);
    }
    let log_page = get(addr, &format!("/{log}")).await;
    let csp = log_page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    let bad = request(addr, "POST", "/api/generate", &[], b"{").await;
    assert_eq!(bad.status, 400);
    assert_secured(&bad, "a 400");
    server.server.shutdown().await.unwrap();

    let guarded = serve(Spec {
        auth: Some(Accounts::from(&"a:b".parse::<Credentials>().unwrap())),
        ..Spec::default()
    })
    .await;
    let r = get(guarded.addr(), "/").await;
    assert_eq!(r.status, 401);
    assert_secured(&r, "a 401");
    guarded.server.shutdown().await.unwrap();
}
