//! Generation through the server: events, previews, download with metadata, several clients,
//! a client that leaves mid-job, Stop and Skip.

use std::time::Instant;

use fooocus::store::embedded_text_from_bytes;
use serde_json::{json, Value};

use crate::client::{connect, follow, get, post_json, wait_job};
use crate::{serve, Spec};

fn request(prompt: &str, images: u32, steps: u32) -> Value {
    json!({
        "prompt": prompt,
        "width": 512,
        "height": 512,
        "steps": steps,
        "image_number": images,
        "refiner_switch": 0.5,
        "seed": 4321,
    })
}

async fn submit(addr: std::net::SocketAddr, body: &Value) -> u64 {
    let answer = post_json(addr, "/api/generate", body).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["job_id"].as_u64().unwrap()
}

/// Submit → queued/started/progress events and preview frames on two sockets alike → image
/// done → the PNG downloads with its metadata; then a socket that leaves mid-job loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_streams_to_every_client_and_its_image_downloads() {
    let t0 = Instant::now();
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("app.js"));

    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    let job = submit(addr, &request("a lighthouse at dusk", 1, 4)).await;
    let (seen_a, seen_b) = tokio::join!(
        follow(&mut a, job, |_| false),
        follow(&mut b, job, |_| false)
    );
    let types = seen_a.types();
    assert_eq!(
        types.first().map(String::as_str),
        Some("queued"),
        "{types:?}"
    );
    assert!(types.contains(&"started".to_string()), "{types:?}");
    assert_eq!(seen_a.last()["type"], "done", "{:?}", seen_a.last());
    let progress: Vec<&Value> = seen_a
        .events
        .iter()
        .filter(|e| e["type"] == "progress")
        .collect();
    assert_eq!(progress.len(), 4, "one progress event per step");
    assert_eq!(progress[0]["text"], "Sampling step 1/4, image 1/1");
    assert_eq!(progress[3]["percent"], 100);
    assert!(!seen_a.previews.is_empty(), "at least one preview frame");
    for frame in seen_a.previews.iter().chain(&seen_b.previews) {
        let img = image::load_from_memory_with_format(frame, image::ImageFormat::Jpeg).unwrap();
        assert!(img.width() <= 512 && img.height() <= 512);
    }
    // Both sockets saw the same events.
    assert_eq!(seen_a.events, seen_b.events);

    let image = seen_a
        .events
        .iter()
        .find(|e| e["type"] == "image")
        .expect("an image event");
    assert_eq!(image["seed"], 4321);
    assert_eq!(image["parameters"]["prompt"], "a lighthouse at dusk");
    // The prompt as encoded is recorded beside the prompt as written.
    assert_eq!(
        image["parameters"]["expanded_prompt"],
        "a lighthouse at dusk"
    );
    let encoded = image["parameters"]["encoded_prompt"].as_array().unwrap();
    assert!(
        encoded.iter().any(|t| t
            .as_str()
            .is_some_and(|t| t.contains("a lighthouse at dusk"))),
        "{encoded:?}"
    );
    let url = image["url"].as_str().unwrap();
    assert!(url.starts_with("outputs/"), "relative URL: {url}");
    let png = get(addr, &format!("/{url}")).await;
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));
    let meta = embedded_text_from_bytes(&png.body)
        .unwrap()
        .metadata()
        .expect("metadata in the PNG");
    assert_eq!(meta.prompt, "a lighthouse at dusk");
    assert_eq!(meta.seed, 4321);
    let status = get(addr, &format!("/api/jobs/{job}")).await.json();
    assert_eq!(status["state"], "done");
    assert_eq!(status["images"][0]["url"], url);
    println!("first job: {:.1} s", t0.elapsed().as_secs_f64());

    // A client that leaves after the first step: the job finishes and the image is in history.
    drop(a);
    let mut c = connect(addr).await;
    let job2 = submit(addr, &request("a quiet harbour", 1, 3)).await;
    let seen = follow(&mut c, job2, |e| e["type"] == "progress").await;
    assert_eq!(seen.last()["type"], "progress");
    drop(c);
    let status = wait_job(addr, job2).await;
    assert_eq!(status["state"], "done", "{status}");
    let path = status["images"][0]["path"].as_str().unwrap().to_string();
    let history = get(addr, "/api/history").await.json();
    let listed: Vec<&str> = history["days"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["images"].as_array().unwrap())
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&path.as_str()), "{path} in {listed:?}");
    assert_eq!(listed.len(), 2);
    // The socket b is still there and saw job 2 end too.
    let seen_b2 = follow(&mut b, job2, |_| false).await;
    assert_eq!(seen_b2.last()["type"], "done");
    server.server.shutdown().await.unwrap();
    println!("whole test: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Skip abandons the current image and the job goes on; Stop ends the job within a step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skip_moves_on_and_stop_ends_the_job() {
    let t0 = Instant::now();
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    let mut ws = connect(addr).await;

    let job = submit(addr, &request("a red fox", 2, 3)).await;
    // Images count from 1 from the start.
    let queued = get(addr, &format!("/api/jobs/{job}")).await.json();
    assert_eq!(queued["progress"]["images"], 2, "{queued}");
    assert!(queued["progress"]["image"].as_u64() >= Some(1), "{queued}");
    let mut skipped = false;
    let seen = follow(&mut ws, job, |e| {
        if e["type"] == "progress" && e["image"] == 1 && !skipped {
            skipped = true;
            tokio::spawn(async move {
                let r = crate::client::request(
                    addr,
                    "POST",
                    &format!("/api/jobs/{job}/skip"),
                    &[],
                    b"",
                )
                .await;
                assert_eq!(r.status, 200);
            });
        }
        false
    })
    .await;
    assert_eq!(seen.last()["type"], "done", "{:?}", seen.types());
    let images = seen.last()["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "the first image was skipped");
    assert_eq!(images[0]["index"], 1);
    assert_eq!(images[0]["seed"], 4322);
    // Skip is announced when the image is abandoned, before the next image is saved.
    let types = seen.types();
    let at = |t: &str| types.iter().position(|x| x == t);
    assert!(at("skipped").is_some(), "{types:?}");
    assert!(at("skipped") < at("image"), "{types:?}");
    assert!(seen
        .events
        .iter()
        .filter(|e| e["type"] == "progress")
        .all(|e| e["image"].as_u64() >= Some(1)));
    let status = get(addr, &format!("/api/jobs/{job}")).await.json();
    assert_eq!(status["skipped"], json!([0]));

    let job = submit(addr, &request("a blue whale", 2, 4)).await;
    let seen = follow(&mut ws, job, |e| {
        if e["type"] == "progress" {
            tokio::spawn(async move {
                crate::client::request(addr, "POST", &format!("/api/jobs/{job}/stop"), &[], b"")
                    .await;
            });
        }
        false
    })
    .await;
    assert_eq!(seen.last()["type"], "stopped", "{:?}", seen.types());
    let steps = seen
        .events
        .iter()
        .filter(|e| e["type"] == "progress")
        .count();
    assert!(steps < 8, "stopped early, after {steps} steps");
    let unknown = crate::client::request(addr, "POST", "/api/jobs/999/stop", &[], b"").await;
    assert_eq!(unknown.status, 404);
    server.server.shutdown().await.unwrap();
    println!("skip and stop: {:.1} s", t0.elapsed().as_secs_f64());
}
