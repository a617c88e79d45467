//! Step previews encoded off the model thread: the thread hands over the newest x0 estimate (a
//! cheap tensor handle) and goes on sampling; a thread of its own turns the newest one into a
//! JPEG for the `watch` channel, dropping any that were overtaken while it worked. A frame of a
//! job that has ended is not published (its latent is dropped unencoded), so a late preview
//! never follows a job's last event.

use std::sync::{Arc, Condvar, Mutex};

use candle_core::Tensor;
use tokio::sync::watch;

use super::events::{JobId, PreviewFrame};
use crate::nets::sdxl::preview::preview_jpeg;

/// One step's latent, waiting to be encoded.
struct Pending {
    job_id: JobId,
    image: usize,
    step: usize,
    denoised: Tensor,
}

#[derive(Default)]
struct Slot {
    newest: Option<Pending>,
    /// The job whose frames may still be published.
    running: Option<JobId>,
    closed: bool,
}

/// The hand-over slot and the encoding thread's output.
pub(crate) struct PreviewEncoder {
    slot: Arc<(Mutex<Slot>, Condvar)>,
    frames: watch::Sender<Option<Arc<PreviewFrame>>>,
}

impl PreviewEncoder {
    /// Starts the encoding thread.
    pub fn start() -> std::io::Result<Self> {
        let slot = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let (frames, _) = watch::channel(None);
        let (thread_slot, thread_frames) = (slot.clone(), frames.clone());
        std::thread::Builder::new()
            .name("fooocus-previews".into())
            .spawn(move || encode_newest(&thread_slot, &thread_frames))?;
        Ok(Self { slot, frames })
    }

    /// A listener for the newest frame.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PreviewFrame>>> {
        self.frames.subscribe()
    }

    /// Hands over step `step` of image `image` (1-based) of job `job_id`, when someone watches
    /// (the sender keeps no receiver of its own).
    pub fn offer(&self, job_id: JobId, image: usize, step: usize, denoised: &Tensor) {
        if self.frames.receiver_count() == 0 {
            return;
        }
        let (lock, ready) = &*self.slot;
        let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
        slot.running = Some(job_id);
        slot.newest = Some(Pending {
            job_id,
            image,
            step,
            denoised: denoised.clone(),
        });
        ready.notify_one();
    }

    /// Publishes a frame encoded elsewhere (a remote worker's).
    pub fn publish(&self, frame: PreviewFrame) {
        let (lock, _) = &*self.slot;
        let slot = lock.lock().unwrap_or_else(|p| p.into_inner());
        if slot.closed {
            return;
        }
        drop(slot);
        self.frames.send_replace(Some(Arc::new(frame)));
    }

    /// Job `job_id` has ended: its frames are no longer published.
    pub fn job_ended(&self, job_id: JobId) {
        let (lock, _) = &*self.slot;
        let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
        if slot.running == Some(job_id) {
            slot.running = None;
            slot.newest = None;
        }
    }
}

impl Drop for PreviewEncoder {
    fn drop(&mut self) {
        let (lock, ready) = &*self.slot;
        lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        ready.notify_one();
    }
}

/// The encoding thread: waits for a latent, encodes it, publishes the frame; ends when closed.
fn encode_newest(slot: &(Mutex<Slot>, Condvar), frames: &watch::Sender<Option<Arc<PreviewFrame>>>) {
    let (lock, ready) = slot;
    loop {
        let pending = {
            let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
            while slot.newest.is_none() && !slot.closed {
                slot = ready.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
            match slot.newest.take() {
                Some(pending) if !slot.closed => pending,
                _ => return,
            }
        };
        match preview_jpeg(&pending.denoised) {
            Ok(jpeg) => {
                // Published under the lock, so that `job_ended` cannot slip in between.
                let slot = lock.lock().unwrap_or_else(|p| p.into_inner());
                if slot.running == Some(pending.job_id) {
                    frames.send_replace(Some(Arc::new(PreviewFrame {
                        job_id: pending.job_id,
                        image: pending.image,
                        step: pending.step,
                        jpeg,
                    })));
                }
            }
            Err(e) => tracing::debug!("no preview for job {}: {e}", pending.job_id),
        }
    }
}
