//! `recman validate-config`: load a config, report the first error with file,
//! line and key, or print the targets it declares.

use std::process::ExitCode;

use recman_config::Config;

use crate::home::Home;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 valid, 1 invalid (the error names file, line and key) or, with --check, \
a check failed, 2 could not run."
)]
pub struct Args {
    /// The config file (default: --config, else DATA_DIR/recman.toml).
    pub file: Option<std::path::PathBuf>,
    /// Also run the preflight of every target (`recman check`).
    #[arg(long)]
    pub check: bool,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let path = a.file.unwrap_or_else(|| g.config_file());
    if !path.exists() {
        anyhow::bail!("{}: no such file (pass a path or --config)", path.display());
    }
    match Config::load(&path) {
        Ok(cfg) => {
            println!("{}: valid, {} target(s)", path.display(), cfg.targets.len());
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
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
