//! Handing freed memory back to the operating system. glibc keeps the memory of freed tensors
//! smaller than its mmap threshold (up to 32 MiB: most weights) inside its heap, where it counts
//! towards the resident set until reused; after dropping a network that is gigabytes.
//! `malloc_trim(0)` releases every free page of every arena. Elsewhere this does nothing.

/// Releases the allocator's free pages to the system (glibc only).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
