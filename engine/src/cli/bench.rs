//! `recman bench …`: the benchmark subcommands.

use std::process::ExitCode;

use clap::Subcommand;

use super::{bench_freeze, bench_jobs, bench_log, Global};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable appends from many concurrent appenders, then a full replay;
    /// baseline: a raw `write + fdatasync` loop on the same disk.
    Log(bench_log::Args),
    /// End-to-end jobs through the embedded runtime with no-op writer and provider.
    Jobs(bench_jobs::Args),
    /// Freeze windows of fsfreeze + btrfs jobs (root, loop filesystems);
    /// baseline: the bare FIFREEZE → snapshot ioctl → FITHAW sequence.
    Freeze(bench_freeze::Args),
}

pub async fn run(g: &Global, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Log(a) => bench_log::run(g, a).await,
        BenchCommand::Jobs(a) => bench_jobs::run(g, a).await,
        BenchCommand::Freeze(a) => bench_freeze::run_bench(g, a).await,
    }
}
