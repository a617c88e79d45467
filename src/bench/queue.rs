//! `fooocus bench --queue N`: the queue's own cost. N jobs go through the job threads with a
//! pipeline that makes nothing (one image named and recorded per job, no file written), once
//! with the jobs in memory and once recorded in the SQLite job database, in the same run; jobs
//! per second of each and their ratio.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::config::Config;
use crate::jobs::sqlite::{SqliteStore, DATABASE_FILE};
use crate::jobs::store::{JobStore, MemoryStore};
use crate::jobs::{Event, JobId, Worker, WorkerSetup};
use crate::pipeline::guidance::Guidance;
use crate::pipeline::models::Models;
use crate::pipeline::plan::{AdmScalers, ModelRef, Plan, Task};
use crate::pipeline::request::Performance;
use crate::pipeline::run::{RunContext, RunEvent, RunOutcome};
use crate::pipeline::styles::StyleLibrary;
use crate::pipeline::PipelineError;
use crate::runtime::Placement;
use crate::sampling::{Sampler, Scheduler};
use crate::store::{OutputFormat, OutputStore, SavedImage};

/// Jobs per second through one kind of store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueRate {
    pub store: &'static str,
    pub jobs: usize,
    pub seconds: f64,
    pub jobs_per_second: f64,
}

/// Runs the benchmark with `jobs` jobs per store.
pub fn run(jobs: usize) -> anyhow::Result<Vec<QueueRate>> {
    let dir = std::env::temp_dir().join(format!("fooocus-queue-bench-{}", std::process::id()));
    let rates = (|| {
        let memory = through(jobs, dir.join("memory"), |_| Ok(Box::new(MemoryStore)))?;
        let sqlite = through(jobs, dir.join("sqlite"), |outputs| {
            std::fs::create_dir_all(outputs)
                .with_context(|| format!("cannot create {}", outputs.display()))?;
            Ok(Box::new(SqliteStore::open(&outputs.join(DATABASE_FILE))?))
        })?;
        Ok(vec![memory, sqlite])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    rates
}

/// The table of [`run`]'s rates and the SQLite store's cost against memory.
pub fn table(rates: &[QueueRate]) -> String {
    let mut out = String::from("store     jobs   seconds   jobs/s\n");
    for r in rates {
        out += &format!(
            "{:<8} {:>5} {:>9.3} {:>8.1}\n",
            r.store, r.jobs, r.seconds, r.jobs_per_second
        );
    }
    if let [memory, sqlite] = rates {
        out += &format!(
            "sqlite / memory time: {:.2}x\n",
            sqlite.seconds / memory.seconds.max(1e-9)
        );
    }
    out
}

fn through(
    jobs: usize,
    outputs: PathBuf,
    open: impl FnOnce(&std::path::Path) -> anyhow::Result<Box<dyn JobStore>>,
) -> anyhow::Result<QueueRate> {
    let store = open(&outputs)?;
    let name = if outputs.ends_with("memory") {
        "memory"
    } else {
        "sqlite"
    };
    let mut config = Config::default();
    config.paths.outputs = outputs.clone();
    let setup = WorkerSetup {
        config: Arc::new(config),
        styles: Arc::new(StyleLibrary::default()),
        store: Arc::new(OutputStore::new(outputs)),
        placement: Placement::cpu(),
        capacity: jobs.max(1),
        hub: None,
        workers: 1,
        pipeline: Arc::new(make_nothing),
    };
    let worker = Worker::start_with(setup, store, &|_| Err("nothing to restore".into()))?;
    let mut events = worker.subscribe();
    let start = Instant::now();
    for i in 0..jobs {
        worker.submit(plan(i as u64))?;
    }
    let mut ended = 0;
    while ended < jobs {
        match events.blocking_recv() {
            Ok(Event::Done { .. } | Event::Failed { .. } | Event::Stopped { .. }) => ended += 1,
            Ok(_) => {}
            Err(e) => anyhow::bail!("the queue's events ended: {e}"),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(QueueRate {
        store: name,
        jobs,
        seconds,
        jobs_per_second: jobs as f64 / seconds.max(1e-9),
    })
}

/// A pipeline that makes nothing: each image is named and reported saved, no file written.
fn make_nothing(
    _: JobId,
    plan: &Plan,
    _: &mut Models,
    _: &RunContext<'_>,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunOutcome, PipelineError> {
    for (index, &seed) in plan.seeds.iter().enumerate() {
        let relative = format!("bench/{seed}.png");
        on_event(RunEvent::Saving {
            index,
            relative: &relative,
        });
        let image = SavedImage {
            path: PathBuf::from(&relative),
            relative: relative.clone(),
            metadata: None,
        };
        on_event(RunEvent::Saved {
            index,
            seed,
            image: &image,
        });
    }
    Ok(RunOutcome::default())
}

/// A one-image text-to-image plan with seed `seed`.
fn plan(seed: u64) -> Plan {
    let model = ModelRef {
        name: "bench.safetensors".into(),
        path: PathBuf::from("bench.safetensors"),
    };
    Plan {
        task: Task::TextToImage,
        prompt: format!("queue benchmark {seed}"),
        negative_prompt: String::new(),
        styles: Vec::new(),
        performance: Performance::Speed,
        width: 1024,
        height: 1024,
        seeds: vec![seed],
        base_model: model,
        refiner: None,
        loras: Vec::new(),
        steps: 30,
        sampler: Sampler::Euler,
        scheduler: Scheduler::Karras,
        guidance: Guidance {
            cfg: 7.0,
            mimic: 7.0,
            sharpness: 2.0,
        },
        adm: AdmScalers {
            positive: 1.5,
            negative: 0.8,
            end: 0.3,
        },
        clip_skip: 2,
        output_format: OutputFormat::Png,
        save_metadata: true,
    }
}
