//! Bringing the store's jobs back into the table at start: finished ones as they ended, queued
//! and interrupted ones planned again and queued in their original order, each from its first
//! image not yet finished. An image whose name was recorded but not its save counts as saved
//! when its file is there (the crash came after the write), so no image is made twice.

use std::sync::Arc;

use super::events::{JobId, JobImage, Progress};
use super::store::{StoreFault, StoredJob};
use super::table::{JobRecord, JobState, JobStatus, JobTable, Waiting, KEEP_FINISHED};
use super::Replan;
use crate::pipeline::run::RunControl;
use crate::store::OutputStore;

/// Restores the store's jobs into `table`; the highest id it kept (0 when none).
pub(crate) fn restore(
    table: &mut JobTable,
    outputs: &OutputStore,
    replan: Replan<'_>,
) -> Result<JobId, StoreFault> {
    let stored = table.journal.restore(KEEP_FINISHED)?;
    let mut last = table.journal.last_id()?;
    for job in stored {
        last = last.max(job.id);
        restore_job(table, outputs, replan, job);
    }
    if !table.waiting.is_empty() {
        tracing::info!(
            "{} job(s) from before the restart are queued again",
            table.waiting.len()
        );
    }
    Ok(last)
}

fn restore_job(table: &mut JobTable, outputs: &OutputStore, replan: Replan<'_>, job: StoredJob) {
    let id = job.id;
    let mut images = job.images;
    for image in job.pending {
        if outputs
            .resolve(&image.path)
            .is_ok_and(|path| path.is_file())
        {
            table.record(|store| store.saved(id, &image));
            images.push(image);
        }
    }
    images.sort_by_key(|image| image.index);
    let count = job.request.image_number.unwrap_or(1) as usize;
    let steps = job.request.steps.unwrap_or(0) as usize;
    let mut status = JobStatus {
        job_id: id,
        state: job.state,
        position: None,
        prompt: job.request.prompt.clone(),
        progress: Progress::waiting(count, steps),
        images,
        skipped: job.skipped,
        error: job.error,
        started: None,
        worker: None,
    };
    if job.state == JobState::Done {
        status.progress.percent = 100;
    }
    if !job.state.finished() {
        match replan(&job.request) {
            Ok(plan) => {
                status.state = JobState::Queued;
                let first_image = first_unfinished(&status);
                table.waiting.push_back(Waiting {
                    id,
                    plan,
                    first_image,
                });
            }
            Err(why) => {
                let message = format!("it cannot run after the restart: {why}");
                tracing::warn!("job {id}: {message}");
                table.record(|store| store.ended(id, JobState::Failed, Some(&message)));
                status.state = JobState::Failed;
                status.error = Some(message);
            }
        }
    }
    let control = Arc::new(RunControl::default());
    table.records.insert(id, JobRecord { status, control });
}

/// The index after the last image saved or skipped.
fn first_unfinished(status: &JobStatus) -> usize {
    let saved = status.images.iter().map(|image: &JobImage| image.index);
    let skipped = status.skipped.iter().copied();
    saved.chain(skipped).map(|i| i + 1).max().unwrap_or(0)
}
