//! How the process uses glibc's allocator. By default glibc maps every block above its mmap
//! threshold (at most 32 MiB: most activations of a 1024² UNet step) afresh and unmaps it when
//! freed, so each such tensor is page-faulted and zeroed by the kernel again; that was a fifth of
//! a linear layer's time. `reuse_freed_memory` keeps those blocks in the heap instead, where the
//! next tensor of the same size reuses the pages. The price is that freed memory stays resident
//! until reused, so `release_freed` (`malloc_trim(0)`, every free page of every arena) runs
//! after a network is built (the dense weights its layers packed) or dropped, and after each
//! job. Elsewhere than glibc both do nothing.

/// Makes glibc serve large blocks from its heap and keep freed memory there (call once, before
/// the first large allocation).
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; it is thread-safe.
    unsafe {
        // No block is mmapped on its own, and the heap's free top is not given back by free().
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// Releases the allocator's free pages to the system (glibc only).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Maps `file` read-only.
pub fn map_read_only(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only; a file changed underneath while mapped is the same hazard
    // every safetensors reader accepts (candle, diffusers, ComfyUI).
    unsafe { memmap2::Mmap::map(file) }
}

/// Tells the kernel that the process no longer needs the pages of `map` in `offset..+len`, so
/// they stop counting towards its memory; a later read faults the same file bytes in again.
/// Nothing happens off Unix.
pub fn drop_pages(map: &memmap2::Mmap, offset: usize, len: usize) -> std::io::Result<()> {
    #[cfg(unix)]
    // SAFETY: the mapping is a read-only view of a file, so dropping its pages loses nothing: a
    // later read of them sees the file's bytes again.
    unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
    }
    #[cfg(not(unix))]
    {
        let _ = (map, offset, len);
        Ok(())
    }
}
