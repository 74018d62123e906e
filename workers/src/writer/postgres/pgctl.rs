//! The `postgres` writer's default `stop` and `start` for an in-place
//! restore, when no hook is configured and `data_directory` is: `pg_ctl`
//! on the data directory, run as its owner; a stopped cluster is not
//! stopped again and a running one is not started again. Its startup
//! output goes to `<temp dir>/recman-pg_ctl-TARGET.log` (the cluster's own
//! logging settings apply as usual).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;

use recman_config::PostgresConfig;
use recman_events::{StepError, TargetId};

use crate::pgserver::{io_err, shell_quote};

/// Stops (`stop`) or starts (`start`) the cluster in `data`.
pub async fn run(cfg: &PostgresConfig, data: &Path, target: &TargetId, stage: &str) -> Result<(), StepError> {
    let meta = std::fs::metadata(data).map_err(|e| io_err("reading", data, e))?;
    // SAFETY: geteuid has no preconditions.
    let user = (unsafe { libc::geteuid() } == 0).then_some((meta.uid(), meta.gid()));
    let prog = cfg.bin_dir.join("pg_ctl");
    let running = status(&prog, data, user).await?;
    let secs = cfg.timeout.as_secs().max(1).to_string();
    let d = data.display().to_string();
    let p = prog.display().to_string();
    let argv: Vec<String> = match (stage, running) {
        ("stop", false) | ("start", true) => return Ok(()),
        ("stop", true) => [p.as_str(), "stop", "-D", &d, "-m", "fast", "-w", "-t", &secs]
            .map(String::from)
            .to_vec(),
        _ => {
            let log = std::env::temp_dir().join(format!("recman-pg_ctl-{target}.log"));
            let mut a: Vec<String> = [p.as_str(), "start", "-D", &d, "-w", "-t", &secs, "-l"]
                .map(String::from)
                .to_vec();
            a.push(log.display().to_string());
            if let (false, Some(c)) = (data.join("postgresql.conf").exists(), &cfg.config_file) {
                a.push("-o".into());
                a.push(format!(
                    "-c config_file={}",
                    shell_quote(&c.display().to_string())
                ));
            }
            a
        }
    };
    crate::exec::run_as(&argv, &[], cfg.timeout + std::time::Duration::from_secs(5), user)
        .await
        .map(|_| ())
        .map_err(|mut e| {
            e.message = format!("target {target}: pg_ctl {stage}: {}", e.message);
            e
        })
}

/// Whether a server runs on `data` (`pg_ctl status`: 0 running, 3 not).
async fn status(prog: &Path, data: &Path, user: Option<(u32, u32)>) -> Result<bool, StepError> {
    let mut cmd = tokio::process::Command::new(prog);
    cmd.arg("status")
        .arg("-D")
        .arg(data)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| StepError::new("timeout", "pg_ctl status did not answer in 30 s", true))?
        .map_err(|e| {
            StepError::new(
                "not_supported",
                format!(
                    "cannot run {}: {e} (set bin_dir in [target.writer] to PostgreSQL's bin directory)",
                    prog.display()
                ),
                false,
            )
        })?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(3) => Ok(false),
        _ => Err(StepError::new(
            "exec_failed",
            format!(
                "pg_ctl status -D {}: {} {}",
                data.display(),
                out.status,
                crate::exec::tail(&String::from_utf8_lossy(&out.stderr))
            ),
            false,
        )),
    }
}
