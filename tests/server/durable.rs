//! The durable queue: jobs recorded in the output folder's SQLite database survive a killed
//! server (`kill -9`), queued ones run in their order after the restart, the interrupted one
//! continues from its first image not yet saved, and no image is made twice.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{get, post_json, saved_images, wait_job};

/// A `fooocus` server process over the tiny models.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts the binary with `config` on a free port; returns once it listens.
    pub fn start(config: &Path) -> Process {
        Self::start_with(config, &[])
    }

    /// The same with more flags.
    pub fn start_with(config: &Path, flags: &[&str]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fooocus"));
        command.args(server_args(config, flags));
        Self::start_command(command)
    }

    /// Starts `command` (the server, perhaps behind a wrapper); returns once it listens.
    pub fn start_command(mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (found, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = found.send(digits.parse::<u16>().unwrap());
                    break;
                }
            }
            // Keep reading, so the server never blocks on a full pipe.
            lines.for_each(drop);
        });
        let port = port
            .recv_timeout(Duration::from_secs(120))
            .expect("the server did not say where it listens");
        Process {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Ctrl+C: the server shuts down as a user stops it.
    pub fn interrupt(mut self) {
        // SAFETY: signalling our own child process by its id.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) },
            0
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }

    pub fn kill(mut self) {
        // SIGKILL: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's arguments over `config` on a free port, with `flags`.
fn server_args(config: &Path, flags: &[&str]) -> Vec<String> {
    let mut args = vec!["--config".to_owned(), config.display().to_string()];
    args.extend(["--no-browser", "--no-download", "--port", "0"].map(String::from));
    args.extend(flags.iter().map(|f| f.to_string()));
    args
}

pub fn job(prompt: &str, images: u32) -> Value {
    json!({
        "prompt": prompt, "width": 512, "height": 512, "steps": 3, "image_number": images,
        "refiner_model": "None", "seed": 7,
    })
}

/// Every saved image under `outputs` (date folders), with its modification time.
pub fn image_files(outputs: &Path) -> Vec<(std::time::SystemTime, PathBuf)> {
    let mut files = Vec::new();
    for day in std::fs::read_dir(outputs).unwrap().flatten() {
        let name = day.file_name().to_string_lossy().to_string();
        if !day.path().is_dir() || !name.starts_with("20") {
            continue;
        }
        for file in std::fs::read_dir(day.path()).unwrap().flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "png") {
                files.push((file.metadata().unwrap().modified().unwrap(), path));
            }
        }
    }
    files.sort();
    files
}

/// 6 jobs queued, the server killed with SIGKILL while job 2 runs (after its first image),
/// restarted: every job finishes, in order, with exactly the images asked for, none twice, and
/// the history holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_finishes_every_job_once_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::write_tiny_config(dir.path());
    let outputs = crate::common::tiny_config(dir.path()).paths.outputs;
    let asked = [1u32, 3, 1, 2, 1, 1];

    let first = Process::start(&config);
    let mut ids = Vec::new();
    for (i, images) in asked.iter().enumerate() {
        let answer = post_json(
            first.addr,
            "/api/generate",
            &job(&format!("job {i}"), *images),
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        ids.push(answer.json()["job_id"].as_u64().unwrap());
    }
    // Kill as soon as job 2 (index 1) has saved its first image.
    let mut killed_mid_job = false;
    for _ in 0..6000 {
        let status = get(first.addr, &format!("/api/jobs/{}", ids[1]))
            .await
            .json();
        let saved = status["images"].as_array().map_or(0, Vec::len);
        if saved >= 1 {
            killed_mid_job = status["state"] == "running" && saved < 3;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    assert!(killed_mid_job, "the kill did not land inside job 2");

    let second = Process::start(&config);
    for (id, images) in ids.iter().zip(asked) {
        let status = wait_job(second.addr, *id).await;
        assert_eq!(status["state"], "done", "job {id}: {status}");
        let saved = status["images"].as_array().unwrap();
        let indices: Vec<u64> = saved.iter().map(|i| i["index"].as_u64().unwrap()).collect();
        assert_eq!(
            indices,
            (0..u64::from(images)).collect::<Vec<_>>(),
            "job {id}: {status}"
        );
    }
    let total: u32 = asked.iter().sum();
    let files = image_files(&outputs);
    assert_eq!(files.len(), total as usize, "{files:?}");
    // Each (prompt, seed) once, and the jobs' images in the jobs' order.
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for (_, path) in &files {
        let meta = fooocus::store::read_metadata(path).unwrap().unwrap();
        assert!(
            seen.insert((meta.prompt.clone(), meta.seed)),
            "made twice: {path:?}"
        );
        order.push(meta.prompt);
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "the jobs ran out of order");
    assert_eq!(saved_images(second.addr).await, total as usize);
    // The ids go on after the restored ones.
    let next = post_json(second.addr, "/api/generate", &job("after", 1)).await;
    assert_eq!(next.json()["job_id"].as_u64(), Some(ids[5] + 1));
    wait_job(second.addr, ids[5] + 1).await;
}

/// Ctrl+C with jobs queued: after the restart they run; one whose LoRA was deleted meanwhile
/// fails, saying why, instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_queued_at_ctrl_c_run_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::write_tiny_config(dir.path());
    let lora = dir.path().join("loras/vanishing.safetensors");
    std::fs::copy(
        crate::common::fixtures().join("lora/sdxl_lora_kohya.safetensors"),
        &lora,
    )
    .unwrap();
    let first = Process::start(&config);
    let mut with_lora = job("with a LoRA", 1);
    with_lora["loras"] = json!([{"name": "vanishing.safetensors", "weight": 0.5}]);
    let mut ids = Vec::new();
    for body in [job("first", 2), with_lora, job("third", 1)] {
        let answer = post_json(first.addr, "/api/generate", &body).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        ids.push(answer.json()["job_id"].as_u64().unwrap());
    }
    first.interrupt();
    std::fs::remove_file(&lora).unwrap();

    let second = Process::start(&config);
    let ended: Vec<Value> =
        futures_util::future::join_all(ids.iter().map(|id| wait_job(second.addr, *id))).await;
    assert_eq!(ended[0]["state"], "done", "{}", ended[0]);
    assert_eq!(ended[0]["images"].as_array().unwrap().len(), 2);
    assert_eq!(ended[1]["state"], "failed", "{}", ended[1]);
    let error = ended[1]["error"].as_str().unwrap();
    assert!(
        error.contains("after the restart") && error.contains("vanishing.safetensors"),
        "{error}"
    );
    assert_eq!(ended[2]["state"], "done", "{}", ended[2]);
}

/// `--devices cpu,cpu`: one worker thread per device, both taking jobs from the one queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_run_a_worker_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::write_tiny_config(dir.path());
    let server = Process::start_with(&config, &["--devices", "cpu,cpu"]);
    let mut ids = Vec::new();
    for i in 0..4 {
        let answer = post_json(server.addr, "/api/generate", &job(&format!("job {i}"), 1)).await;
        ids.push(answer.json()["job_id"].as_u64().unwrap());
    }
    let mut workers = BTreeSet::new();
    for id in ids {
        let status = wait_job(server.addr, id).await;
        assert_eq!(status["state"], "done", "{status}");
        workers.insert(status["worker"].as_str().unwrap().to_owned());
    }
    assert_eq!(workers, BTreeSet::from(["0".to_owned(), "1".to_owned()]));
}

/// A save that fails (the disk is full; here a file-size limit gives the same write error):
/// the job fails saying why, no half-written file is left, and the next job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_save_fails_the_job_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::write_tiny_config(dir.path());
    // `ulimit -f` in KiB: a 512² PNG of noise (about 700 KiB) cannot be written, a 64² one
    // can; SIGXFSZ ignored, so the write fails instead of killing the server.
    let mut command = Command::new("bash");
    command
        .args(["-c", "trap '' XFSZ; ulimit -f 256; exec \"$@\"", "fooocus"])
        .arg(env!("CARGO_BIN_EXE_fooocus"))
        .args(server_args(&config, &[]));
    let server = Process::start_command(command);
    let answer = post_json(server.addr, "/api/generate", &job("too big to save", 1)).await;
    let status = wait_job(server.addr, answer.json()["job_id"].as_u64().unwrap()).await;
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("File too large"), "{error}");

    let mut small = job("small enough", 1);
    small["width"] = 64.into();
    small["height"] = 64.into();
    let answer = post_json(server.addr, "/api/generate", &small).await;
    let status = wait_job(server.addr, answer.json()["job_id"].as_u64().unwrap()).await;
    assert_eq!(status["state"], "done", "{status}");
    let outputs = crate::common::tiny_config(dir.path()).paths.outputs;
    let mut left = Vec::new();
    for day in std::fs::read_dir(&outputs).unwrap().flatten() {
        if day.path().is_dir() && day.file_name().to_string_lossy().starts_with("20") {
            for file in std::fs::read_dir(day.path()).unwrap().flatten() {
                left.push(file.file_name().to_string_lossy().to_string());
            }
        }
    }
    // Images and temporary files: only the small job's image.
    left.retain(|name| name.ends_with(".png") || name.ends_with(".tmp"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].ends_with(".png") && !left[0].starts_with('.'),
        "{left:?}"
    );
}
