//! Workers on other hosts through Redis: a server with `--broker` and two `fooocus worker`
//! processes over a `redis-server` the test starts (append-only file on). Ten jobs finish
//! exactly once although one worker is killed mid-job and the broker restarts mid-run; the
//! same request made by one process gives the same bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{get, post_json, wait_job};
use crate::durable::{image_files, job, Process};

/// A `redis-server` on a free port, its data in a folder of its own.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts one, or `None` (the test is skipped) when redis-server is not installed.
    fn start(dir: &Path) -> Option<Redis> {
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: dir.to_owned(),
        };
        redis.spawn()?;
        Some(redis)
    }

    fn spawn(&mut self) -> Option<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if std::env::var_os("FOOOCUS_REQUIRE_ALL_TESTS").is_some() => {
                panic!("redis-server cannot start ({e}): install it (apt install redis-server)")
            }
            Err(e) => {
                eprintln!("skipped: redis-server cannot start ({e})");
                return None;
            }
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops it the hard way and starts it again on the same port and data.
    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.spawn().unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `fooocus worker` process.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(config: &Path, url: &str, name: &str) -> WorkerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_fooocus"))
            .arg("--config")
            .arg(config)
            .args(["worker", "--broker", url, "--name", name])
            .args(["--visibility-timeout", "3", "--no-download"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        WorkerProcess(child)
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls the jobs until one is running on `worker` with a step done; its id.
async fn running_on(addr: std::net::SocketAddr, ids: &[u64], worker: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        for id in ids {
            let status = get(addr, &format!("/api/jobs/{id}")).await.json();
            let text = status["progress"]["text"].as_str().unwrap_or_default();
            if status["state"] == "running"
                && text.starts_with("Sampling")
                && status["worker"].as_str() == Some(worker)
            {
                return *id;
            }
        }
        assert!(Instant::now() < deadline, "no job ran on {worker}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_survive_a_killed_worker_and_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut redis) = Redis::start(&dir.path().join("redis")) else {
        return;
    };
    let config = crate::common::write_tiny_config(dir.path());
    let outputs = crate::common::tiny_config(dir.path()).paths.outputs;
    // The workers' own configuration: the same models, but not the LoRA only the server has.
    let hosts = dir.path().join("hosts");
    std::fs::create_dir_all(&hosts).unwrap();
    let host_config = crate::common::write_tiny_config(&hosts);
    std::fs::copy(
        crate::common::fixtures().join("lora/sdxl_lora_kohya.safetensors"),
        dir.path().join("loras/only_on_the_server.safetensors"),
    )
    .unwrap();
    let url = redis.url();
    let server = Process::start_with(&config, &["--broker", &url, "--workers", "4"]);
    let first = WorkerProcess::start(&host_config, &url, "w1");
    let _second = WorkerProcess::start(&host_config, &url, "w2");

    let asked: Vec<u32> = (0..10).map(|i| 1 + (i % 3 == 0) as u32 * 2).collect();
    let mut ids = Vec::new();
    for (i, images) in asked.iter().enumerate() {
        let answer = post_json(
            server.addr,
            "/api/generate",
            &job(&format!("job {i:02}"), *images),
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        ids.push(answer.json()["job_id"].as_u64().unwrap());
    }
    let victim = running_on(server.addr, &ids, "w1").await;
    first.kill();

    // The broker goes away while jobs run, and comes back.
    let ended = |s: &Value| matches!(s["state"].as_str(), Some("done" | "stopped" | "failed"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut done = 0;
        for id in &ids {
            done += usize::from(ended(
                &get(server.addr, &format!("/api/jobs/{id}")).await.json(),
            ));
        }
        if done >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs stalled after the worker died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.restart();

    for (id, images) in ids.iter().zip(&asked) {
        let status = wait_job(server.addr, *id).await;
        assert_eq!(status["state"], "done", "job {id}: {status}");
        let indices: Vec<u64> = status["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["index"].as_u64().unwrap())
            .collect();
        assert_eq!(
            indices,
            (0..u64::from(*images)).collect::<Vec<_>>(),
            "job {id}"
        );
    }
    let victim_status = get(server.addr, &format!("/api/jobs/{victim}"))
        .await
        .json();
    assert_eq!(victim_status["worker"], "w2", "{victim_status}");

    // A model no worker has: the job fails with the worker's reason instead of waiting.
    let mut lacking = job("a LoRA no worker has", 1);
    lacking["loras"] =
        serde_json::json!([{"name": "only_on_the_server.safetensors", "weight": 0.5}]);
    let answer = post_json(server.addr, "/api/generate", &lacking).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let status = wait_job(server.addr, answer.json()["job_id"].as_u64().unwrap()).await;
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("worker w2 cannot run it") && error.contains("only_on_the_server"),
        "{error}"
    );
    let files = image_files(&outputs);
    let total: u32 = asked.iter().sum();
    assert_eq!(files.len(), total as usize, "{files:?}");
    let mut seen = BTreeSet::new();
    for (_, path) in &files {
        let meta = fooocus::store::read_metadata(path).unwrap().unwrap();
        assert!(
            seen.insert((meta.prompt, meta.seed)),
            "made twice: {path:?}"
        );
    }
    drop(server);

    // The same request on one process: the same bytes.
    let through_redis = get_image_bytes(&files, "job 00", 7);
    let alone_dir = tempfile::tempdir().unwrap();
    let alone_config = crate::common::write_tiny_config(alone_dir.path());
    let alone = Process::start(&alone_config);
    let answer = post_json(alone.addr, "/api/generate", &job("job 00", 3)).await;
    let status = wait_job(alone.addr, answer.json()["job_id"].as_u64().unwrap()).await;
    assert_eq!(status["state"], "done", "{status}");
    let alone_outputs = crate::common::tiny_config(alone_dir.path()).paths.outputs;
    let one_process = get_image_bytes(&image_files(&alone_outputs), "job 00", 7);
    assert!(through_redis == one_process, "the images differ");
}

/// The bytes of the image of `prompt` and `seed` among `files`.
fn get_image_bytes(files: &[(std::time::SystemTime, PathBuf)], prompt: &str, seed: u64) -> Vec<u8> {
    for (_, path) in files {
        let meta = fooocus::store::read_metadata(path).unwrap().unwrap();
        if meta.prompt == prompt && meta.seed == seed {
            return std::fs::read(path).unwrap();
        }
    }
    panic!("no image of {prompt:?} with seed {seed}");
}

/// With no worker running, Stop ends a handed-out job at once and Ctrl+C stops the server; after
/// a restart with a worker, the job queued at Ctrl+C runs and the stopped one never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_and_ctrl_c_need_no_worker() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = Redis::start(&dir.path().join("redis")) else {
        return;
    };
    let config = crate::common::write_tiny_config(dir.path());
    let url = redis.url();
    let server = Process::start_with(&config, &["--broker", &url]);
    let answer = post_json(server.addr, "/api/generate", &job("nobody runs me", 1)).await;
    let id = answer.json()["job_id"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    let answer = post_json(
        server.addr,
        &format!("/api/jobs/{id}/stop"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(answer.status, 200);
    let status = wait_job(server.addr, id).await;
    assert_eq!(status["state"], "stopped", "{status}");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );

    let second = post_json(server.addr, "/api/generate", &job("queued at Ctrl+C", 1)).await;
    assert_eq!(second.status, 200);
    let quitting = Instant::now();
    server.interrupt();
    assert!(
        quitting.elapsed() < Duration::from_secs(30),
        "{:?}",
        quitting.elapsed()
    );

    let restarted = Process::start_with(&config, &["--broker", &url]);
    let _worker = WorkerProcess::start(&config, &url, "late");
    let second = second.json()["job_id"].as_u64().unwrap();
    let status = wait_job(restarted.addr, second).await;
    assert_eq!(status["state"], "done", "{status}");
    let status = get(restarted.addr, &format!("/api/jobs/{id}")).await.json();
    assert_eq!(status["state"], "stopped", "{status}");
    let outputs = crate::common::tiny_config(dir.path()).paths.outputs;
    let prompts: Vec<String> = image_files(&outputs)
        .iter()
        .map(|(_, p)| fooocus::store::read_metadata(p).unwrap().unwrap().prompt)
        .collect();
    assert_eq!(prompts, ["queued at Ctrl+C"]);
}
