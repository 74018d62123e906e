//! `recman check [TARGET…]`: the preflight of each target's writer and
//! provider, before any freeze; it touches nothing (`engine/src/preflight.rs`).

use std::process::ExitCode;

use recman_workers::check::Level;

use crate::home::{Home, Missing};
use crate::preflight;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Checks, per writer and provider: postgres (connection, version, the role's \
rights with the GRANTs to run, archive_mode and pg_stat_archiver, label_dir, the WAL each kept restore \
point needs in wal_archive), fsfreeze (a mountpoint, not the log's filesystem), btrfs and copy \
(filesystem, free space), 3par (login, base volume, CPG space), exec and qcow2 (programs executable).\n\
Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 could not run (no or invalid \
config, unknown target)."
)]
pub struct Args {
    /// Targets to check (default: every target of the config).
    pub targets: Vec<String>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config(Missing::Fail)?;
    let reports = preflight::run(&config, &g.data_dir, &a.targets).await?;
    preflight::print(&reports);
    Ok(match preflight::worst(&reports) {
        Level::Fail => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}
