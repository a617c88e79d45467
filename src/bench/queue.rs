//! `fooocus bench --queue N`: the queue's own cost. N jobs go through the job threads with a
//! pipeline that makes nothing (one image named and reported per job, no file written), with
//! the jobs in memory, then recorded in the SQLite job database, and (with `--queue-broker`)
//! handed through Redis to a worker host in this process, all in the same run: jobs per second
//! of each and their cost against memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use crate::broker::{run_host, Dispatch, HostOptions};
use crate::config::{Config, Preset};
use crate::jobs::sqlite::{SqliteStore, DATABASE_FILE};
use crate::jobs::store::{JobStore, MemoryStore};
use crate::jobs::{Event, JobId, RunFn, Worker, WorkerSetup};
use crate::pipeline::models::Models;
use crate::pipeline::plan::{plan, Plan};
use crate::pipeline::request::GenerateRequest;
use crate::pipeline::run::{RunContext, RunEvent, RunOutcome};
use crate::pipeline::styles::StyleLibrary;
use crate::pipeline::PipelineError;
use crate::runtime::Placement;
use crate::store::{OutputStore, SavedImage};

/// Jobs handed to the broker at once (the dispatching threads).
const BROKER_DISPATCHERS: usize = 4;

/// Jobs per second through one kind of queue.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueRate {
    pub store: &'static str,
    pub jobs: usize,
    pub seconds: f64,
    pub jobs_per_second: f64,
}

/// Runs the benchmark with `jobs` jobs per queue, planned against the tiny fixtures in `tiny`;
/// through Redis too when `broker` is given.
pub fn run(jobs: usize, tiny: &Path, broker: Option<&str>) -> anyhow::Result<Vec<QueueRate>> {
    let dir = std::env::temp_dir().join(format!("fooocus-queue-bench-{}", std::process::id()));
    let rates = (|| {
        let bench = Bench::new(tiny, &dir, jobs)?;
        let mut rates = vec![
            bench.through("memory", Box::new(MemoryStore), Arc::new(make_nothing), 1)?,
            bench.through("sqlite", bench.sqlite()?, Arc::new(make_nothing), 1)?,
        ];
        if let Some(url) = broker {
            rates.push(bench.through_broker(url)?);
        }
        Ok(rates)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    rates
}

/// The table of [`run`]'s rates, and each queue's time against memory.
pub fn table(rates: &[QueueRate]) -> String {
    let mut out = String::from("queue     jobs   seconds   jobs/s   time vs memory\n");
    let memory = rates.first().map_or(1.0, |r| r.seconds.max(1e-9));
    for r in rates {
        out += &format!(
            "{:<8} {:>5} {:>9.3} {:>8.1} {:>8.2}x\n",
            r.store,
            r.jobs,
            r.seconds,
            r.jobs_per_second,
            r.seconds / memory
        );
    }
    out
}

struct Bench {
    config: Config,
    preset: Preset,
    plans: Vec<Plan>,
    dir: PathBuf,
}

impl Bench {
    fn new(tiny: &Path, dir: &Path, jobs: usize) -> anyhow::Result<Bench> {
        let mut config = Config::default();
        config.paths.checkpoints = vec![tiny.to_owned()];
        config.paths.loras = vec![tiny.join("lora")];
        config.paths.tokenizer = tiny.join("tokenizer/clip-tokenizer.json");
        config.paths.outputs = dir.join("outputs");
        let preset = Preset {
            base_model: "sdxl_base.safetensors".into(),
            refiner_model: None,
            loras: Vec::new(),
            styles: Vec::new(),
            ..Preset::default()
        };
        let styles = StyleLibrary::default();
        let plans = (0..jobs)
            .map(|i| {
                let request = GenerateRequest {
                    prompt: format!("queue benchmark {i}"),
                    width: Some(512),
                    height: Some(512),
                    steps: Some(1),
                    image_number: Some(1),
                    seed: Some(i as u64),
                    ..GenerateRequest::default()
                };
                plan(&request, &preset, &config, &styles)
                    .with_context(|| format!("the tiny fixtures in {} do not plan", tiny.display()))
            })
            .collect::<anyhow::Result<Vec<Plan>>>()?;
        Ok(Bench {
            config,
            preset,
            plans,
            dir: dir.to_owned(),
        })
    }

    fn sqlite(&self) -> anyhow::Result<Box<dyn JobStore>> {
        let folder = self.dir.join("sqlite");
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        Ok(Box::new(SqliteStore::open(&folder.join(DATABASE_FILE))?))
    }

    fn setup(&self, pipeline: RunFn, workers: usize) -> WorkerSetup {
        WorkerSetup {
            config: Arc::new(self.config.clone()),
            styles: Arc::new(StyleLibrary::default()),
            store: Arc::new(OutputStore::new(self.dir.join("outputs"))),
            placements: vec![Placement::cpu(); workers],
            capacity: self.plans.len().max(1),
            hub: None,
            pipeline,
        }
    }

    /// Submits every plan and waits for every job to end.
    fn through(
        &self,
        name: &'static str,
        store: Box<dyn JobStore>,
        pipeline: RunFn,
        workers: usize,
    ) -> anyhow::Result<QueueRate> {
        let worker = Worker::start_with(self.setup(pipeline, workers), store, &|_| {
            Err("nothing to restore".into())
        })?;
        let mut events = worker.subscribe();
        let start = Instant::now();
        for plan in &self.plans {
            worker.submit(plan.clone())?;
        }
        let mut ended = 0;
        while ended < self.plans.len() {
            match events.blocking_recv() {
                Ok(Event::Done { .. }) => ended += 1,
                Ok(Event::Failed { message, .. }) => {
                    return Err(anyhow!("a job failed: {message}"))
                }
                Ok(_) => {}
                Err(e) => return Err(anyhow!("the queue's events ended: {e}")),
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(QueueRate {
            store: name,
            jobs: self.plans.len(),
            seconds,
            jobs_per_second: self.plans.len() as f64 / seconds.max(1e-9),
        })
    }

    /// The jobs handed through the broker at `url` to a worker host in this process.
    fn through_broker(&self, url: &str) -> anyhow::Result<QueueRate> {
        let runtime = crate::cli::async_runtime().map_err(|e| anyhow!(e))?;
        let dispatch = runtime.block_on(Dispatch::start(url))?;
        let host = HostOptions {
            broker: url.to_owned(),
            name: format!("bench-{}", std::process::id()),
            config: self.config.clone(),
            preset: self.preset.clone(),
            styles: StyleLibrary::default(),
            placement: Placement::cpu(),
            hub: None,
            visibility: Duration::from_secs(30),
            pipeline: Arc::new(make_nothing),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = runtime.spawn(run_host(host, async {
            let _ = stopped.await;
        }));
        let rate = self.through(
            "redis",
            Box::new(MemoryStore),
            dispatch.pipeline(),
            BROKER_DISPATCHERS,
        );
        let _ = stop.send(());
        let _ = runtime.block_on(serving);
        rate
    }
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
