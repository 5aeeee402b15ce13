//! The `wf` binary: see `wf --help` and the README.

/// mimalloc returns freed memory to the OS, where glibc's per-thread arenas kept a large
/// migrate at about twice its heap (see the migrate benchmark's peak memory per step).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Everything wf creates (journals, raw PII staging, manifests, reports) is owner-only,
    // whatever umask the operator's shell has: 0700 directories, 0600 files.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // No transparent huge pages: mimalloc asks for them, and each first touch of a fresh 2 MB
    // region then zeroed all of it (14 % of a migrate's CPU, in page faults) and counted it
    // resident (a scale-25 migrate peaked at 206-225 MB with them, 128-147 MB without).
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    wf::main()
}
