//! The preflight of a config's targets (`recman check`, `validate-config
//! --check`, and as warnings when `recman up` starts): runs
//! `recman_workers::check` per target and prints its findings.

use std::path::Path;

use recman_config::Config;
use recman_events::TargetId;
use recman_workers::check::{self, Finding, Level};

/// The findings of one target.
pub struct Report {
    pub target: TargetId,
    pub findings: Vec<Finding>,
}

/// Checks `only` (every target of `config` when empty); an unknown id is an error.
pub async fn run(config: &Config, log_dir: &Path, only: &[String]) -> anyhow::Result<Vec<Report>> {
    for id in only {
        if !config.targets.iter().any(|t| t.id.as_str() == id) {
            anyhow::bail!("unknown target {id} (not in {})", config.path.display());
        }
    }
    let mut out = Vec::new();
    for t in config
        .targets
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t.id.as_str()))
    {
        out.push(Report {
            target: t.id.clone(),
            findings: check::target(log_dir, t).await,
        });
    }
    Ok(out)
}

/// The worst level of every report.
pub fn worst(reports: &[Report]) -> Level {
    reports
        .iter()
        .map(|r| check::worst(&r.findings))
        .max()
        .unwrap_or(Level::Ok)
}

/// `TARGET  LEVEL  SUBJECT  message`, one line per finding.
pub fn print(reports: &[Report]) {
    for r in reports {
        for f in &r.findings {
            println!(
                "{:<16} {:<4}  {:<9} {}",
                r.target.as_str(),
                f.level,
                f.subject,
                f.message
            );
        }
    }
}

/// As warnings in the log (`recman up` start-up): every finding that is not ok.
pub fn log(reports: &[Report]) {
    for r in reports {
        for f in r.findings.iter().filter(|f| f.level != Level::Ok) {
            tracing::warn!(target_id = %r.target, level = %f.level, subject = f.subject, "preflight: {}", f.message);
        }
    }
}
