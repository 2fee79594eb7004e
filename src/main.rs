fn main() -> std::process::ExitCode {
    return_large_blocks_to_the_os();
    lanchat::cli::main()
}

/// Each Argon2 hash allocates and frees a 19 MiB block. glibc raises its mmap
/// threshold to the size of the largest block freed, so from the second hash on
/// these blocks came from malloc arenas and stayed resident: ~440 MiB after 100
/// registrations, for a server that otherwise needs ~15 MiB. A fixed threshold
/// keeps blocks over 1 MiB in their own mappings, unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_blocks_to_the_os() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before any
    // other thread exists. A failure (return 0) just keeps glibc's default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_blocks_to_the_os() {}
