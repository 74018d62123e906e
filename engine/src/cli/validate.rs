//! `recman validate-config`: load a config, report the first error with file,
//! line and key, or print the targets it declares. Also checks what only
//! this host can tell: the `exec` programs of the pools a worker here would
//! serve exist and are executable, and no log or freeze-marker directory is
//! on a filesystem a target freezes.

use std::process::ExitCode;

use recman_config::Config;

use crate::home::{local_pools, Home};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Host checks: the exec programs of the pools a worker on this host serves\n\
(`[worker] pools`, else every pool) must exist and be executable here, and neither the\n\
data dir nor an fsfreeze state_dir may be on a filesystem a target freezes. On a host that\n\
runs only `recman engine`, pass --engine to skip them. With --check, the preflight of every\n\
target runs too (`recman check`).\n\n\
Exit codes: 0 valid, 1 invalid (the error names file, line and key) or, with --check, a\n\
check failed, 2 could not run."
)]
pub struct Args {
    /// The config file (default: --config, else DATA_DIR/recman.toml).
    pub file: Option<std::path::PathBuf>,
    /// Check it as the config of an engine alone (no hooks run on this host).
    #[arg(long)]
    pub engine: bool,
    /// Also run the preflight of every target (`recman check`).
    #[arg(long)]
    pub check: bool,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    // A file given as the argument is the config: its `[engine] data_dir`
    // counts as it would with --config.
    let home;
    let g = match &a.file {
        Some(file) => {
            let mut h = g.clone();
            h.config = Some(file.clone());
            h.resolve()?;
            home = h;
            &home
        }
        None => g,
    };
    let path = g.config_file();
    if !path.exists() {
        anyhow::bail!("{}: no such file (pass a path or --config)", path.display());
    }
    let cfg = match Config::load(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    // Notifications go out from the engine's host: their secrets must be readable here.
    if let Err(e) = crate::notify::check_secrets(&cfg) {
        eprintln!("{e}");
        return Ok(ExitCode::from(1));
    }
    // The API's users' token files are read by the engine at start: each
    // must hold a token hash (not the token) and be readable here.
    if let Err(e) = crate::api::auth::Users::load(&cfg.api) {
        eprintln!("{}: [api]: {e:#}", path.display());
        return Ok(ExitCode::from(1));
    }
    if !a.engine {
        let pools = local_pools(&cfg);
        if let Err(e) = crate::home::check_host(&cfg, pools.as_deref(), Some(&g.data_dir)) {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(1));
        }
    }
    println!("{}: valid, {} target(s)", path.display(), cfg.targets.len());
    println!("  data dir {} (from {})", g.data_dir.display(), g.data_dir_from);
    for t in &cfg.targets {
        println!(
            "  {:<20} pool={} provider_pool={} freeze_limit={:?} retries={} keep_last={}",
            t.id.as_str(),
            t.pool,
            t.provider_pool,
            t.freeze_limit,
            t.retries,
            t.keep_last.map(|k| k.to_string()).unwrap_or_else(|| "all".into())
        );
    }
    if a.check {
        let reports = crate::preflight::run(&cfg, &g.data_dir, &[]).await?;
        crate::preflight::print(&reports);
        if crate::preflight::worst(&reports) == recman_workers::check::Level::Fail {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
