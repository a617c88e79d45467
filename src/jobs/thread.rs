//! A worker thread's loop (one per worker, each with its own models): takes the next waiting
//! job from the table, runs the pipeline with
//! the shared models, turns run events into job events, previews and job-table updates, and
//! survives a failed or panicking job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::events::{percent, progress_text, Event, JobId, JobImage, PreviewFrame};
use super::table::{JobState, JobTable};
use super::{Shared, WorkerSetup};
use crate::pipeline::models::Models;
use crate::pipeline::plan::Plan;
use crate::pipeline::run::{RunContext, RunControl, RunEvent, RunOutcome};
use crate::pipeline::PipelineError;
use crate::runtime::Placement;
use crate::store::SavedImage;

/// A job taken from the queue.
struct Taken {
    id: JobId,
    plan: Plan,
    first_image: usize,
    control: Arc<RunControl>,
}

/// Closes the table when the thread ends, however it ends, so that no job is accepted that
/// nothing would run.
struct CloseOnExit<'a>(&'a Shared);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        self.0.jobs().closed = true;
    }
}

/// Runs jobs until the table is closed.
pub(crate) fn run(shared: Arc<Shared>, setup: WorkerSetup, worker: usize, placement: Placement) {
    let _close = CloseOnExit(&shared);
    let mut models = Models::new(placement.clone());
    while let Some(job) = next_job(&shared, worker) {
        let control = job.control.clone();
        shared.emit(Event::Started {
            job_id: job.id,
            worker,
        });
        tracing::info!(
            "job {} started on worker {worker}: {:?}",
            job.id,
            job.plan.prompt
        );

        let ctx = RunContext {
            config: &setup.config,
            styles: &setup.styles,
            store: &setup.store,
            control: &control,
            hub: setup.hub.as_ref(),
            first_image: job.first_image,
        };
        let mut on_event = |event: RunEvent<'_>| on_run_event(&shared, &job, event);
        let result = catch_unwind(AssertUnwindSafe(|| {
            (setup.pipeline)(job.id, &job.plan, &mut models, &ctx, &mut on_event)
        }));
        let result = match result {
            Ok(result) => result,
            Err(panic) => {
                // The models may be half-built: start from scratch for the next job.
                models = Models::new(placement.clone());
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(PipelineError::Other(format!(
                    "internal error ({what}); please report it"
                )))
            }
        };
        finish(&shared, job.id, result);
        // What the job's tensors freed would stay resident while the server waits.
        crate::kernels::memory::release_freed();
    }
}

/// Waits for the first waiting job and marks it running on thread `worker`; `None` once the
/// table is closed.
fn next_job(shared: &Shared, worker: usize) -> Option<Taken> {
    let mut jobs = shared.jobs();
    loop {
        if jobs.closed {
            return None;
        }
        if let Some(waiting) = jobs.waiting.pop_front() {
            let id = waiting.id;
            let Some(record) = jobs.records.get_mut(&id) else {
                continue;
            };
            record.status.state = JobState::Running;
            record.status.started = Some(std::time::Instant::now());
            record.status.worker = Some(worker.to_string());
            let control = record.control.clone();
            jobs.running.push(id);
            jobs.record(|store| store.started(id));
            return Some(Taken {
                id,
                plan: waiting.plan,
                first_image: waiting.first_image,
                control,
            });
        }
        jobs = shared.wake.wait(jobs).unwrap_or_else(|p| p.into_inner());
    }
}

/// Records the end of job `id` and tells the listeners. A job that shutdown stopped is not
/// recorded as ended: it continues at the next start.
fn finish(shared: &Shared, id: u64, result: Result<RunOutcome, PipelineError>) {
    shared.previews.job_ended(id);
    let event = {
        let mut jobs = shared.jobs();
        jobs.running.retain(|&r| r != id);
        let event = ended(&mut jobs, id, result);
        let shutting_down = jobs.closed && matches!(event, Some(Event::Stopped { .. }));
        if let (Some(status), false) = (jobs.status(id), shutting_down) {
            let (state, error) = (status.state, status.error.clone());
            jobs.record(|store| store.ended(id, state, error.as_deref()));
        }
        event
    };
    if let Some(event) = event {
        shared.emit(event);
    }
}

/// Sets job `id`'s end in the table: the event that announces it.
fn ended(
    jobs: &mut JobTable,
    id: JobId,
    result: Result<RunOutcome, PipelineError>,
) -> Option<Event> {
    let status = jobs.get_mut(id)?;
    Some({
        match result {
            // Skipped images were recorded as they were skipped (with those from before a
            // restart).
            Ok(outcome) => {
                if outcome.stopped {
                    status.state = JobState::Stopped;
                    Event::Stopped {
                        job_id: id,
                        images: status.images.clone(),
                    }
                } else {
                    status.state = JobState::Done;
                    status.progress.percent = 100;
                    Event::Done {
                        job_id: id,
                        images: status.images.clone(),
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!("job {id} failed: {message}");
                status.state = JobState::Failed;
                status.error = Some(message.clone());
                Event::Failed {
                    job_id: id,
                    message,
                }
            }
        }
    })
}

/// One run event → job table (and its store), broadcast and preview.
fn on_run_event(shared: &Shared, job: &Taken, event: RunEvent<'_>) {
    let id = job.id;
    match event {
        RunEvent::Stage(text) => {
            if let Some(status) = shared.jobs().get_mut(id) {
                status.progress.text = text.clone();
            }
            shared.emit(Event::Stage { job_id: id, text });
        }
        RunEvent::Worker(name) => {
            if let Some(status) = shared.jobs().get_mut(id) {
                status.worker = Some(name.clone());
            }
            shared.emit(Event::Stage {
                job_id: id,
                text: format!("Running on {name}"),
            });
        }
        RunEvent::ImageStarted { index, images } => {
            if let Some(status) = shared.jobs().get_mut(id) {
                status.progress.image = index + 1;
                status.progress.images = images;
                status.progress.step = 0;
            }
        }
        RunEvent::Skipped { index } => {
            let mut jobs = shared.jobs();
            if let Some(status) = jobs.get_mut(id) {
                status.skipped.push(index);
            }
            jobs.record(|store| store.skipped(id, index));
            drop(jobs);
            shared.emit(Event::Skipped { job_id: id, index });
        }
        RunEvent::Step {
            image,
            images,
            step,
            steps,
            denoised,
        } => on_step(shared, id, (image, images), (step, steps), denoised),
        RunEvent::Preview { image, step, jpeg } => shared.previews.publish(PreviewFrame {
            job_id: id,
            image,
            step,
            jpeg: jpeg.to_vec(),
        }),
        RunEvent::Saving { index, relative } => {
            let named = JobImage {
                index,
                seed: job.plan.seeds.get(index).copied().unwrap_or(0),
                path: relative.to_owned(),
            };
            shared.jobs().record(|store| store.saving(id, &named));
        }
        RunEvent::Saved { index, seed, image } => on_saved(shared, id, index, seed, image),
    }
}

/// A sampling step: progress in the table and to the listeners, the preview to its encoder
/// (`image` and `step` 0-based, with their totals).
fn on_step(
    shared: &Shared,
    id: JobId,
    (image, images): (usize, usize),
    (step, steps): (usize, usize),
    denoised: Option<&candle_core::Tensor>,
) {
    let (image, step) = (image.saturating_add(1), step.saturating_add(1));
    let progress = super::events::Progress {
        image,
        images,
        step,
        steps,
        percent: percent(step, steps, image, images),
        text: progress_text(step, steps, image, images),
    };
    if let Some(status) = shared.jobs().get_mut(id) {
        status.progress = progress.clone();
    }
    shared.emit(Event::Progress {
        job_id: id,
        progress,
    });
    if let Some(denoised) = denoised {
        shared.previews.offer(id, image, step, denoised);
    }
}

/// An image saved: in the table, in the store, and to the listeners with its metadata.
fn on_saved(shared: &Shared, id: JobId, index: usize, seed: u64, image: &SavedImage) {
    let job_image = JobImage {
        index,
        seed,
        path: image.relative.clone(),
    };
    let mut jobs = shared.jobs();
    if let Some(status) = jobs.get_mut(id) {
        status.images.push(job_image.clone());
    }
    jobs.record(|store| store.saved(id, &job_image));
    drop(jobs);
    shared.emit(Event::Image {
        job_id: id,
        image: job_image,
        parameters: image.metadata.clone(),
    });
}
