//! Safety: traversal → 404, oversize body → 413, invalid JSON → 400 naming the problem, auth (from
//! `--auth` and an auth file) on pages, API and WebSocket, requests from other web sites refused
//! (by `Sec-Fetch-Site`, and by `Origin` on the LAN), requests naming a foreign host refused (DNS
//! rebinding).

use base64::Engine as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use fooocus::server::{Accounts, Credentials};

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

    // `/api/generate` takes input images: its own, larger limit (4 MiB in the test harness).
    let big = vec![b' '; 5 * 1024 * 1024];
    let r = request(
        addr,
        "POST",
        "/api/generate",
        &[("Content-Type", "application/json")],
        &big,
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("4194304 bytes"), "{error}");

    for (body, says) in [("{", "EOF"), ("[1, 2]", "invalid type")] {
        let r = request(addr, "POST", "/api/generate", &[], body.as_bytes()).await;
        assert_eq!(r.status, 400, "{body}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("invalid JSON") && error.contains(says),
            "{body}: {error}"
        );
    }
    // A value of the wrong type, or an unknown field, is blamed on its field.
    for (body, field, says) in [
        (r#"{"prompt": 3}"#, "prompt", "expected a string"),
        (
            r#"{"prompt": "x", "image_number": "2"}"#,
            "image_number",
            "invalid type",
        ),
        (
            r#"{"prompt": "x", "loras": [{"name": 1}]}"#,
            "loras",
            "loras[0].name",
        ),
        (
            r#"{"prompt": "x", "promt": "y"}"#,
            "promt",
            "unknown field `promt`",
        ),
    ] {
        let r = request(addr, "POST", "/api/generate", &[], body.as_bytes()).await;
        assert_eq!(r.status, 400, "{body}");
        let answer = r.json();
        assert_eq!(answer["field"], field, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{body}: {error}");
    }
    // Addresses and methods axum answers alone get the same JSON body.
    let r = get(addr, "/api/nothing-here").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("/api/nothing-here"));
    let r = get(addr, "/api/generate").await;
    assert_eq!(r.status, 405);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("does not answer GET"), "{error}");
    let r = post_json(
        addr,
        "/api/generate",
        &json!({"prompt": "x", "styles": ["No Such Style"]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "styles");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("GET /api/options"));
    assert_eq!(get(addr, "/api/jobs/abc").await.status, 404);
    assert_eq!(get(addr, "/api/jobs/12345").await.status, 404);

    let options = get(addr, "/api/options").await.json();
    assert_eq!(options["aspect_ratios"].as_array().unwrap().len(), 26);
    assert!(options["styles"].as_array().unwrap().len() > 100);
    // The checkpoint folder (the fixture folder) also holds a LoRA and tensor dumps under
    // `lora/` and `reference/`: only the SDXL checkpoints are models.
    assert_eq!(
        options["models"],
        json!(["sdxl_base.safetensors", "sdxl_refiner.safetensors"])
    );
    assert!(options["loras"]
        .as_array()
        .unwrap()
        .contains(&json!("sdxl_lora_kohya.safetensors")));
    assert_eq!(options["defaults"]["base_model"], "sdxl_base.safetensors");
    let health = get(addr, "/api/health").await.json();
    assert_eq!(health["ok"], true, "{health}");
    server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_guards_api_pages_and_websocket() {
    // bob's password "hunter2" is given as its sha256, as in the original's auth.json.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    std::fs::write(
        &file,
        r#"[{"user": "bob", "hash": "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"}]"#,
    )
    .unwrap();
    let mut accounts = Accounts::load(&file).unwrap();
    accounts.add(&"alice:s3cret".parse::<Credentials>().unwrap());
    let server = serve(Spec {
        auth: Some(accounts),
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
        assert!(r.json()["error"].as_str().unwrap().contains("--auth"));
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
    let bob = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:hunter2")
    );
    let r = request(addr, "GET", "/", &[("Authorization", &bob)], b"").await;
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

/// A WebSocket handshake to `addr` with `headers`: the status it was refused with, or 101.
async fn handshake(addr: std::net::SocketAddr, headers: &[(&'static str, String)]) -> u16 {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("handshake failed otherwise: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_pages_are_refused_on_loopback() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let cross = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Content-Type", "text/plain"),
    ];
    for (method, path) in [
        ("POST", "/api/generate"),
        ("POST", "/api/jobs/1/stop"),
        ("POST", "/api/jobs/1/skip"),
        ("GET", "/api/history"),
        ("GET", "/outputs/2024-01-01/x.png"),
    ] {
        let r = request(addr, method, path, &cross, br#"{"prompt": "x"}"#).await;
        assert_eq!(r.status, 403, "{method} {path}");
        assert!(String::from_utf8_lossy(&r.body).contains("another web site"));
    }
    // A browser without fetch metadata: the Origin decides.
    let old_browser = [
        ("Origin", "http://evil.example"),
        ("Content-Type", "text/plain"),
    ];
    let r = request(
        addr,
        "POST",
        "/api/generate",
        &old_browser,
        br#"{"prompt": "x"}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    let same_site = [("Sec-Fetch-Site", "same-site"), ("Sec-Fetch-Mode", "cors")];
    let r = request(addr, "POST", "/api/jobs/1/stop", &same_site, b"").await;
    assert_eq!(r.status, 403, "another port of localhost is another site");
    // A link from elsewhere still opens the page; the page's own requests pass.
    let link = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
    ];
    assert_eq!(request(addr, "GET", "/", &link, b"").await.status, 200);
    let own = [
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Mode", "cors"),
    ];
    assert_eq!(
        request(addr, "GET", "/api/queue", &own, b"").await.status,
        200
    );
    assert_eq!(
        request(addr, "POST", "/api/jobs/999/stop", &own, b"")
            .await
            .status,
        404
    );
    let ws_cross = [
        ("Sec-Fetch-Site", "cross-site".to_string()),
        ("Origin", "https://evil.example".to_string()),
    ];
    assert_eq!(handshake(addr, &ws_cross).await, 403);
    let ws_own = [("Sec-Fetch-Site", "same-origin".to_string())];
    assert_eq!(handshake(addr, &ws_own).await, 101);
    // Nothing was queued by the refused POST.
    assert_eq!(get(addr, "/api/queue").await.json()["jobs"], json!([]));
    server.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_on_the_lan() {
    let server = serve(Spec {
        listen: "0.0.0.0:0",
        ..Spec::default()
    })
    .await;
    // Plain http on the LAN: browsers send no Sec-Fetch-Site there, so Origin must name Host.
    let port = server.addr().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let evil = [("Origin", "http://evil.example".to_string())];
    assert_eq!(handshake(addr, &evil).await, 403);
    let own = [("Origin", format!("http://127.0.0.1:{port}"))];
    assert_eq!(handshake(addr, &own).await, 101);
    let r = request(
        addr,
        "POST",
        "/api/generate",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        br#"{"prompt": "x"}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    let origin = format!("http://127.0.0.1:{port}");
    let r = request(
        addr,
        "POST",
        "/api/jobs/999/stop",
        &[("Origin", &origin)],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    server.server.shutdown().await.unwrap();

    // On loopback without fetch metadata a proxy's Origin passes (it may rewrite Host).
    let local = serve(Spec::default()).await;
    let proxy = [("Origin", "http://localhost:9999".to_string())];
    assert_eq!(handshake(local.addr(), &proxy).await, 101);
    local.server.shutdown().await.unwrap();
}

/// DNS rebinding: a foreign name pointed at us is same-origin to the browser, so only `Host`
/// tells. It is refused everywhere, with or without a matching `Origin`; addresses, localhost,
/// this machine's name and `--allowed-host` names pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_name_is_refused_everywhere() {
    let server = serve(Spec {
        allowed_hosts: vec!["fooocus.lan".into()],
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    let port = addr.port();
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("http://evil.example:{port}");
    for path in [
        "/",
        "/app.js",
        "/api/queue",
        "/api/history",
        "/outputs/2024-01-01/2024-01-01_00-00-00_1234.png",
        "/thumbs/2024-01-01/2024-01-01_00-00-00_1234.png",
    ] {
        let r = request(addr, "GET", path, &[("Host", &evil)], b"").await;
        assert_eq!(r.status, 403, "{path}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("--allowed-host evil.example"), "{error}");
    }
    let rebound = [
        ("Host", evil.as_str()),
        ("Origin", evil_origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Content-Type", "application/json"),
    ];
    let r = request(
        addr,
        "POST",
        "/api/generate",
        &rebound,
        br#"{"prompt": "x"}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(get(addr, "/api/queue").await.json()["jobs"], json!([]));
    let ws = [
        ("Host", evil.clone()),
        ("Sec-Fetch-Site", "same-origin".to_string()),
    ];
    assert_eq!(handshake(addr, &ws).await, 403);

    let machine = gethostname::gethostname().to_string_lossy().into_owned();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("fooocus.lan:{port}"),
        format!("FOOOCUS.LAN:{port}"),
        format!("{machine}:{port}"),
    ] {
        let r = request(addr, "GET", "/api/queue", &[("Host", &host)], b"").await;
        assert_eq!(r.status, 200, "{host}");
    }
    let ws = [("Host", format!("fooocus.lan:{port}"))];
    assert_eq!(handshake(addr, &ws).await, 101);
    server.server.shutdown().await.unwrap();
}

/// Model and LoRA names are names inside the model folders: a path, `..` or a link leading out is
/// refused before the file is opened, and the answer says nothing about the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_names_never_reach_files_outside_the_model_folders() {
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let outside = server.dir.path().join("private.safetensors");
    std::fs::write(&outside, vec![7u8; 1294]).unwrap();
    std::os::unix::fs::symlink(&outside, server.dir.path().join("loras/escape.safetensors"))
        .unwrap();
    let outside = outside.display().to_string();
    for (field, body) in [
        (
            "base_model",
            json!({"prompt": "x", "base_model": "/etc/passwd"}),
        ),
        (
            "base_model",
            json!({"prompt": "x", "base_model": "../../../etc/passwd"}),
        ),
        ("base_model", json!({"prompt": "x", "base_model": outside})),
        (
            "refiner_model",
            json!({"prompt": "x", "refiner_model": "../private.safetensors"}),
        ),
        (
            "loras",
            json!({"prompt": "x", "loras": [{"name": "/etc/passwd", "weight": 1}]}),
        ),
        (
            "loras",
            json!({"prompt": "x", "loras": [{"name": "../private.safetensors", "weight": 1}]}),
        ),
        (
            "loras",
            json!({"prompt": "x", "loras": [{"name": "escape.safetensors", "weight": 1}]}),
        ),
    ] {
        let r = post_json(addr, "/api/generate", &body).await;
        assert_eq!(r.status, 400, "{body}");
        let answer = r.json();
        assert_eq!(answer["field"], field, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        for leak in [
            "1294",
            "bytes",
            "has only",
            "permission",
            "exists",
            "No such file",
        ] {
            assert!(!error.contains(leak), "{body}: {error}");
        }
    }
    let options = get(addr, "/api/options").await.json();
    assert!(
        !options["loras"].to_string().contains("escape"),
        "{options}"
    );
    assert_eq!(get(addr, "/api/queue").await.json()["jobs"], json!([]));
    server.server.shutdown().await.unwrap();
}

/// Work per request is bounded: a prompt over the limit and a seed out of range are refused,
/// naming the limit, before anything is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_over_the_limit_and_seeds_out_of_range_are_refused() {
    let server = serve(Spec {
        body_limit: 1024 * 1024,
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    let limit = fooocus::pipeline::plan::MAX_PROMPT_CHARS;
    let long = "a".repeat(limit + 1);
    for (field, body) in [
        ("prompt", json!({"prompt": long})),
        (
            "negative_prompt",
            json!({"prompt": "x", "negative_prompt": long}),
        ),
    ] {
        let r = post_json(addr, "/api/generate", &body).await;
        assert_eq!(r.status, 400, "{field}");
        let answer = r.json();
        assert_eq!(answer["field"], field);
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("limit is {limit} characters")),
            "{error}"
        );
    }
    let r = post_json(
        addr,
        "/api/generate",
        &json!({"prompt": "x", "seed": u64::MAX}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "seed");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("9223372036854775807"));
    // The last legal seed is kept as given.
    let r = post_json(
        addr,
        "/api/generate",
        &json!({"prompt": "x", "seed": (1u64 << 63) - 1, "steps": 1, "width": 512, "height": 512}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["seeds"][0], (1u64 << 63) - 1);
    server.server.shutdown().await.unwrap();
}
