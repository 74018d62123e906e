//! The `exec` provider: user commands create and delete snapshots; `{name}`
//! and `{target}` inside an argument are replaced (it stays one argument).
//! The create command must itself succeed when the snapshot already exists.
//!
//! Recovery: the optional hooks `restore`, `rollback`, `mount` and
//! `unmount` (a missing one: `not_supported`), argvs run without a shell.
//! `{name}` is the restore point. Each gets `RECMAN_TARGET`, `RECMAN_JOB`
//! (the recovery job: name temporary paths after it), `RECMAN_STAGE`,
//! `RECMAN_ACTION` (`restore`, `restore_to`, `clone`, `mount`, `unmount`,
//! `remove_clone`), `RECMAN_SNAPSHOT` (the point), and as the action has
//! them `RECMAN_PATH` (restore to a path; checked here: absolute, no `..`),
//! `RECMAN_CLONE` (the clone's name), `RECMAN_WRITABLE` (mount: `0`/`1`),
//! `RECMAN_SAFETY` (in place: the safety snapshot) and `RECMAN_LOCATION`
//! (unmount: what the mount or clone reported). The last non-empty line of
//! stdout is the location (default: the path, the clone's name, the
//! target). The hooks carry the provider contract (`Provider::restore`):
//! idempotent per `RECMAN_JOB`, a path never overwritten, a rollback that
//! puts the live data back.

use recman_events::bus::BoxFuture;
use recman_events::{RecoveryAction, SnapshotInfo, SnapshotKind, StepError, TargetId};

use super::{provider_not_supported, Provider, RecoveryJob};
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

impl ExecProvider {
    /// Runs recovery hook `key` (`argv`) for `req`; returns the location.
    async fn recovery_hook(
        &self,
        key: &str,
        argv: Option<&Vec<String>>,
        req: RecoveryJob<'_>,
    ) -> Result<String, StepError> {
        super::check_snapshot_name(req.point)?;
        let Some(argv) = argv else {
            return Err(StepError::new(
                "not_supported",
                format!(
                    "target {}: the exec provider has no `{key}` command configured (see README, \"Restore\")",
                    req.target
                ),
                false,
            ));
        };
        let mut env = vec![
            ("RECMAN_TARGET", req.target.to_string()),
            ("RECMAN_JOB", req.job.to_string()),
            ("RECMAN_STAGE", key.to_string()),
            ("RECMAN_ACTION", req.action.as_str().to_string()),
            ("RECMAN_SNAPSHOT", req.point.to_string()),
        ];
        let mut fallback = req.target.to_string();
        match req.action {
            RecoveryAction::To { path, .. } => {
                super::trees::check_path(path)?;
                env.push(("RECMAN_PATH", path.clone()));
                fallback = path.clone();
            }
            RecoveryAction::Clone { name } | RecoveryAction::RemoveClone { name } => {
                super::check_snapshot_name(name)?;
                env.push(("RECMAN_CLONE", name.clone()));
                fallback = name.clone();
            }
            RecoveryAction::Mount { writable, .. } => {
                env.push(("RECMAN_WRITABLE", u8::from(*writable).to_string()));
            }
            // A prune is no step: the engine never sends one.
            RecoveryAction::InPlace { .. } | RecoveryAction::Unmount { .. } | RecoveryAction::Prune => {}
        }
        if let Some(safety) = req.safety {
            super::check_snapshot_name(safety)?;
            env.push(("RECMAN_SAFETY", safety.to_string()));
        }
        if let Some(loc) = req.location {
            if loc.chars().any(char::is_control) {
                return Err(StepError::new(
                    "invalid_location",
                    format!("location {loc:?} has control characters"),
                    false,
                ));
            }
            env.push(("RECMAN_LOCATION", loc.to_string()));
            fallback = loc.to_string();
        }
        let argv = substitute(argv, req.point, req.target);
        let out = exec::run(&argv, &env, self.cfg.timeout).await?;
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
            .unwrap_or(fallback))
    }
}

impl Provider for ExecProvider {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn restore<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(async move {
            if req.action.is_in_place() && self.cfg.rollback.is_none() {
                // An in-place restore that could not be undone is not started.
                return Err(StepError::new(
                    "not_supported",
                    format!(
                        "target {}: the exec provider has a `restore` but no `rollback` command: \
                         in-place restores need both (restore with --to, or add rollback)",
                        req.target
                    ),
                    false,
                ));
            }
            self.recovery_hook("restore", self.cfg.restore.as_ref(), req)
                .await
        })
    }

    fn rollback<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(self.recovery_hook("rollback", self.cfg.rollback.as_ref(), req))
    }

    fn mount<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(self.recovery_hook("mount", self.cfg.mount.as_ref(), req))
    }

    fn unmount<'a>(&'a self, req: RecoveryJob<'a>) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            if req.location.is_none() {
                return Err(provider_not_supported(
                    "exec",
                    "unmount without a location",
                    req.target,
                ));
            }
            self.recovery_hook("unmount", self.cfg.unmount.as_ref(), req)
                .await
                .map(|_| ())
        })
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

    fn hooks(log: &std::path::Path, print: &str) -> ExecProviderConfig {
        // No shell parses the step's data: it arrives as "$1" and in the
        // environment, and the script only echoes it.
        let hook = |key: &str| {
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "echo \"{key} $1 $RECMAN_ACTION $RECMAN_SNAPSHOT $RECMAN_JOB p=$RECMAN_PATH c=$RECMAN_CLONE \
                     w=$RECMAN_WRITABLE s=$RECMAN_SAFETY l=$RECMAN_LOCATION\" >> {}; printf '{print}'",
                    log.display()
                ),
                "sh".into(),
                "{name}".into(),
            ])
        };
        ExecProviderConfig {
            create: vec!["true".into()],
            delete: None,
            restore: hook("restore"),
            rollback: hook("rollback"),
            mount: hook("mount"),
            unmount: hook("unmount"),
            timeout: std::time::Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn recovery_hooks_get_the_step_and_report_the_last_line() {
        use recman_events::{JobId, RecoveryAction};
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let p = ExecProvider::new(hooks(&log, "noise\\n/mnt/x\\n\\n"));
        let t = TargetId::from("db01");
        let job = JobId::from_parts(5, 5);
        let bads = ["relative", "/srv/../etc"].map(|p| RecoveryAction::To {
            path: p.into(),
            until: None,
        });
        let req = |action, safety, location| RecoveryJob {
            point: "rm-1",
            target: &t,
            action,
            safety,
            location,
            job,
        };
        let to = RecoveryAction::To {
            path: "/srv/r; rm -rf /".into(),
            until: None,
        };
        assert_eq!(p.restore(req(&to, None, None)).await.unwrap(), "/mnt/x");
        let in_place = RecoveryAction::in_place();
        p.restore(req(&in_place, Some("rm-safety"), None)).await.unwrap();
        p.rollback(req(&in_place, Some("rm-safety"), None)).await.unwrap();
        let clone = RecoveryAction::Clone { name: "c1".into() };
        p.restore(req(&clone, None, None)).await.unwrap();
        let mount = RecoveryAction::mount(true);
        p.mount(req(&mount, None, None)).await.unwrap();
        let unmount = RecoveryAction::Unmount { mount: job };
        p.unmount(req(&unmount, None, Some("/mnt/x"))).await.unwrap();
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(
            lines,
            vec![
                format!("restore rm-1 restore_to rm-1 {job} p=/srv/r; rm -rf / c= w= s= l="),
                format!("restore rm-1 restore rm-1 {job} p= c= w= s=rm-safety l="),
                format!("rollback rm-1 restore rm-1 {job} p= c= w= s=rm-safety l="),
                format!("restore rm-1 clone rm-1 {job} p= c=c1 w= s= l="),
                format!("mount rm-1 mount rm-1 {job} p= c= w=1 s= l="),
                format!("unmount rm-1 unmount rm-1 {job} p= c= w= s= l=/mnt/x"),
            ]
        );
        // Silent hook: the location is what the action names.
        let quiet = ExecProvider::new(hooks(&log, ""));
        let to = RecoveryAction::To {
            path: "/srv/r2".into(),
            until: None,
        };
        assert_eq!(quiet.restore(req(&to, None, None)).await.unwrap(), "/srv/r2");
        // Refused before any hook runs: bad names and paths, missing hooks.
        let before = std::fs::read_to_string(&log).unwrap();
        for to in &bads {
            assert_eq!(
                p.restore(req(to, None, None)).await.unwrap_err().code,
                "invalid_path"
            );
        }
        let bad_clone = RecoveryAction::Clone { name: "../x".into() };
        assert!(p.restore(req(&bad_clone, None, None)).await.is_err());
        let bad_point = RecoveryJob {
            point: "-rf",
            ..req(&in_place, None, None)
        };
        assert!(p.restore(bad_point).await.is_err());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), before);
        let mut cfg = hooks(&log, "");
        cfg.rollback = None;
        cfg.mount = None;
        let p = ExecProvider::new(cfg);
        // In place needs a rollback; the rest only their own hook.
        let e = p
            .restore(req(&in_place, Some("rm-safety"), None))
            .await
            .unwrap_err();
        assert_eq!(e.code, "not_supported", "{e:?}");
        assert_eq!(
            p.mount(req(&mount, None, None)).await.unwrap_err().code,
            "not_supported"
        );
        p.restore(req(&clone, None, None)).await.unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 8);
    }
}
