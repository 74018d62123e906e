//! The `recman` command line: global options and one module per subcommand,
//! each only wiring (parse its flags, call the library, print, exit code).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod approve;
pub mod audit;
pub mod audit_proof;
pub mod bench;
pub mod cancel;
pub mod check;
pub mod clone;
pub mod clones;
pub mod dlq;
pub mod engine;
pub mod events;
pub mod job;
pub mod jobs;
pub mod log;
pub mod mount;
pub mod mounts;
pub mod prune;
pub mod reconcile;
pub mod replay;
pub mod restore;
pub mod schedules;
pub mod simulate;
pub mod snapshot;
pub mod snapshots;
pub mod targets;
pub mod unmount;
pub mod up;
pub mod user;
pub mod validate;
pub mod verify;
pub mod worker;

use crate::home::Home;

/// recman: application-consistent snapshots, orchestrated as an event-sourced
/// job (freeze → snapshot → thaw → flush logs) and recorded in a durable,
/// hash-chained, replayable event log.
#[derive(Debug, Parser)]
#[command(name = "recman", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Start with `recman snapshot demo`: it needs no config and shows every stage.\n\
Exit codes: 0 success, 1 the command ran and found a failure (failed job, audit findings,\n\
simulator violation), 2 the command could not run (bad arguments, bad config, unreadable log)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Home,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a snapshot of one or more targets (or `demo`) and show every stage.
    Snapshot(snapshot::Args),
    /// Run the engine, the local workers of the config and the HTTP API until Ctrl-C.
    Up(up::Args),
    /// Run the engine alone on RabbitMQ (requests, reports, commands, events).
    Engine(engine::Args),
    /// Run a worker on RabbitMQ for one or more pools.
    Worker(worker::Args),
    /// Print the event log.
    Events(events::Args),
    /// List jobs, newest first.
    Jobs(jobs::Args),
    /// Show one job with its timeline.
    Job(job::Args),
    /// List targets: state, queue depth, last snapshot, last failure.
    Targets(targets::Args),
    /// The snapshot catalog: restore points recman holds, with their expiry.
    Snapshots(snapshots::Args),
    /// Schedules: next firing, last outcome; `pause ID` / `resume ID`.
    Schedules(schedules::Args),
    /// Cancel a job through the running server.
    Cancel(cancel::Args),
    /// Approve an in-place restore waiting for a second admin (four-eyes).
    Approve(approve::Args),
    /// The broker's dead letters: list, show, publish again or drop (RabbitMQ mode).
    Dlq(dlq::Args),
    /// Apply the retention rules now; --dry-run shows what each rule keeps and why.
    Prune(prune::Args),
    /// Check the catalog against the storage now: what vanished, what is unknown.
    Reconcile(reconcile::Args),
    /// Verify a restore point again (the target's verifier) and wait for the verdict.
    Verify(verify::Args),
    /// Bring a restore point back: in place (stop, safety snapshot, revert, start) or --to PATH.
    Restore(restore::Args),
    /// Mount a restore point on a host (its provider pool, or --on POOL_OR_WORKER; read-only unless --writable).
    Mount(mount::Args),
    /// Take away a mount (`recman mounts` lists them).
    Unmount(unmount::Args),
    /// Make a writable clone of a restore point (`--as NAME`), or remove one (`clone rm NAME`).
    Clone(clone::Args),
    /// List the mounted restore points: where, since when, by which job, writable.
    Mounts(mounts::Args),
    /// List the clones: where, from which point, since when, by which job.
    Clones(clones::Args),
    /// Rebuild the state from the log (up to a point) and print it.
    Replay(replay::Args),
    /// Verify every record of the log: checksum, decoding, hash chain.
    Audit(audit::Args),
    /// The log's closed segments: `log archive --older-than 30d` moves old records out of the live store.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Check a config file and print what it declares.
    ValidateConfig(validate::Args),
    /// API users: `user add NAME --role R --token-file F` makes a token.
    User(user::Args),
    /// Preflight: check each target's writer and provider before any freeze (touches nothing).
    Check(check::Args),
    /// Drive the engine core with simulated workers, faults and a virtual clock.
    Simulate(simulate::Args),
    /// Benchmarks: print their figure and the baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// `cli:<unix user>`: who a command that submits to the engine directly
/// acts as (recorded as `by`), the effective user's name, else its uid.
pub fn identity() -> String {
    // SAFETY: geteuid cannot fail; getpwuid_r writes only into `pw` and
    // `buf`, whose sizes are passed, and `name` points into `buf`.
    let uid = unsafe { libc::geteuid() };
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    let name = if r == 0 && !out.is_null() && !pw.pw_name.is_null() {
        unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned()
    } else {
        uid.to_string()
    };
    format!("cli:{name}")
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let service = match cli.command {
        Command::Engine(_) => "recman-engine",
        Command::Worker(_) => "recman-worker",
        _ => "recman",
    };
    // Log lines on stderr (RECMAN_LOG); spans over OTLP only when
    // OTEL_EXPORTER_OTLP_ENDPOINT is set (deploy/README.md "Tracing").
    let tracing = recman_trace::init(service, rt.handle());
    let result = rt.block_on(dispatch(cli));
    tracing.shutdown(); // every command, long-running or not, flushes its spans
    match result {
        Ok(code) => code,
        Err(e) => {
            // An error may quote a server's answer or the log: each of its
            // lines is escaped (no terminal control from outside).
            let text = format!("{e:#}");
            for (i, line) in text.split('\n').enumerate() {
                let lead = if i == 0 { "error: " } else { "" };
                eprintln!("{lead}{}", crate::render::escape(line));
            }
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut g = cli.global;
    // One rule for where the log is, for every command (home.rs); the
    // commands that read no log and report config errors themselves go on.
    let resolved = g.resolve();
    if !matches!(
        cli.command,
        Command::Simulate(_) | Command::ValidateConfig(_) | Command::User(_)
    ) {
        resolved?;
    }
    match cli.command {
        Command::Snapshot(a) => snapshot::run(&g, a).await,
        Command::Up(a) => up::run(&g, a).await,
        Command::Engine(a) => engine::run(&g, a).await,
        Command::Worker(a) => worker::run(&g, a).await,
        Command::Events(a) => events::run(&g, a).await,
        Command::Jobs(a) => jobs::run(&g, a).await,
        Command::Job(a) => job::run(&g, a).await,
        Command::Targets(a) => targets::run(&g, a).await,
        Command::Snapshots(a) => snapshots::run(&g, a).await,
        Command::Schedules(a) => schedules::run(&g, a).await,
        Command::Cancel(a) => cancel::run(&g, a).await,
        Command::Approve(a) => approve::run(&g, a).await,
        Command::Dlq(a) => dlq::run(&g, a).await,
        Command::Prune(a) => prune::run(&g, a).await,
        Command::Reconcile(a) => reconcile::run(&g, a).await,
        Command::Verify(a) => verify::run(&g, a).await,
        Command::Restore(a) => restore::run(&g, a).await,
        Command::Mount(a) => mount::run(&g, a).await,
        Command::Unmount(a) => unmount::run(&g, a).await,
        Command::Clone(a) => clone::run(&g, a).await,
        Command::Mounts(a) => mounts::run(&g, a).await,
        Command::Clones(a) => clones::run(&g, a).await,
        Command::Replay(a) => replay::run(&g, a).await,
        Command::Log(c) => log::run(&g, c).await,
        Command::Audit(a) => audit::run(&g, a).await,
        Command::ValidateConfig(a) => validate::run(&g, a).await,
        Command::User(a) => user::run(&g, a).await,
        Command::Check(a) => check::run(&g, a).await,
        Command::Simulate(a) => simulate::run(&g, a).await,
        Command::Bench(b) => bench::run(&g, b).await,
    }
}
