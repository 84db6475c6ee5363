//! Process memory hygiene for a 512 MB device: the agent and its pipeline worker are one
//! binary, but each should hold only the memory of what it actually runs.

/// Agent side: the binary also carries the worker's inference code and tables, which the
/// agent never uses, but the dynamic loader reads the relocation tables and the kernel's
/// fault-around maps up to 16 neighbouring pages of every page touched, so several MiB of
/// the file end up resident. The shared libraries are the same on a smaller scale: the loader
/// reads their symbol tables once, to bind our imports, and never again. Read-ahead is
/// switched off for every read-only file mapping and its pages are dropped; from then on only
/// what the agent uses is faulted back in (link/worker.ld keeps the worker's code apart, so
/// that fault-around does not bring it back). Mappings with anonymous (written) pages, such
/// as a relocated RELRO segment, are left alone: dropping those would lose the relocations.
pub fn shed_unused_code() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // A mapping header: "start-end perms offset dev inode path".
            let perms = fields.next().unwrap_or("");
            let file_backed = fields.nth(3).is_some_and(|path| path.starts_with('/'));
            current = match (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) {
                (Ok(s), Ok(e)) if file_backed && perms.starts_with('r') && !perms.contains('w') => Some((s, e)),
                _ => None,
            };
        } else if let (Some((start, end)), "Anonymous:") = (current, first) {
            current = None;
            if fields.next() != Some("0") {
                continue;
            }
            // SAFETY: the range is one of our read-only, file-backed mappings as the
            // kernel lists them, with no anonymous (modified) page: MADV_RANDOM only changes
            // read-ahead, and MADV_DONTNEED only drops clean pages that the next access reads
            // back from the file.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM);
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// Large buffers (the worker's model weights and decoded frames, the store's 512 KiB write
/// buffers in the agent) are always mmapped, so freeing them returns them to the system
/// instead of growing the heap: glibc otherwise raises its mmap threshold after the first
/// large free, and later ones land in the heap, where they fragment it.
pub fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before the process allocates much.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Agent side: glibc gives every thread that allocates its own arena (up to 8 per core),
/// and memory freed in one arena is never reused by another, so the agent's dozen threads
/// (runtime, blocking pool, probe, ring flow, alerts, sled) slowly grow anonymous RSS
/// under load. Two arenas keep contention low on a 4-core Pi and the heap compact.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before any thread is spawned.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives freed heap memory back to the system (worker: after loading models and after each
/// request; agent: on every store maintenance tick).
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory at the top and inside the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}
