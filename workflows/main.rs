//! The `wf` binary: see `wf --help` and the README.

fn main() -> std::process::ExitCode {
    // Everything wf creates (journals, raw PII staging, manifests, reports) is owner-only,
    // whatever umask the operator's shell has: 0700 directories, 0600 files.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    wf::main()
}
