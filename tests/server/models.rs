//! A server with nothing installed and no network: it starts, `/api/health` lists the missing
//! files with where they go, the page carries the banner, a generation request says what is
//! missing, and a model put in a folder while the server runs is listed at the next request.

use serde_json::json;

use crate::client::{get, post_json};
use crate::{common, serve, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_models_or_network_the_server_says_what_to_put_where() {
    let offline = fooocus::hub::HubClient::new("http://127.0.0.1:9")
        .with_retries(0, std::time::Duration::from_millis(1));
    let server = serve(Spec {
        no_models: true,
        hub: Some(offline),
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    let health = get(addr, "/api/health").await.json();
    assert_eq!(health["ok"], false, "{health}");
    let missing = health["missing_models"].as_array().unwrap();
    let names: Vec<&str> = missing
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "sdxl_base.safetensors",
            "sdxl_refiner.safetensors",
            "tokenizer.json"
        ],
        "{health}"
    );
    let dir = server.dir.path().display().to_string();
    assert!(
        missing
            .iter()
            .all(|m| m["dest"].as_str().unwrap().starts_with(&dir)),
        "{health}"
    );
    assert_eq!(missing[2]["downloadable"], true);

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("id=\"banner\""));

    let refused = post_json(addr, "/api/generate", &json!({"prompt": "a cat"})).await;
    assert_eq!(refused.status, 400);
    let message = refused.json()["error"].to_string();
    assert!(message.contains("sdxl_base.safetensors"), "{message}");

    // A checkpoint copied in while the server runs is listed at once.
    let before = get(addr, "/api/options").await.json();
    assert_eq!(before["models"], json!([]), "{before}");
    std::fs::create_dir_all(server.dir.path().join("checkpoints/sub")).unwrap();
    std::fs::copy(
        common::fixtures().join("sdxl_base.safetensors"),
        server
            .dir
            .path()
            .join("checkpoints/sub/sdxl_base.safetensors"),
    )
    .unwrap();
    let after = get(addr, "/api/options").await.json();
    assert!(
        after.to_string().contains("sub/sdxl_base.safetensors"),
        "{after}"
    );
    let health = get(addr, "/api/health").await.json();
    let names: Vec<String> = health["missing_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !names.contains(&"sdxl_base.safetensors".to_string()),
        "{health}"
    );
}
