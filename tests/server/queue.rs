//! The queue: jobs complete in order, a failing job does not stop the next, a full queue
//! answers 503, a queued job can be stopped before it starts, and a stopped job frees its place.

use std::time::Instant;

use serde_json::json;

use crate::client::{connect, follow, get, post_json, request, wait_job, Ws};
use crate::{serve, Spec, TestServer};

/// How many jobs the order test queues (each a real 1-step 512² generation).
const ORDERED_JOBS: usize = 20;

fn cheap(prompt: String) -> serde_json::Value {
    json!({
        "prompt": prompt, "width": 512, "height": 512, "steps": 1, "image_number": 1,
        "refiner_model": "None", "seed": 1, "save_metadata": false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_jobs_run_in_order_and_a_failure_does_not_stop_the_next() {
    let t0 = Instant::now();
    let server = serve(Spec::default()).await;
    let addr = server.addr();
    // A LoRA that passes validation, then disappears before its job runs.
    let vanishing = server.dir.path().join("loras/vanishing.safetensors");
    std::fs::copy(
        crate::common::fixtures().join("lora/sdxl_lora_kohya.safetensors"),
        &vanishing,
    )
    .unwrap();
    let mut ws = connect(addr).await;
    let mut jobs = Vec::new();
    for i in 0..ORDERED_JOBS {
        let mut body = cheap(format!("job {i}"));
        if i == 2 {
            body["loras"] = json!([{ "name": "vanishing.safetensors", "weight": 1.0 }]);
        }
        let answer = post_json(addr, "/api/generate", &body).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let answer = answer.json();
        assert_eq!(answer["position"], i, "position of job {i}");
        jobs.push(answer["job_id"].as_u64().unwrap());
    }
    std::fs::remove_file(&vanishing).unwrap();
    let queue = crate::client::get(addr, "/api/queue").await.json();
    assert_eq!(queue["jobs"].as_array().unwrap().len(), ORDERED_JOBS);

    // Follow every job's events on one socket: starts must come in submission order.
    let mut starts = Vec::new();
    for (i, &job) in jobs.iter().enumerate() {
        let seen = follow(&mut ws, job, |_| false).await;
        let types = seen.types();
        assert!(types.contains(&"started".to_string()), "job {i}: {types:?}");
        starts.push(job);
        if i == 2 {
            assert_eq!(seen.last()["type"], "failed", "{types:?}");
            let message = seen.last()["message"].as_str().unwrap();
            assert!(message.contains("vanishing.safetensors"), "{message}");
        } else {
            assert_eq!(seen.last()["type"], "done", "job {i}: {:?}", seen.last());
        }
    }
    assert_eq!(starts, jobs);
    server.server.shutdown().await.unwrap();
    println!(
        "{ORDERED_JOBS} queued jobs: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A server with two places in its queue, a socket on its events, the request of a long job (4
/// images of 60 steps) and the id of one such job, running.
async fn busy_server() -> (TestServer, Ws, serde_json::Value, u64) {
    let server = serve(Spec {
        queue: 2,
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    let mut ws = connect(addr).await;
    let long = json!({
        "prompt": "a long job", "width": 512, "height": 512, "steps": 60, "image_number": 4,
        "seed": 1,
    });
    let running = post_json(addr, "/api/generate", &long).await.json()["job_id"]
        .as_u64()
        .unwrap();
    follow(&mut ws, running, |e| e["type"] == "progress").await;
    (server, ws, long, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_and_queued_jobs_can_be_stopped() {
    let (server, mut ws, long, first) = busy_server().await;
    let addr = server.addr();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let answer = post_json(addr, "/api/generate", &long).await;
        assert_eq!(answer.status, 200);
        waiting.push(answer.json()["job_id"].as_u64().unwrap());
    }
    let full = post_json(addr, "/api/generate", &long).await;
    assert_eq!(full.status, 503);
    let message = full.json()["error"].as_str().unwrap().to_string();
    assert!(message.contains("queue is full"), "{message}");

    // Stop the waiting ones (they never start), then the running one.
    for &job in &waiting {
        let r = request(addr, "POST", &format!("/api/jobs/{job}/stop"), &[], b"").await;
        assert_eq!(r.status, 200);
        let status = crate::client::get(addr, &format!("/api/jobs/{job}"))
            .await
            .json();
        assert_eq!(status["state"], "stopped");
    }
    request(addr, "POST", &format!("/api/jobs/{first}/stop"), &[], b"").await;
    let seen = follow(&mut ws, first, |_| false).await;
    assert_eq!(seen.last()["type"], "stopped");
    for &job in &waiting {
        let status = crate::client::get(addr, &format!("/api/jobs/{job}"))
            .await
            .json();
        assert_eq!(status["state"], "stopped", "never started: {status}");
        assert!(status["images"].as_array().unwrap().is_empty());
    }
    server.server.shutdown().await.unwrap();
}

/// Fill the queue, stop every queued job, submit again: the new jobs are accepted (stopped jobs
/// no longer hold places), `/api/queue` lists exactly the running job and the new ones in order,
/// and that is what the worker runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_queued_jobs_free_their_places() {
    let (server, mut ws, long, running) = busy_server().await;
    let addr = server.addr();
    let id = |answer: crate::client::Response| {
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        answer.json()["job_id"].as_u64().unwrap()
    };
    for _ in 0..2 {
        let waiting = id(post_json(addr, "/api/generate", &long).await);
        let r = request(addr, "POST", &format!("/api/jobs/{waiting}/stop"), &[], b"").await;
        assert_eq!(r.json()["applied"], true);
    }
    let fresh = [
        id(post_json(addr, "/api/generate", &cheap("fresh one".into())).await),
        id(post_json(addr, "/api/generate", &cheap("fresh two".into())).await),
    ];
    let full = post_json(addr, "/api/generate", &cheap("one too many".into())).await;
    assert_eq!(full.status, 503, "two places, two fresh jobs");

    let queue = get(addr, "/api/queue").await.json();
    let listed: Vec<(u64, String)> = queue["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job_id"].as_u64().unwrap(),
                j["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (running, "running".into()),
            (fresh[0], "queued".into()),
            (fresh[1], "queued".into()),
        ]
    );

    // The worker runs exactly those, in that order.
    request(addr, "POST", &format!("/api/jobs/{running}/stop"), &[], b"").await;
    let mut started = Vec::new();
    let deadline = std::time::Duration::from_secs(300);
    while started.len() < 2 {
        use futures_util::StreamExt;
        let message = tokio::time::timeout(deadline, ws.next())
            .await
            .expect("no event within 300 s")
            .expect("the socket closed")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let event: serde_json::Value = serde_json::from_str(&text).unwrap();
            if event["type"] == "started" {
                started.push(event["job_id"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(started, fresh);
    for job in fresh {
        assert_eq!(wait_job(addr, job).await["state"], "done");
    }
    assert!(get(addr, "/api/queue").await.json()["jobs"]
        .as_array()
        .unwrap()
        .is_empty());
    server.server.shutdown().await.unwrap();
}

/// `--workers 2`: jobs from the one queue run on both workers, each exactly once, and one
/// WebSocket client sees every job's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_the_queue_and_run_each_job_once() {
    use futures_util::StreamExt;
    use std::collections::BTreeMap;
    use tokio_tungstenite::tungstenite::Message;

    let server = serve(Spec {
        workers: 2,
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    let mut ws = connect(addr).await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        let answer = post_json(addr, "/api/generate", &cheap(format!("job {i}"))).await;
        assert_eq!(answer.status, 200);
        jobs.push(answer.json()["job_id"].as_u64().unwrap());
    }
    // Every event of the 8 jobs, by job.
    let mut events: BTreeMap<u64, Vec<serde_json::Value>> = BTreeMap::new();
    let mut ended = 0;
    let mut header = None;
    while ended < jobs.len() {
        let message = tokio::time::timeout(std::time::Duration::from_secs(300), ws.next())
            .await
            .expect("no event within 300 s")
            .expect("the socket closed")
            .unwrap();
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                assert!(
                    header.take().is_some(),
                    "a preview frame without its header"
                );
                continue;
            }
            _ => continue,
        };
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        if event["type"] == "preview" {
            assert!(jobs.contains(&event["job_id"].as_u64().unwrap()));
            header = Some(event);
            continue;
        }
        let Some(job) = event["job_id"].as_u64() else {
            continue;
        };
        if matches!(event["type"].as_str(), Some("done" | "stopped" | "failed")) {
            ended += 1;
        }
        events.entry(job).or_default().push(event);
    }
    let mut workers = std::collections::BTreeSet::new();
    for job in &jobs {
        let seen = &events[job];
        let count = |kind: &str| seen.iter().filter(|e| e["type"] == kind).count();
        assert_eq!(
            (count("started"), count("image"), count("done")),
            (1, 1, 1),
            "job {job}: {seen:?}"
        );
        let started = seen.iter().find(|e| e["type"] == "started").unwrap();
        workers.insert(started["worker"].as_u64().unwrap());
    }
    assert_eq!(
        workers.into_iter().collect::<Vec<_>>(),
        [0, 1],
        "both workers ran jobs"
    );
    assert_eq!(crate::client::saved_images(addr).await, 8);
}
