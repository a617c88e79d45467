//! Half-precision weights widened to f32 as the kernels read them, into a per-thread buffer that
//! is reused from layer to layer (fresh buffers cost five times as much in page faults as the
//! conversion itself).

use std::cell::Cell;

use rayon::prelude::*;

thread_local! {
    static WIDENED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Values converted per parallel task.
const WIDEN_TASK: usize = 1 << 16;

/// Calls `f` with `src` converted to f32 by `convert` (per parallel chunk) in this thread's
/// reusable buffer.
pub fn widen<T: Sync, R, E>(
    src: &[T],
    f: impl FnOnce(&[f32]) -> Result<R, E>,
    convert: impl Fn(&[T], &mut [f32]) + Sync,
) -> Result<R, E> {
    // Taken out of the cell for the duration, so that rayon work stealing into another
    // `with_f32` on this thread finds an empty buffer instead of a borrowed one.
    let mut buffer = WIDENED.take();
    if buffer.len() < src.len() {
        buffer.resize(src.len(), 0.0);
    }
    let dst = &mut buffer[..src.len()];
    dst.par_chunks_mut(WIDEN_TASK)
        .zip(src.par_chunks(WIDEN_TASK))
        .for_each(|(d, s)| convert(s, d));
    let result = f(dst);
    WIDENED.set(buffer);
    result
}
