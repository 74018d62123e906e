//! The `recman` binary: parses the command line and hands over to `cli`.

fn main() -> std::process::ExitCode {
    recman_engine::cli::main()
}
