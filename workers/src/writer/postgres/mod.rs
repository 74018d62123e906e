//! The `postgres` writer (PostgreSQL ≥ 15): freeze = `pg_backup_start(label,
//! fast => true)` on a session this worker keeps open; thaw = `pg_backup_stop`
//! in the same session, its label file stored as `<label_dir>/<snapshot>/
//! backup_label` (+ `tablespace_map`); flush-logs = `pg_switch_wal()` (and, with
//! `wait_for_archive`, waiting until that segment is archived). Optionally
//! combined with `fsfreeze` of the cluster's filesystem: frozen after the
//! backup starts, thawed before it stops. If the worker dies, the session
//! drops and PostgreSQL aborts the backup by itself; that attempt's snapshot
//! then has no `backup_label` (with an atomic provider such as `btrfs` it is
//! still a crash-consistent image, restored without a label).
//!
//! Each step is bounded by the one configured `timeout` (the engine's stage
//! deadline follows it). Before `pg_backup_start` the freeze checks the role's
//! rights (`rights.rs`) and, with `wait_for_archive`, that archiving is on:
//! a snapshot that could not be restored is refused, not taken. The names of
//! WAL files and labels are read in `wal.rs`; `prune.rs` removes the labels
//! and archived WAL that retention no longer needs; `check.rs` is the
//! preflight of `recman check`.
//!
//! Recovery: `stop` and `start` run the optional `stop = [argv]` /
//! `start = [argv]` hooks of its config (e.g. `systemctl stop
//! postgresql@15-main`, which succeeds on a stopped unit); they must succeed
//! when the cluster is already stopped / running. Without a hook, and with
//! `data_directory` set, `pg_ctl` on the data directory does it
//! (`pgctl.rs`); without either an in-place restore of the target is refused
//! (`not_supported`). A stop first switches WAL, so the archive holds every
//! committed transaction. With `data_directory`, a restored data directory
//! is recovered (`restore.rs`): its label, the archive, a recovery target.

pub mod check;
pub mod pgctl;
pub mod prune;
pub mod restore;
pub mod rights;
pub mod wal;

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use recman_events::bus::BoxFuture;
use recman_events::{snapshot_name, JobId, StepError};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

use super::{FsFreezeWriter, StartupThaw, StepCtx, Writer};
use recman_config::PostgresConfig;

/// The open backup of one attempt.
struct Session {
    job: JobId,
    attempt: u32,
    client: Client,
    conn: tokio::task::JoinHandle<()>,
}

pub struct PostgresWriter {
    cfg: PostgresConfig,
    target: String,
    freeze: Option<FsFreezeWriter>,
    session: Mutex<Option<Session>>,
}

/// The refusal of `wait_for_archive = true` on a cluster that archives nothing.
pub fn archive_off_message(target: &str) -> String {
    format!(
        "target {target}: wait_for_archive = true but the server's archive_mode is off: no WAL is archived, so \
         a snapshot could not be restored past its backup_label (\"WAL ends before end of online backup\"); \
         set archive_mode = on and an archive_command (a restart), or set wait_for_archive = false if the \
         snapshot is restored without its label (crash-consistent)"
    )
}

impl PostgresWriter {
    pub fn new(target: &str, cfg: PostgresConfig) -> Self {
        let freeze = cfg.fsfreeze.clone().map(|f| FsFreezeWriter::new(target, f));
        PostgresWriter {
            cfg,
            target: target.to_string(),
            freeze,
            session: Mutex::new(None),
        }
    }

    fn err(&self, what: &str, e: tokio_postgres::Error) -> StepError {
        // Connection trouble may pass; SQL errors (permissions, version) will not.
        let retryable = e.as_db_error().is_none();
        let hint = if retryable {
            format!(
                " (is PostgreSQL running and listening on {}:{}? check listen_addresses, port and \
                 pg_hba.conf; the job is retried with backoff)",
                self.cfg.host, self.cfg.port
            )
        } else {
            String::new()
        };
        StepError::new(
            "postgres_error",
            format!(
                "target {}: {what} on {}:{}: {}{hint}",
                self.target,
                self.cfg.host,
                self.cfg.port,
                full(&e)
            ),
            retryable,
        )
    }

    /// `fut` bounded by `end`, the deadline of the whole step.
    async fn until<T>(
        &self,
        end: Instant,
        what: &str,
        fut: impl Future<Output = Result<T, StepError>>,
    ) -> Result<T, StepError> {
        tokio::time::timeout_at(end, fut)
            .await
            .unwrap_or_else(|_| Err(self.timeout(what)))
    }

    /// Opens a session (within the step's deadline `end`).
    /// `stop` / `start` for an in-place restore: the configured hook, else
    /// `pg_ctl` on `data_directory` (`pgctl.rs`), else the refusal. A stop
    /// first switches WAL.
    async fn stop_or_start(&self, ctx: &StepCtx, stage: &str) -> Result<(), StepError> {
        let hook = if stage == "stop" {
            &self.cfg.stop
        } else {
            &self.cfg.start
        };
        let pg_ctl = hook.is_none() && self.cfg.data_directory.is_some();
        if stage == "stop" && (hook.is_some() || pg_ctl) {
            self.switch_wal().await;
        }
        match (&self.cfg.data_directory, pg_ctl) {
            (Some(data), true) => pgctl::run(&self.cfg, data, &ctx.target, stage).await,
            _ => {
                super::recovery_hook(
                    "postgres",
                    (self.cfg.stop.as_deref(), self.cfg.start.as_deref()),
                    stage,
                    ctx,
                    self.cfg.timeout,
                )
                .await
            }
        }
    }

    /// Before the stop of an in-place restore: a new WAL file, so the
    /// archive holds every transaction committed until the stop (the point
    /// of failure that `--until latest` replays to). Best effort: a cluster
    /// that is down or unreachable is stopped all the same.
    async fn switch_wal(&self) {
        let end = Instant::now() + self.cfg.timeout.min(Duration::from_secs(10));
        let run = async {
            let (client, conn) = self.connect(end).await?;
            let r = client
                .simple_query("SELECT pg_switch_wal()")
                .await
                .map_err(|e| StepError::new("query_failed", e.to_string(), true));
            drop(client);
            conn.abort();
            r
        };
        match tokio::time::timeout_at(end, run).await {
            Ok(Ok(_)) => tracing::info!(target = %self.target, "WAL switched before the stop"),
            Ok(Err(e)) => tracing::info!(target = %self.target, error = %e, "no WAL switch before the stop"),
            Err(_) => tracing::info!(target = %self.target, "no WAL switch before the stop (timed out)"),
        }
    }

    pub(crate) async fn connect(
        &self,
        end: Instant,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), StepError> {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.cfg.host)
            .port(self.cfg.port)
            .user(&self.cfg.user)
            .dbname(&self.cfg.dbname)
            .application_name("recman")
            .connect_timeout(self.cfg.timeout);
        if let Some(p) = &self.cfg.password_file {
            let text = fs::read_to_string(p).map_err(|e| {
                StepError::new(
                    "config_error",
                    format!(
                        "target {}: cannot read password_file {}: {e}",
                        self.target,
                        p.display()
                    ),
                    false,
                )
            })?;
            c.password(text.lines().next().unwrap_or("").as_bytes());
        }
        let (client, conn) = self
            .until(end, "connecting", async {
                c.connect(NoTls).await.map_err(|e| self.err("connecting", e))
            })
            .await?;
        let target = self.target.clone();
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(%target, error = %e, "PostgreSQL session ended with an error");
            }
        });
        Ok((client, conn))
    }

    fn timeout(&self, what: &str) -> StepError {
        StepError::new(
            "timeout",
            format!(
                "target {}: {what} took longer than {:?} (the writer's timeout)",
                self.target, self.cfg.timeout
            ),
            true,
        )
    }

    /// Refuses a session that could not make a restorable snapshot: a role
    /// without the rights (`rights.rs`), or `wait_for_archive` without archiving.
    async fn refuse_unfit(&self, client: &Client) -> Result<(), StepError> {
        let missing = rights::missing(client, self.cfg.wait_for_archive)
            .await
            .map_err(|e| self.err("checking the role's rights", e))?;
        if !missing.is_empty() {
            return Err(StepError::new(
                "permission_denied",
                format!(
                    "target {}: {}",
                    self.target,
                    rights::refusal(&self.cfg.user, &missing)
                ),
                false,
            ));
        }
        if self.cfg.wait_for_archive {
            let mode: String = client
                .query_one("SELECT current_setting('archive_mode')", &[])
                .await
                .map_err(|e| self.err("reading archive_mode", e))?
                .get(0);
            if mode == "off" {
                return Err(StepError::new(
                    "archive_mode_off",
                    archive_off_message(&self.target),
                    false,
                ));
            }
        }
        Ok(())
    }

    async fn freeze_inner(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let end = Instant::now() + self.cfg.timeout;
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if s.job == ctx.job && s.attempt == ctx.attempt && !s.client.is_closed() {
                return Ok(());
            }
        }
        if let Some(old) = slot.take() {
            tracing::warn!(target = %self.target, job = %old.job, "a backup of an older attempt was still open: ending it");
            let _ = old.client.simple_query("SELECT pg_backup_stop(false)").await;
            old.conn.abort();
        }
        let (client, conn) = self.connect(end).await?;
        let label = format!("recman {} {}", self.target, snapshot_name(ctx.job, ctx.attempt));
        let started = self
            .until(end, "pg_backup_start", async {
                self.refuse_unfit(&client).await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&label];
                client
                    .query_one("SELECT pg_backup_start($1, true)::text", &params)
                    .await
                    .map_err(|e| self.err("pg_backup_start", e))
            })
            .await;
        if let Err(e) = started {
            conn.abort();
            return Err(e);
        }
        let session = Session {
            job: ctx.job,
            attempt: ctx.attempt,
            client,
            conn,
        };
        if let Some(fz) = &self.freeze {
            let fz = fz.clone();
            let c = ctx.clone();
            let r = tokio::task::spawn_blocking(move || fz.freeze_blocking(&c))
                .await
                .unwrap_or_else(|e| Err(StepError::new("internal", e.to_string(), true)));
            if let Err(e) = r {
                let _ = session.client.simple_query("SELECT pg_backup_stop(false)").await;
                session.conn.abort();
                return Err(e);
            }
        }
        *slot = Some(session);
        Ok(())
    }

    async fn thaw_inner(&self, ctx: &StepCtx) -> Result<(), StepError> {
        // Reverse order: the filesystem first, then the backup.
        if let Some(fz) = &self.freeze {
            let fz = fz.clone();
            tokio::task::spawn_blocking(move || fz.thaw_blocking())
                .await
                .unwrap_or_else(|e| Err(StepError::new("internal", e.to_string(), true)))?;
        }
        let mut slot = self.session.lock().await;
        let Some(s) = slot.take() else {
            // Thaw is idempotent: nothing open here means nothing to end (a
            // compensating thaw after a failed freeze, a redelivery, or a
            // session that died with its worker, whose backup PostgreSQL
            // aborted by itself: that snapshot gets no backup_label).
            tracing::warn!(target = %self.target, job = %ctx.job, attempt = ctx.attempt, "thaw: no open backup on this worker; nothing to stop (no backup_label for this attempt)");
            return Ok(());
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.cfg.wait_for_archive];
        let stop = s.client.query_one(
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => $1)",
            &params,
        );
        let row = match tokio::time::timeout(self.cfg.timeout, stop).await {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                s.conn.abort();
                return Err(self.err("pg_backup_stop", e));
            }
            Err(_) => {
                // Keep the session: a retried thaw may still stop the backup.
                *slot = Some(s);
                return Err(self.timeout("pg_backup_stop (waiting for the WAL archive?)"));
            }
        };
        s.conn.abort();
        let lsn: String = row.get(0);
        let label: String = row.get(1);
        let spcmap: Option<String> = row.get(2);
        let dir = self.cfg.label_dir.join(snapshot_name(s.job, s.attempt));
        write_synced(&dir, "backup_label", &label)?;
        if let Some(map) = spcmap.filter(|m| !m.is_empty()) {
            write_synced(&dir, "tablespace_map", &map)?;
        }
        tracing::info!(target = %self.target, %lsn, dir = %dir.display(), "backup stopped, backup_label stored");
        Ok(())
    }

    async fn flush_inner(&self) -> Result<(), StepError> {
        // One deadline for the whole step, connecting included.
        let end = Instant::now() + self.cfg.timeout;
        let (client, conn) = self.connect(end).await?;
        let r = self.switch_and_wait(&client, end).await;
        conn.abort();
        r
    }

    async fn switch_and_wait(&self, client: &Client, end: Instant) -> Result<(), StepError> {
        let segment: String = self
            .until(end, "pg_switch_wal", async {
                if self.cfg.wait_for_archive {
                    self.refuse_unfit(client).await?;
                }
                client
                    .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
                    .await
                    .map_err(|e| self.err("pg_switch_wal", e))
            })
            .await?
            .get(0);
        if !self.cfg.wait_for_archive {
            return Ok(());
        }
        // The segment is archived once its `.ready` status file is gone (the
        // archiver renames it `.done`). Not "last_archived_wal >= segment":
        // on a quiet cluster the last archived file is the backup's
        // `<segment>.<offset>.backup` history file (issue 25 item 1).
        let ready = format!("{segment}.ready");
        let mut status = ArchiverStatus::default();
        loop {
            let row = tokio::time::timeout_at(
                end,
                client.query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_ls_archive_statusdir() WHERE name = $1), \
                     a.last_archived_wal, a.failed_count, a.last_failed_wal, a.last_failed_time::text \
                     FROM pg_stat_archiver a",
                    &[&ready],
                ),
            )
            .await;
            let row = match row {
                Ok(r) => r.map_err(|e| self.err("reading the archive status", e))?,
                Err(_) => return Err(self.archive_timeout(&segment, &status)),
            };
            if !row.get::<_, bool>(0) {
                return Ok(());
            }
            status = ArchiverStatus {
                last_archived: row.get(1),
                failed_count: row.get(2),
                last_failed: row.get(3),
                last_failed_time: row.get(4),
            };
            if Instant::now() + Duration::from_millis(50) > end {
                return Err(self.archive_timeout(&segment, &status));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn archive_timeout(&self, segment: &str, s: &ArchiverStatus) -> StepError {
        let failing = match (&s.last_failed, &s.last_failed_time) {
            (Some(f), Some(t)) if s.failed_count > 0 => format!(
                "; archive_command has failed {} time(s), last for {f} at {t}: see the server log and fix \
                 archive_command",
                s.failed_count
            ),
            _ => "; no archive_command failure is recorded: is the archiver slow or stuck?".to_string(),
        };
        StepError::new(
            "archive_timeout",
            format!(
                "target {}: WAL segment {segment} was not archived within {:?} (the writer's timeout); last \
                 archived: {}{failing}",
                self.target,
                self.cfg.timeout,
                s.last_archived.as_deref().unwrap_or("none")
            ),
            true,
        )
    }
}

/// What `pg_stat_archiver` said last, for the message of a timeout.
#[derive(Default)]
struct ArchiverStatus {
    last_archived: Option<String>,
    failed_count: i64,
    last_failed: Option<String>,
    last_failed_time: Option<String>,
}

fn full(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        }
    }
}

fn write_synced(dir: &Path, name: &str, text: &str) -> Result<(), StepError> {
    let io = |p: &Path, e: std::io::Error| {
        StepError::new("io_error", format!("writing {}: {e}", p.display()), true)
    };
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let p: PathBuf = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    std::io::Write::write_all(&mut &f, text.as_bytes()).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, &p).map_err(|e| io(&p, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

impl Writer for PostgresWriter {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn freeze<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.freeze_inner(ctx))
    }
    fn thaw<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.thaw_inner(ctx))
    }
    fn flush_logs<'a>(&'a self, _: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.flush_inner())
    }
    fn after_prune<'a>(
        &'a self,
        deleted: &'a [String],
        listed: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<(), StepError>> {
        let cfg = self.cfg.clone();
        let target = self.target.clone();
        let (deleted, listed) = (deleted.to_vec(), listed.map(<[String]>::to_vec));
        Box::pin(crate::blocking("postgres", move || {
            let p = prune::after_prune(&cfg, &deleted, listed.as_deref())?;
            tracing::info!(%target, labels = ?p.labels, wal_files = p.wal_files, oldest_needed = ?p.oldest_needed, "retention: labels and archived WAL pruned");
            Ok(())
        }))
    }
    fn startup_thaw(&self) -> BoxFuture<'_, Result<Option<StartupThaw>, StepError>> {
        match &self.freeze {
            Some(fz) => fz.startup_thaw(),
            None => Box::pin(async { Ok(None) }),
        }
    }
    fn stop<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        // The runtime never stops a frozen target (no backup session open).
        Box::pin(self.stop_or_start(ctx, "stop"))
    }
    fn start<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.stop_or_start(ctx, "start"))
    }
}
