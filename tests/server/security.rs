//! Safety: traversal → 404, oversize body → 413, invalid JSON → 400 naming the problem, auth on
//! API and WebSocket, foreign WebSocket Origin refused on the LAN.

use base64::Engine as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::client::{get, post_json, request};
use crate::{serve, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_oversize_and_bad_json_are_refused() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    // A real image name outside the output root, and a day folder inside it.
    let outputs = server.dir.path().join("outputs");
    std::fs::create_dir_all(outputs.join("2024-01-01")).unwrap();
    std::fs::write(
        server.dir.path().join("2024-01-01_00-00-00_1234.png"),
        b"secret",
    )
    .unwrap();
    std::fs::write(server.dir.path().join("secret.txt"), b"secret").unwrap();
    for path in [
        "/outputs/../secret.txt",
        "/outputs/../../etc/passwd",
        "/outputs/%2e%2e/secret.txt",
        "/outputs/%2E%2E%2Fsecret.txt",
        "/outputs/..%2f2024-01-01_00-00-00_1234.png",
        "/outputs/2024-01-01/..%2f..%2f2024-01-01_00-00-00_1234.png",
        "/outputs/2024-01-01/%2e%2e%2f%2e%2e%2f2024-01-01_00-00-00_1234.png",
        "/outputs//etc/passwd",
        "/outputs/%2Fetc%2Fpasswd",
        "/outputs/..%5c..%5csecret.txt",
        "/outputs/2024-01-01/..%5c..%5c2024-01-01_00-00-00_1234.png",
        "/outputs/2024-01-01/",
        "/outputs/2024-01-01/log.jsonl",
        "/outputs/2024-01-01/2024-01-01_00-00-00_9999.png",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("secret\""),
            "{path}"
        );
    }

    let big = vec![b' '; 128 * 1024];
    let r = request(
        addr,
        "POST",
        "/api/generate",
        &[("Content-Type", "application/json")],
        &big,
    )
    .await;
    assert_eq!(r.status, 413);

    for (body, says) in [
        ("{", "EOF"),
        (r#"{"prompt": 3}"#, "expected a string"),
        (r#"{"prompt": "x", "promt": "y"}"#, "unknown field `promt`"),
        ("[1, 2]", "invalid type"),
    ] {
        let r = request(addr, "POST", "/api/generate", &[], body.as_bytes()).await;
        assert_eq!(r.status, 400, "{body}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("invalid JSON") && error.contains(says),
            "{body}: {error}"
        );
    }
    let r = post_json(
        addr,
        "/api/generate",
        &json!({"prompt": "x", "styles": ["No Such Style"]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "styles");
    assert_eq!(get(addr, "/api/jobs/abc").await.status, 404);
    assert_eq!(get(addr, "/api/jobs/12345").await.status, 404);

    let options = get(addr, "/api/options").await.json();
    assert_eq!(options["aspect_ratios"].as_array().unwrap().len(), 26);
    assert!(options["styles"].as_array().unwrap().len() > 100);
    assert!(options["models"]
        .as_array()
        .unwrap()
        .contains(&json!("sdxl_base.safetensors")));
    assert_eq!(options["defaults"]["base_model"], "sdxl_base.safetensors");
    let health = get(addr, "/api/health").await.json();
    assert_eq!(health["ok"], true, "{health}");
    server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_guards_api_pages_and_websocket() {
    let server = serve(Spec {
        auth: Some("alice:s3cret"),
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    for path in [
        "/",
        "/api/options",
        "/api/queue",
        "/outputs/2024-01-01/x.png",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }
    let token = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let auth = format!("Basic {token}");
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:nope")
    );
    let r = request(
        addr,
        "GET",
        "/api/options",
        &[("Authorization", &wrong)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = request(
        addr,
        "GET",
        "/api/options",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = request(addr, "POST", "/api/generate", &[], b"{}").await;
    assert_eq!(r.status, 401);

    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect_err("no credentials");
    assert!(err.to_string().contains("401"), "{err}");
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", HeaderValue::from_str(&auth).unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("with credentials");
    server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_on_the_lan() {
    let server = serve(Spec {
        listen: "0.0.0.0:0",
        ..Spec::default()
    })
    .await;
    let port = server.addr().port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut foreign = url.clone().into_client_request().unwrap();
    foreign
        .headers_mut()
        .insert("Origin", HeaderValue::from_static("http://evil.example"));
    let err = tokio_tungstenite::connect_async(foreign)
        .await
        .expect_err("foreign origin");
    assert!(err.to_string().contains("403"), "{err}");
    let mut same = url.into_client_request().unwrap();
    same.headers_mut().insert(
        "Origin",
        HeaderValue::from_str(&format!("http://127.0.0.1:{port}")).unwrap(),
    );
    tokio_tungstenite::connect_async(same)
        .await
        .expect("same origin");
    server.server.shutdown().await.unwrap();

    // On loopback, the check is off (a path-prefix proxy may rewrite Host).
    let local = serve(Spec::default()).await;
    let mut foreign = format!("ws://{}/ws", local.addr())
        .into_client_request()
        .unwrap();
    foreign
        .headers_mut()
        .insert("Origin", HeaderValue::from_static("http://localhost:9999"));
    tokio_tungstenite::connect_async(foreign)
        .await
        .expect("loopback allows a proxy's origin");
    local.server.shutdown().await.unwrap();
}
