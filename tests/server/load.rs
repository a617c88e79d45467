//! Load: 200 submissions from 8 concurrent API clients while 2 WebSocket clients listen and a
//! third client connects and drops in a loop. Every accepted job finishes (a full queue's 503
//! is the only refusal, and the client submits again), both listeners see every job end, no
//! other 5xx, and the server's memory stays flat between the first and the second hundred.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect, post_json, saved_images, wait_job};
use crate::{serve, Spec};

const CLIENTS: usize = 8;
const JOBS: usize = 200;

/// Resident memory of this process (the server runs in it), bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The ids of the jobs that ended, as one listener saw them.
async fn listen(addr: std::net::SocketAddr, quit: Arc<AtomicBool>) -> BTreeSet<u64> {
    let mut ws = connect(addr).await;
    let mut ended = BTreeSet::new();
    while !quit.load(Ordering::SeqCst) {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(500), ws.next()).await
        else {
            continue;
        };
        if let Message::Text(text) = message {
            let event: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_ne!(event["type"], "lagged", "a listener fell behind: {event}");
            if matches!(event["type"].as_str(), Some("done" | "stopped" | "failed")) {
                ended.insert(event["job_id"].as_u64().unwrap());
            }
        }
    }
    ended
}

/// Submits the jobs of seeds `seeds`, each again after a 503; the accepted ids.
async fn submit(addr: std::net::SocketAddr, seeds: Vec<usize>) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in seeds {
        let body = json!({
            "prompt": "load", "width": 64, "height": 64, "steps": 1, "image_number": 1,
            "refiner_model": "None", "seed": i, "save_metadata": false,
        });
        loop {
            let answer = post_json(addr, "/api/generate", &body).await;
            match answer.status {
                200 => {
                    ids.push(answer.json()["job_id"].as_u64().unwrap());
                    break;
                }
                503 => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("answer {other} to a submission: {:?}", answer.json()),
            }
        }
    }
    ids
}

/// 8 clients submit `JOBS / 2` jobs from `first`; all accepted jobs end done.
async fn one_hundred(addr: std::net::SocketAddr, first: usize) -> Vec<u64> {
    let half = first..first + JOBS / 2;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let seeds = half.clone().filter(|i| i % CLIENTS == c).collect();
            tokio::spawn(submit(addr, seeds))
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    for id in &ids {
        assert_eq!(wait_job(addr, *id).await["state"], "done", "job {id}");
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_submissions_under_load_all_finish() {
    let server = serve(Spec {
        queue: 16,
        ..Spec::default()
    })
    .await;
    let addr = server.addr();
    let quit = Arc::new(AtomicBool::new(false));
    let listeners: Vec<_> = (0..2)
        .map(|_| tokio::spawn(listen(addr, quit.clone())))
        .collect();
    let dropper = {
        let quit = quit.clone();
        tokio::spawn(async move {
            let mut rounds = 0u64;
            while !quit.load(Ordering::SeqCst) {
                let ws = connect(addr).await;
                drop(ws);
                let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
                let _ = half
                    .write_all(b"POST /api/generate HTTP/1.1\r\nContent-Le")
                    .await;
                drop(half);
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            rounds
        })
    };
    // Let the listeners subscribe before the first job.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut ids = one_hundred(addr, 0).await;
    let after_first = rss();
    ids.extend(one_hundred(addr, JOBS / 2).await);
    let after_second = rss();

    tokio::time::sleep(Duration::from_millis(1200)).await;
    quit.store(true, Ordering::SeqCst);
    let rounds = dropper.await.unwrap();
    assert!(rounds > 10, "the dropping client ran {rounds} rounds");
    let all: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(all.len(), JOBS);
    for listener in listeners {
        let seen = listener.await.unwrap();
        assert!(
            all.is_subset(&seen),
            "a listener missed {:?}",
            all.difference(&seen)
        );
    }
    assert_eq!(saved_images(addr).await, JOBS);
    let growth = after_second.saturating_sub(after_first);
    println!("RSS after 100 jobs {after_first} B, after 200 {after_second} B");
    assert!(
        growth < 64 << 20,
        "memory grew by {growth} B over the second hundred"
    );
}
