//! `recman bench …`: the benchmark subcommands (`crate::bench`).

use std::process::ExitCode;

use clap::Subcommand;

use crate::bench;
use crate::home::Home;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable appends from many concurrent appenders, then a full replay;
    /// baseline: a raw `write + fdatasync` loop on the same disk.
    Log(bench::log::Args),
    /// End-to-end jobs through the embedded runtime with no-op writer and provider.
    Jobs(bench::jobs::Args),
    /// Freeze windows of fsfreeze + btrfs jobs (root, loop filesystems);
    /// baseline: the bare FIFREEZE → snapshot ioctl → FITHAW sequence.
    Freeze(bench::freeze::Args),
    /// Takeovers of a standby engine on a PostgreSQL log over RabbitMQ
    /// (kill -9 of the leader, N times) with a stream of requests; baseline:
    /// the database's round trip and advisory-lock acquire.
    Failover(bench::failover::Args),
    /// Engine start-up from a checkpoint and the log's tail on a large log;
    /// baseline: a full replay of the same log.
    Startup(bench::startup::Args),
}

pub async fn run(g: &Home, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Log(a) => bench::log::run(&g.data_dir, a).await,
        BenchCommand::Jobs(a) => bench::jobs::run(&g.data_dir, a).await,
        BenchCommand::Freeze(a) => bench::freeze::run(&g.data_dir, a).await,
        BenchCommand::Failover(a) => bench::failover::run(&g.data_dir, a).await,
        BenchCommand::Startup(a) => bench::startup::run(&g.data_dir, a).await,
    }
}
