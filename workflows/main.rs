//! The `wf` binary: see `wf --help` and the README.

fn main() -> std::process::ExitCode {
    wf::cli::main()
}
