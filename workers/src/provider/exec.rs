//! The `exec` provider: user commands create and delete snapshots; `{name}`
//! and `{target}` inside an argument are replaced (it stays one argument).
//! The create command must itself succeed when the snapshot already exists.

use recman_events::bus::BoxFuture;
use recman_events::{SnapshotInfo, SnapshotKind, StepError, TargetId};

use super::Provider;
use crate::exec;
use recman_config::ExecProviderConfig;

#[derive(Clone, Debug)]
pub struct ExecProvider {
    cfg: ExecProviderConfig,
}

impl ExecProvider {
    pub fn new(cfg: ExecProviderConfig) -> Self {
        ExecProvider { cfg }
    }
}

/// Substitutes the placeholders; never splits or joins arguments.
pub fn substitute(argv: &[String], name: &str, target: &TargetId) -> Vec<String> {
    argv.iter()
        .map(|a| a.replace("{name}", name).replace("{target}", target.as_str()))
        .collect()
}

impl Provider for ExecProvider {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        target: &'a TargetId,
        kind: SnapshotKind,
    ) -> BoxFuture<'a, Result<SnapshotInfo, StepError>> {
        Box::pin(async move {
            super::check_snapshot_name(name)?;
            let argv = substitute(&self.cfg.create, name, target);
            let env = [
                ("RECMAN_TARGET", target.to_string()),
                ("RECMAN_SNAPSHOT", name.to_string()),
                ("RECMAN_KIND", kind.as_str().to_string()),
            ];
            let out = exec::run(&argv, &env, self.cfg.timeout).await?;
            // The first line of stdout, when there is one, says where it is.
            let location = out
                .stdout
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or(name)
                .to_string();
            Ok(SnapshotInfo {
                name: name.to_string(),
                provider: "exec".into(),
                location,
                size_bytes: None,
                existed: false,
                array_expiry: None,
            })
        })
    }

    fn delete<'a>(&'a self, name: &'a str, target: &'a TargetId) -> BoxFuture<'a, Result<bool, StepError>> {
        Box::pin(async move {
            super::check_snapshot_name(name)?;
            let Some(delete) = &self.cfg.delete else {
                return Err(StepError::new(
                    "not_supported",
                    format!("target {target}: the exec provider has no `delete` command configured"),
                    false,
                ));
            };
            let argv = substitute(delete, name, target);
            exec::run(&argv, &[("RECMAN_TARGET", target.to_string())], self.cfg.timeout).await?;
            Ok(true)
        })
    }

    fn list<'a>(&'a self, target: &'a TargetId) -> BoxFuture<'a, Result<Vec<String>, StepError>> {
        Box::pin(async move {
            Err(StepError::new(
                "not_supported",
                format!("target {target}: the exec provider cannot list snapshots"),
                false,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_stay_inside_their_argument() {
        let argv = vec![
            "snap".into(),
            "--name={name}".into(),
            "{target}".into(),
            "a b".into(),
        ];
        let out = substitute(&argv, "rm-1", &TargetId::from("db01"));
        assert_eq!(out, vec!["snap", "--name=rm-1", "db01", "a b"]);
    }

    #[tokio::test]
    async fn create_runs_with_placeholders_and_reports_stdout_location() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("made");
        let p = ExecProvider::new(ExecProviderConfig {
            create: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo \"$1 $2\" > {}; echo vol/$1", marker.display()),
                "sh".into(),
                "{name}".into(),
                "{target}".into(),
            ],
            delete: None,
            restore: None,
            rollback: None,
            mount: None,
            unmount: None,
            timeout: std::time::Duration::from_secs(5),
        });
        let info = p
            .snapshot("rm-1", &TargetId::from("db01"), SnapshotKind::Full)
            .await
            .unwrap();
        assert_eq!(info.location, "vol/rm-1");
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "rm-1 db01");
        let e = p.delete("rm-1", &TargetId::from("db01")).await.unwrap_err();
        assert_eq!(e.code, "not_supported");
    }
}
