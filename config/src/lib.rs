//! recman-config: the TOML config shared by the engine and the workers
//! (targets, their writers and providers, `[api]`, `[amqp]`, `[worker]`).
//! Every error names the file, line, column and key. Neither the engine nor
//! the workers own it: both depend on this crate.
//!
//! Entry points: [`Config::load`], [`Config::from_str`], [`path_in`] (where a
//! data dir's config is), [`parse_duration`].

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use recman_events::wire::check_id;
use recman_events::{PoolName, TargetId, WorkerId};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

mod api;
mod approval;
pub use approval::DEFAULT_APPROVAL_EXPIRY;
pub mod log;
pub use api::{in_scope, ApiConfig, ApiUser, Role, DEFAULT_LISTEN, LEGACY_ADMIN};
mod audit;
mod checkpoint;
pub use audit::{AuditConfig, DEFAULT_PUBLISH_HEAD_EVERY};
pub use checkpoint::{CheckpointConfig, DEFAULT_EVERY, DEFAULT_EVERY_EVENTS, DEFAULT_KEEP};
mod reconcile;
mod recovery;
mod retention;
mod threepar;
mod verify;
pub use reconcile::DEFAULT_RECONCILE_EVERY;
pub use recovery::{RecoveryConfig, DEFAULT_RECOVERY_TIMEOUT};
pub use retention::RetentionConfig;
pub use threepar::{ArrayConfig, ThreeParConfig, ThreeParObject};
pub use verify::{PgVerifyConfig, VerifyConfig, VerifyKind, DEFAULT_PG_BIN_DIR, DEFAULT_VERIFY_TIMEOUT};

/// The default freeze limit (VSS holds writes for at most 10 s).
pub const DEFAULT_FREEZE_LIMIT: Duration = Duration::from_secs(10);
/// The pool of a target's writer when the config names none.
pub const DEFAULT_POOL: &str = "host.local";
/// Where snapshots of `copy` providers go without `dest` (under `snapshots/<target>`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/recman";
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A `postgres` target's defaults: 5 retries from 4 s (4, 8, 16, 32, 60 s,
/// jittered to at least half), so a job spans a PostgreSQL restart or
/// crash recovery of a minute or more before it fails.
pub const DEFAULT_PG_RETRIES: u32 = 5;
pub const DEFAULT_PG_RETRY_BACKOFF: Duration = Duration::from_secs(4);
pub const DEFAULT_WRITER_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest duration any setting or flag takes (24 h): longer values are
/// refused at load, so no deadline computed from one can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The shortest `freeze_limit` (the engine thaws 20 % before the limit and
/// the watchdog at half that margin: below this there is no window left).
pub const MIN_FREEZE_LIMIT: Duration = Duration::from_millis(100);

const WRITERS: &[&str] = &["none", "exec", "fsfreeze", "postgres"];
const WRITERS_LATER: &[&str] = &["vss-exchange"];
const PROVIDERS: &[&str] = &["copy", "exec", "none", "3par", "btrfs", "qcow2"];
const PROVIDERS_LATER: &[&str] = &[];

mod host;
pub use host::HookProgram;
mod schedule;
pub use recman_core::schedule::Schedule;
mod notify;
pub use notify::{
    redact_url, EmailConfig, NotifyConfig, SecretFile, SinkConfig, SmtpSecurity, WebhookConfig,
    DEFAULT_NOTIFY_EVENTS, LOG_HEAD_KIND, MAX_NOTIFY_BACKOFF, NOTIFY_KINDS,
};
mod linux;
pub use linux::{
    BtrfsConfig, FsFreezeConfig, PostgresConfig, Qcow2Config, DEFAULT_PG_TIMEOUT, DEFAULT_STATE_DIR,
};

/// A loaded, validated config.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub engine: EngineConfig,
    /// `[worker]`: identity of a standalone worker process (optional).
    pub worker: Option<WorkerConfig>,
    pub targets: Vec<TargetConfig>,
    /// `[api]`: the HTTP API of `recman up`.
    pub api: ApiConfig,
    /// `[amqp]`: the broker of `recman engine` / `recman worker` (optional).
    pub amqp: AmqpConfig,
    /// Every `exec` program the config names, where, and in which pool it
    /// runs: checked on the host that runs it ([`Config::check_programs`]).
    pub hooks: Vec<HookProgram>,
    /// `[[schedule]]`s, in file order.
    pub schedules: Vec<Schedule>,
    /// `[[notify]]` sinks, in file order (`config/src/notify.rs`).
    pub notify: Vec<NotifyConfig>,
    /// `[log]`: the event log in PostgreSQL (`config/src/log.rs`).
    pub log: log::LogConfig,
    /// `[audit]`: publishing the log's head (`config/src/audit.rs`).
    pub audit: AuditConfig,
    /// `[checkpoint]`: the engine's checkpoints (`config/src/checkpoint.rs`).
    pub checkpoint: CheckpointConfig,
}

/// `[amqp] url = "amqp://USER@HOST:5672/VHOST"` (or `urls = [...]`, one per
/// node of a cluster), `password_file = "…"`, `ca_file = "…"` (PEM: the CA
/// that signed the broker's certificate, for `amqps://` with a private CA),
/// `quorum_group_size = 3` (replicas of each quorum queue). The password
/// never goes in the config itself: keep it in the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AmqpConfig {
    /// `url`, or the first of `urls`.
    pub url: Option<String>,
    /// Every broker URL: `urls`, or `url` alone (empty when neither is set).
    pub urls: Vec<String>,
    /// `x-quorum-initial-group-size` of the queues (`None`: the default).
    pub quorum_group_size: Option<u32>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Default `freeze_limit` of targets.
    pub freeze_limit: Duration,
    /// State directory; `copy` snapshots default to `<data_dir>/snapshots/<target>`.
    pub data_dir: PathBuf,
    /// Where `[engine] data_dir` is written (`file:line:column`), when it is:
    /// the commands then keep the log there (unless `--data-dir` or
    /// `RECMAN_DATA_DIR` says otherwise).
    pub data_dir_at: Option<String>,
    /// `request_window`: how long a request id answers with its job
    /// (idempotency), on event time; default 7 days, from 1 minute to 10 years.
    pub request_window: Duration,
    /// `keep_finished`: how long a finished job stays in the engine's
    /// memory before it is read from the log; default 1 hour, from 1 second
    /// to 7 days.
    pub keep_finished: Duration,
    /// `recent_finished`: how many finished jobs (and, apart, recovery
    /// jobs) the read side (jobs list, job pages) keeps in memory after they
    /// left the engine's state; older ones are read from the log. Default
    /// 10,000, at most 1,000,000.
    pub recent_finished: u32,
}

/// Default `[engine] recent_finished`.
pub const DEFAULT_RECENT_FINISHED: u32 = 10_000;

/// Default `[engine] request_window`: 7 days.
pub const DEFAULT_REQUEST_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// Default `[engine] keep_finished`: 1 hour.
pub const DEFAULT_KEEP_FINISHED: Duration = Duration::from_secs(3_600);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            freeze_limit: DEFAULT_FREEZE_LIMIT,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            data_dir_at: None,
            request_window: DEFAULT_REQUEST_WINDOW,
            keep_finished: DEFAULT_KEEP_FINISHED,
            recent_finished: DEFAULT_RECENT_FINISHED,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    pub id: Option<WorkerId>,
    /// Pools to consume. `None` (key absent) = every pool that a target of
    /// this config names; `Some([])` (`pools = []`) = none.
    pub pools: Option<Vec<PoolName>>,
    /// The host's freeze state, shared by every worker process of the host
    /// (default: `DEFAULT_STATE_DIR` for `recman worker`; see the README).
    pub state_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TargetConfig {
    pub id: TargetId,
    /// Pool of the workers that run the writer (freeze, thaw, flush-logs).
    pub pool: PoolName,
    /// Pool of the workers that run the provider (snapshot, prune).
    pub provider_pool: PoolName,
    pub freeze_limit: Duration,
    pub retries: u32,
    /// Retention: keep this many snapshots, prune older ones.
    pub keep_last: Option<u32>,
    /// RPO: the newest good restore point may be at most this old.
    pub rpo: Option<Duration>,
    /// `rpo_counts = "verified"`: only verified restore points meet the RPO.
    pub rpo_verified: bool,
    /// The other retention rules (`keep_within`, tiers).
    pub retention: RetentionConfig,
    /// First wait before a retry (doubled each retry, jittered: half to
    /// all of it), at most `retry_backoff_max`. With `retries` they span the
    /// window in which a restarting service should come back.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub writer: WriterConfig,
    pub provider: ProviderConfig,
    /// `[target.verify]`: how its restore points are verified (none: never).
    pub verify: Option<VerifyConfig>,
    /// How often the catalog is checked against the provider's list
    /// (`reconcile_every`; none: only on demand).
    pub reconcile_every: Option<Duration>,
    /// `[target.recovery]`: the limits of its restores, mounts and clones.
    pub recovery: RecoveryConfig,
    /// `require_approval = true`: an in-place restore waits until a second
    /// admin approves it, at most this long (`approval_expiry`, default
    /// 1 h); `recman prune` of the target is refused. `None`: no approval.
    pub approval: Option<Duration>,
}

impl TargetConfig {
    /// `WRITER/PROVIDER` kinds (e.g. `postgres/btrfs`): what an engine sends
    /// in its commands and a worker compares with its own config.
    pub fn fingerprint(&self) -> String {
        format!("{}/{}", self.writer.kind(), self.provider.kind())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum WriterConfig {
    None,
    Exec(ExecWriterConfig),
    FsFreeze(FsFreezeConfig),
    Postgres(PostgresConfig),
}

impl WriterConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            WriterConfig::None => "none",
            WriterConfig::Exec(_) => "exec",
            WriterConfig::FsFreeze(_) => "fsfreeze",
            WriterConfig::Postgres(_) => "postgres",
        }
    }

    /// The writer's own bound on one step (freeze, thaw or flush-logs); the
    /// engine's stage deadlines follow it. Writers without a `timeout` key
    /// (`none`, `fsfreeze`: an ioctl) get [`DEFAULT_WRITER_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        match self {
            WriterConfig::Exec(e) => e.timeout,
            WriterConfig::Postgres(p) => p.timeout,
            WriterConfig::None | WriterConfig::FsFreeze(_) => DEFAULT_WRITER_TIMEOUT,
        }
    }
}

/// User hooks, each an argv (never a shell string).
#[derive(Clone, Debug, PartialEq)]
pub struct ExecWriterConfig {
    pub freeze: Vec<String>,
    pub thaw: Vec<String>,
    pub flush: Option<Vec<String>>,
    /// Recovery: stops the application before an in-place restore
    /// (must succeed when it is already stopped); none = in-place restores
    /// of the target are refused (`not_supported`).
    pub stop: Option<Vec<String>>,
    /// Recovery: starts the application again after an in-place restore or
    /// its rollback (must succeed when it is already running).
    pub start: Option<Vec<String>>,
    /// Per command; the command is killed when it runs longer.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProviderConfig {
    None,
    Copy(CopyProviderConfig),
    Exec(ExecProviderConfig),
    /// HPE 3PAR / Primera virtual copies through the WSAPI (`config/threepar.rs`).
    ThreePar(ThreeParConfig),
    Btrfs(BtrfsConfig),
    Qcow2(Qcow2Config),
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::None => "none",
            ProviderConfig::Copy(_) => "copy",
            ProviderConfig::Exec(_) => "exec",
            ProviderConfig::ThreePar(_) => "3par",
            ProviderConfig::Btrfs(_) => "btrfs",
            ProviderConfig::Qcow2(_) => "qcow2",
        }
    }

    /// The provider's own bound on one snapshot; the engine's snapshot
    /// stage deadline follows it. Providers without a `timeout` key get
    /// [`DEFAULT_PROVIDER_TIMEOUT`]; `3par` its array's request timeout.
    pub fn timeout(&self) -> Duration {
        match self {
            ProviderConfig::Exec(e) => e.timeout,
            ProviderConfig::Qcow2(q) => q.timeout,
            ProviderConfig::ThreePar(t) => t.array.timeout,
            ProviderConfig::None | ProviderConfig::Copy(_) | ProviderConfig::Btrfs(_) => {
                DEFAULT_PROVIDER_TIMEOUT
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CopyProviderConfig {
    /// Directory to copy (absolute).
    pub source: PathBuf,
    /// Directory that holds one subdirectory per snapshot (absolute).
    pub dest: PathBuf,
    /// True when `dest` came from the default (`<data_dir>/snapshots/<id>`).
    pub dest_is_default: bool,
}

/// Provider hooks; `{name}` and `{target}` inside an argument are replaced by
/// the snapshot name and target id (the argument stays one argument).
#[derive(Clone, Debug, PartialEq)]
pub struct ExecProviderConfig {
    pub create: Vec<String>,
    pub delete: Option<Vec<String>>,
    /// Recovery hooks (`workers/src/provider/exec.rs` says what each gets in
    /// `RECMAN_*`); a missing one makes that step `not_supported`.
    /// `restore`: in place, to a path, or a clone; prints the location.
    pub restore: Option<Vec<String>>,
    /// Puts the live data back after a failed in-place restore.
    pub rollback: Option<Vec<String>>,
    /// Exposes a restore point; prints the location.
    pub mount: Option<Vec<String>>,
    /// Takes a mount or a clone away (`RECMAN_LOCATION`).
    pub unmount: Option<Vec<String>>,
    pub timeout: Duration,
}

/// The recovery hooks of the `exec` provider, in config order.
pub const EXEC_PROVIDER_RECOVERY_HOOKS: &[&str] = &["restore", "rollback", "mount", "unmount"];

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// (`error` is not a `source`: the message already says it, once.)
    #[error("{path}: cannot read the config: {error}")]
    Read { path: String, error: std::io::Error },
    /// `file:line:column: key: message`.
    #[error("{file}:{line}:{column}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        /// Dotted key path, e.g. `target[1].writer.type` (empty for syntax errors).
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Config::from_str(&text, path)
    }

    /// Parses `text`; `path` names it in messages and anchors relative paths
    /// (to the directory that holds it).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let cx = Cx {
            text,
            file: path.display().to_string(),
            base: path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            hooks: Default::default(),
        };
        let doc = DeTable::parse(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            cx.err(span, "", e.message().trim().to_string())
        })?;
        let root = doc.get_ref();
        cx.check_keys(
            root,
            "",
            &[
                "engine",
                "worker",
                "array",
                "target",
                "api",
                "amqp",
                "schedule",
                "notify",
                "log",
                "audit",
                "checkpoint",
            ],
        )?;
        let api = api::parse(&cx, root)?;
        let log = log::parse(&cx, root)?;

        let engine = match field(root, "engine") {
            None => EngineConfig::default(),
            Some(v) => {
                let t = cx.table(v, "engine")?;
                cx.check_keys(
                    t,
                    "engine",
                    &[
                        "freeze_limit",
                        "data_dir",
                        "request_window",
                        "keep_finished",
                        "recent_finished",
                    ],
                )?;
                let data_dir = cx.path(t, "engine", "data_dir")?;
                EngineConfig {
                    freeze_limit: cx.freeze_limit(t, "engine")?.unwrap_or(DEFAULT_FREEZE_LIMIT),
                    data_dir_at: data_dir
                        .is_some()
                        .then(|| cx.at(field(t, "data_dir").map(|v| v.span()).unwrap_or_default())),
                    data_dir: data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
                    request_window: cx
                        .duration_within(
                            t,
                            "engine",
                            "request_window",
                            Duration::from_secs(60),
                            Duration::from_secs(3650 * 86_400),
                        )?
                        .unwrap_or(DEFAULT_REQUEST_WINDOW),
                    keep_finished: cx
                        .duration_within(
                            t,
                            "engine",
                            "keep_finished",
                            Duration::from_secs(1),
                            Duration::from_secs(7 * 86_400),
                        )?
                        .unwrap_or(DEFAULT_KEEP_FINISHED),
                    recent_finished: match cx.u32(t, "engine", "recent_finished")? {
                        Some(n) if n > 1_000_000 => {
                            let span = field(t, "recent_finished").map(|v| v.span()).unwrap_or_default();
                            return Err(cx.err(span, "engine.recent_finished", "at most 1000000"));
                        }
                        n => n.unwrap_or(DEFAULT_RECENT_FINISHED),
                    },
                }
            }
        };

        let worker = match field(root, "worker") {
            None => None,
            Some(v) => {
                let t = cx.table(v, "worker")?;
                cx.check_keys(t, "worker", &["id", "pools", "state_dir"])?;
                let id = match cx.string(t, "worker", "id")? {
                    None => None,
                    Some((s, span)) => Some(WorkerId::new(cx.id(&s, span, "worker.id")?)),
                };
                let pools = match field(t, "pools") {
                    None => None,
                    Some(v) => Some(
                        cx.strings(v, "worker.pools")?
                            .into_iter()
                            .map(|s| cx.id(&s, v.span(), "worker.pools").map(PoolName::new))
                            .collect::<Result<_, _>>()?,
                    ),
                };
                let state_dir = cx.path(t, "worker", "state_dir")?;
                Some(WorkerConfig { id, pools, state_dir })
            }
        };

        let arrays = threepar::arrays(&cx, root)?;
        let amqp = match field(root, "amqp") {
            None => AmqpConfig::default(),
            Some(v) => {
                let t = cx.table(v, "amqp")?;
                cx.check_keys(
                    t,
                    "amqp",
                    &["url", "urls", "password_file", "ca_file", "quorum_group_size"],
                )?;
                let scheme = |u: &str, span: Range<usize>, key: &str| {
                    if u.starts_with("amqp://") || u.starts_with("amqps://") {
                        Ok(())
                    } else {
                        Err(cx.err(span, key, "must start with amqp:// or amqps://"))
                    }
                };
                let url = match cx.string(t, "amqp", "url")? {
                    Some((u, span)) => {
                        scheme(&u, span, "amqp.url")?;
                        Some(u)
                    }
                    None => None,
                };
                let urls = match field(t, "urls") {
                    None => url.iter().cloned().collect(),
                    Some(v) => {
                        if url.is_some() {
                            return Err(cx.err(
                                v.span(),
                                "amqp.urls",
                                "write either url or urls, not both (urls = [\"amqp://…\", …] lists every node)",
                            ));
                        }
                        let urls = cx.strings(v, "amqp.urls")?;
                        if urls.is_empty() {
                            return Err(cx.err(v.span(), "amqp.urls", "must name at least one broker"));
                        }
                        for u in &urls {
                            scheme(u, v.span(), "amqp.urls")?;
                        }
                        urls
                    }
                };
                let quorum_group_size = cx.u32(t, "amqp", "quorum_group_size")?;
                if quorum_group_size == Some(0) {
                    let span = field(t, "quorum_group_size")
                        .map(|v| v.span())
                        .unwrap_or_default();
                    return Err(cx.err(span, "amqp.quorum_group_size", "must be at least 1"));
                }
                AmqpConfig {
                    url: urls.first().cloned(),
                    urls,
                    quorum_group_size,
                    password_file: cx.path(t, "amqp", "password_file")?,
                    ca_file: cx.path(t, "amqp", "ca_file")?,
                }
            }
        };

        let mut targets: Vec<TargetConfig> = Vec::new();
        if let Some(v) = field(root, "target") {
            let DeValue::Array(items) = v.get_ref() else {
                return Err(cx.err(v.span(), "target", "must be an array of tables: write [[target]]"));
            };
            for (i, item) in items.iter().enumerate() {
                let key = format!("target[{i}]");
                let t = cx.target(item, &key, &engine, &arrays)?;
                if let Some(prev) = targets.iter().position(|p| p.id == t.id) {
                    let span = field(cx.table(item, &key)?, "id")
                        .map(|v| v.span())
                        .unwrap_or(item.span());
                    return Err(cx.err(
                        span,
                        &format!("{key}.id"),
                        format!(
                            "duplicate target id \"{}\" (already used by target[{prev}])",
                            t.id
                        ),
                    ));
                }
                targets.push(t);
            }
        }
        let schedules = schedule::schedules(&cx, root, &targets)?;
        let notify = notify::sinks(&cx, root)?;
        let audit = audit::parse(&cx, root, &notify)?;
        let checkpoint = checkpoint::parse(&cx, root)?;
        Ok(Config {
            checkpoint,
            path: path.to_path_buf(),
            schedules,
            notify,
            audit,
            engine,
            worker,
            targets,
            api,
            amqp,
            log,
            hooks: cx.hooks.into_inner(),
        })
    }

    pub fn target(&self, id: &TargetId) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| &t.id == id)
    }

    /// Every pool a target of this config names (writer and provider pools).
    pub fn pools(&self) -> Vec<PoolName> {
        let mut pools: Vec<PoolName> = Vec::new();
        for t in &self.targets {
            for p in [
                Some(&t.pool),
                Some(&t.provider_pool),
                t.verify.as_ref().and_then(|v| v.pool.as_ref()),
            ]
            .into_iter()
            .flatten()
            {
                if !pools.contains(p) {
                    pools.push(p.clone());
                }
            }
        }
        pools
    }

    /// Moves defaulted `copy` destinations and `postgres` label dirs under a new data directory (the
    /// engine's `--data-dir`).
    pub fn set_data_dir(&mut self, dir: impl Into<PathBuf>) {
        self.engine.data_dir = dir.into();
        for t in &mut self.targets {
            if let ProviderConfig::Copy(c) = &mut t.provider {
                if c.dest_is_default {
                    c.dest = default_dest(&self.engine.data_dir, &t.id);
                }
            }
            if let WriterConfig::Postgres(p) = &mut t.writer {
                if p.label_dir_is_default {
                    p.label_dir = linux::default_label_dir(&self.engine.data_dir, t.id.as_str());
                }
            }
        }
    }
}

fn default_dest(data_dir: &Path, id: &TargetId) -> PathBuf {
    data_dir.join("snapshots").join(id.as_str())
}

type Val<'i> = Spanned<DeValue<'i>>;

fn field<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a Val<'i>> {
    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The config file's name in a data dir.
pub const FILE_NAME: &str = "recman.toml";

/// The config file a command uses: `explicit` (`--config`), else
/// `DATA_DIR/recman.toml` (which may not exist).
pub fn path_in(data_dir: &Path, explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(|| data_dir.join(FILE_NAME), Path::to_path_buf)
}

/// `[engine] data_dir` of the config file at `path` and where it is written
/// (`file:line:column`), reading nothing else of it, so that every command
/// finds the log the same way, even one that needs no other setting.
/// `Ok(None)` when the file does not exist or does not set it.
pub fn data_dir_in(path: &Path) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ConfigError::Read {
                path: path.display().to_string(),
                error,
            })
        }
    };
    let cx = Cx {
        text: &text,
        file: path.display().to_string(),
        base: path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        hooks: Default::default(),
    };
    let doc = DeTable::parse(&text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.err(span, "", e.message().trim().to_string())
    })?;
    let Some(engine) = field(doc.get_ref(), "engine") else {
        return Ok(None);
    };
    let t = cx.table(engine, "engine")?;
    Ok(cx.path(t, "engine", "data_dir")?.map(|d| {
        (
            d,
            cx.at(field(t, "data_dir").map(|v| v.span()).unwrap_or_default()),
        )
    }))
}

/// [`parse_duration`], refusing zero and anything above [`MAX_DURATION`]:
/// for every duration a setting or a command-line flag takes.
pub fn parse_bounded_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than 0".into()),
        d if d > MAX_DURATION => Err(format!(
            "\"{}\" is too long: at most {}h",
            s.trim(),
            MAX_DURATION.as_secs() / 3600
        )),
        d => Ok(d),
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `1m30s` (saturating; see
/// [`parse_bounded_duration`] for settings).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{s}\" (write e.g. 10s, 500ms, 2m, 1h)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("number too large in \"{s}\""))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => return Err(format!("duration \"{s}\" needs a unit (ms, s, m, h or d)")),
            other => {
                return Err(format!(
                    "unknown unit \"{other}\" in \"{s}\" (use ms, s, m, h or d)"
                ))
            }
        };
        total = total.saturating_add(d);
    }
    Ok(total)
}

/// Where we are: the text (for line numbers), its name and its directory,
/// and the `exec` programs seen so far.
struct Cx<'t> {
    text: &'t str,
    file: String,
    base: PathBuf,
    hooks: std::cell::RefCell<Vec<HookProgram>>,
}

impl Cx<'_> {
    /// Line and column (from 1) of a byte offset.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut at = offset.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (line, before[line_start..].chars().count() + 1)
    }

    /// `file:line:column` of a span.
    fn at(&self, span: Range<usize>) -> String {
        let (line, column) = self.line_column(span.start);
        format!("{}:{line}:{column}", self.file)
    }

    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.line_column(span.start);
        ConfigError::Invalid {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn check_keys(&self, t: &DeTable<'_>, path: &str, allowed: &[&str]) -> Result<(), ConfigError> {
        for (k, _) in t.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                return Err(self.err(
                    k.span(),
                    &join(path, k.get_ref()),
                    format!("unknown key (expected one of {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn table<'a, 'i>(&self, v: &'a Val<'i>, key: &str) -> Result<&'a DeTable<'i>, ConfigError> {
        match v.get_ref() {
            DeValue::Table(t) => Ok(t),
            other => Err(self.err(
                v.span(),
                key,
                format!("expected a table, found {}", other.type_str()),
            )),
        }
    }

    fn string(
        &self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
    ) -> Result<Option<(String, Range<usize>)>, ConfigError> {
        match field(t, key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::String(s) => Ok(Some((s.to_string(), v.span()))),
                other => Err(self.err(
                    v.span(),
                    &join(path, key),
                    format!("expected a string, found {}", other.type_str()),
                )),
            },
        }
    }

    fn id(&self, s: &str, span: Range<usize>, key: &str) -> Result<String, ConfigError> {
        check_id("id", s).map_err(|e| {
            let reason = match e {
                recman_events::WireError::Invalid { reason, .. } => reason,
                other => other.to_string(),
            };
            self.err(span, key, format!("invalid name \"{s}\": {reason}"))
        })?;
        Ok(s.to_string())
    }

    /// A duration from 1 ms to [`MAX_DURATION`].
    fn duration(&self, t: &DeTable<'_>, path: &str, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(t, path, key)? {
            None => Ok(None),
            Some((s, span)) => match parse_bounded_duration(&s) {
                Ok(d) => Ok(Some(d)),
                Err(m) => Err(self.err(span, &join(path, key), m)),
            },
        }
    }

    /// A duration from `min` to `max` (errors name file, line and key).
    fn duration_within(
        &self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        match self.string(t, path, key)? {
            None => Ok(None),
            Some((s, span)) => match parse_duration(&s) {
                Ok(d) if d < min => Err(self.err(
                    span,
                    &join(path, key),
                    format!("\"{s}\" is too short: at least {min:?}"),
                )),
                Ok(d) if d > max => Err(self.err(
                    span,
                    &join(path, key),
                    format!("\"{s}\" is too long: at most {} days", max.as_secs() / 86_400),
                )),
                Ok(d) => Ok(Some(d)),
                Err(m) => Err(self.err(span, &join(path, key), m)),
            },
        }
    }

    /// `freeze_limit`: a duration from [`MIN_FREEZE_LIMIT`] to [`MAX_DURATION`].
    fn freeze_limit(&self, t: &DeTable<'_>, path: &str) -> Result<Option<Duration>, ConfigError> {
        let d = self.duration(t, path, "freeze_limit")?;
        if let Some(d) = d {
            if d < MIN_FREEZE_LIMIT {
                let span = field(t, "freeze_limit").map(|v| v.span()).unwrap_or_default();
                return Err(self.err(
                    span,
                    &join(path, "freeze_limit"),
                    format!(
                        "{d:?} is too short: at least {MIN_FREEZE_LIMIT:?} (the engine thaws 20 % before the limit)"
                    ),
                ));
            }
        }
        Ok(d)
    }

    fn u32(&self, t: &DeTable<'_>, path: &str, key: &str) -> Result<Option<u32>, ConfigError> {
        match field(t, key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::Integer(i) => u32::from_str_radix(i.as_str(), i.radix()).map(Some).map_err(|_| {
                    self.err(
                        v.span(),
                        &join(path, key),
                        format!("expected a whole number from 0 to {}", u32::MAX),
                    )
                }),
                other => Err(self.err(
                    v.span(),
                    &join(path, key),
                    format!("expected a whole number, found {}", other.type_str()),
                )),
            },
        }
    }

    fn path(&self, t: &DeTable<'_>, path: &str, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.string(t, path, key)? {
            None => Ok(None),
            Some((s, span)) if s.is_empty() => Err(self.err(span, &join(path, key), "must not be empty")),
            Some((s, _)) => {
                let p = PathBuf::from(s);
                Ok(Some(if p.is_absolute() { p } else { self.base.join(p) }))
            }
        }
    }

    fn strings(&self, v: &Val<'_>, key: &str) -> Result<Vec<String>, ConfigError> {
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.err(
                v.span(),
                key,
                format!("expected an array of strings, found {}", v.get_ref().type_str()),
            ));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Ok(s.to_string()),
                other => Err(self.err(
                    item.span(),
                    key,
                    format!("expected a string, found {}", other.type_str()),
                )),
            })
            .collect()
    }

    /// An argv: a non-empty array of strings whose first element is a program.
    fn argv(&self, t: &DeTable<'_>, path: &str, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(v) = field(t, key) else {
            return Ok(None);
        };
        let full = join(path, key);
        if let DeValue::String(s) = v.get_ref() {
            return Err(self.err(
                v.span(),
                &full,
                format!(
                    "expected an argv array such as [\"/usr/bin/prog\", \"arg\"], found the string \"{s}\" (recman never runs a shell)"
                ),
            ));
        }
        let argv = self.strings(v, &full)?;
        match argv.first() {
            None => Err(self.err(v.span(), &full, "must name a program: the array is empty")),
            Some(p) if p.is_empty() => Err(self.err(v.span(), &full, "the program (first element) is empty")),
            Some(_) => Ok(Some(argv)),
        }
    }

    fn required<T>(
        &self,
        v: Option<T>,
        t_span: Range<usize>,
        path: &str,
        key: &str,
    ) -> Result<T, ConfigError> {
        v.ok_or_else(|| self.err(t_span, &join(path, key), "missing (required)"))
    }

    fn kind(
        &self,
        t: &DeTable<'_>,
        t_span: Range<usize>,
        path: &str,
        what: &str,
        known: &[&str],
        later: &[&str],
    ) -> Result<String, ConfigError> {
        let (kind, span) = self.required(self.string(t, path, "type")?, t_span, path, "type")?;
        if known.contains(&kind.as_str()) {
            return Ok(kind);
        }
        let key = join(path, "type");
        if later.contains(&kind.as_str()) {
            return Err(self.err(
                span,
                &key,
                format!(
                    "{what} \"{kind}\" is not supported yet (supported: {})",
                    known.join(", ")
                ),
            ));
        }
        let all: Vec<&str> = known.iter().chain(later).copied().collect();
        Err(self.err(
            span,
            &key,
            format!("unknown {what} \"{kind}\" (expected one of {})", all.join(", ")),
        ))
    }

    fn target(
        &self,
        item: &Val<'_>,
        key: &str,
        engine: &EngineConfig,
        arrays: &[ArrayConfig],
    ) -> Result<TargetConfig, ConfigError> {
        let t = self.table(item, key)?;
        let mut allowed = vec![
            "id",
            "pool",
            "provider_pool",
            "freeze_limit",
            "retries",
            "retry_backoff",
            "retry_backoff_max",
            "keep_last",
            "rpo",
            "rpo_counts",
            "writer",
            "provider",
            "verify",
            "reconcile_every",
            "recovery",
        ];
        allowed.extend_from_slice(retention::KEYS);
        allowed.extend_from_slice(approval::KEYS);
        cx_keys(self, t, key, &allowed)?;
        let (id, id_span) = self.required(self.string(t, key, "id")?, item.span(), key, "id")?;
        let id = TargetId::new(self.id(&id, id_span, &join(key, "id"))?);
        let pool = match self.string(t, key, "pool")? {
            None => PoolName::new(DEFAULT_POOL),
            Some((s, span)) => PoolName::new(self.id(&s, span, &join(key, "pool"))?),
        };
        let mut provider_pool = match self.string(t, key, "provider_pool")? {
            None => pool.clone(),
            Some((s, span)) => PoolName::new(self.id(&s, span, &join(key, "provider_pool"))?),
        };
        let freeze_limit = self.freeze_limit(t, key)?.unwrap_or(engine.freeze_limit);
        let retries = self.u32(t, key, "retries")?;
        let retry_backoff = self.duration(t, key, "retry_backoff")?;
        let retry_backoff_max = self
            .duration(t, key, "retry_backoff_max")?
            .unwrap_or(DEFAULT_RETRY_BACKOFF_MAX);
        let keep_last = self.u32(t, key, "keep_last")?;
        let rpo = schedule::rpo(self, t, key)?;
        if keep_last == Some(0) {
            let span = field(t, "keep_last").map(|v| v.span()).unwrap_or(item.span());
            return Err(self.err(
                span,
                &join(key, "keep_last"),
                "must be at least 1 (leave it out to keep every snapshot)",
            ));
        }
        let retention = retention::read(self, t, key)?;

        let wkey = join(key, "writer");
        let writer = match field(t, "writer") {
            None => {
                return Err(self.err(
                    item.span(),
                    &wkey,
                    "missing (required): add [target.writer] with type = \"none\" or \"exec\"",
                ))
            }
            Some(v) => {
                let w = self.table(v, &wkey)?;
                match self
                    .kind(w, v.span(), &wkey, "writer", WRITERS, WRITERS_LATER)?
                    .as_str()
                {
                    "none" => {
                        cx_keys(self, w, &wkey, &["type"])?;
                        WriterConfig::None
                    }
                    "fsfreeze" => WriterConfig::FsFreeze(self.fsfreeze_writer(w, v.span(), &wkey)?),
                    "postgres" => WriterConfig::Postgres(self.postgres_writer(
                        w,
                        v.span(),
                        &wkey,
                        &engine.data_dir,
                        &id,
                        &pool,
                    )?),
                    _ => {
                        cx_keys(
                            self,
                            w,
                            &wkey,
                            &["type", "freeze", "thaw", "flush", "stop", "start", "timeout"],
                        )?;
                        self.note_hooks(
                            w,
                            &wkey,
                            &["freeze", "thaw", "flush", "stop", "start"],
                            &id,
                            &pool,
                        );
                        WriterConfig::Exec(ExecWriterConfig {
                            freeze: self.required(
                                self.argv(w, &wkey, "freeze")?,
                                v.span(),
                                &wkey,
                                "freeze",
                            )?,
                            thaw: self.required(self.argv(w, &wkey, "thaw")?, v.span(), &wkey, "thaw")?,
                            flush: self.argv(w, &wkey, "flush")?,
                            stop: self.argv(w, &wkey, "stop")?,
                            start: self.argv(w, &wkey, "start")?,
                            timeout: self
                                .duration(w, &wkey, "timeout")?
                                .unwrap_or(DEFAULT_WRITER_TIMEOUT),
                        })
                    }
                }
            }
        };

        let pkey = join(key, "provider");
        let provider =
            match field(t, "provider") {
                None => return Err(self.err(
                    item.span(),
                    &pkey,
                    "missing (required): add [target.provider] with type = \"copy\", \"exec\", \"3par\" or \"none\"",
                )),
                Some(v) => {
                    let p = self.table(v, &pkey)?;
                    match self
                        .kind(p, v.span(), &pkey, "provider", PROVIDERS, PROVIDERS_LATER)?
                        .as_str()
                    {
                        "none" => {
                            cx_keys(self, p, &pkey, &["type"])?;
                            ProviderConfig::None
                        }
                        "3par" => {
                            let c = threepar::provider(self, p, v.span(), &pkey, arrays)?;
                            // The array's workers take its snapshots: pool `array.<name>`.
                            if field(t, "provider_pool").is_none() {
                                provider_pool = PoolName::new(format!("array.{}", c.array.name));
                            }
                            ProviderConfig::ThreePar(c)
                        }
                        "btrfs" => ProviderConfig::Btrfs(self.btrfs_provider(p, v.span(), &pkey)?),
                        "qcow2" => ProviderConfig::Qcow2(self.qcow2_provider(p, v.span(), &pkey)?),
                        "copy" => {
                            cx_keys(self, p, &pkey, &["type", "source", "dest"])?;
                            let source =
                                self.required(self.path(p, &pkey, "source")?, v.span(), &pkey, "source")?;
                            let (dest, dest_is_default) = match self.path(p, &pkey, "dest")? {
                                Some(d) => (d, false),
                                None => (default_dest(&engine.data_dir, &id), true),
                            };
                            if host::resolve(&dest).starts_with(host::resolve(&source)) {
                                let span = field(p, "dest").map(|v| v.span()).unwrap_or(v.span());
                                return Err(self.err(
                                    span,
                                    &join(&pkey, "dest"),
                                    format!(
                                    "{} is inside the source {}: each snapshot would copy the previous ones",
                                    dest.display(),
                                    source.display()
                                ),
                                ));
                            }
                            ProviderConfig::Copy(CopyProviderConfig {
                                source,
                                dest,
                                dest_is_default,
                            })
                        }
                        _ => {
                            let mut keys = vec!["type", "create", "delete", "timeout"];
                            keys.extend_from_slice(EXEC_PROVIDER_RECOVERY_HOOKS);
                            cx_keys(self, p, &pkey, &keys)?;
                            let mut hooks = vec!["create", "delete"];
                            hooks.extend_from_slice(EXEC_PROVIDER_RECOVERY_HOOKS);
                            self.note_hooks(p, &pkey, &hooks, &id, &provider_pool);
                            ProviderConfig::Exec(ExecProviderConfig {
                                create: self.required(
                                    self.argv(p, &pkey, "create")?,
                                    v.span(),
                                    &pkey,
                                    "create",
                                )?,
                                delete: self.argv(p, &pkey, "delete")?,
                                restore: self.argv(p, &pkey, "restore")?,
                                rollback: self.argv(p, &pkey, "rollback")?,
                                mount: self.argv(p, &pkey, "mount")?,
                                unmount: self.argv(p, &pkey, "unmount")?,
                                timeout: self
                                    .duration(p, &pkey, "timeout")?
                                    .unwrap_or(DEFAULT_PROVIDER_TIMEOUT),
                            })
                        }
                    }
                }
            };

        let freeze = match &writer {
            WriterConfig::FsFreeze(fz) => Some(fz),
            WriterConfig::Postgres(pg) => pg.fsfreeze.as_ref(),
            _ => None,
        };
        if let (Some(fz), ProviderConfig::Btrfs(b)) = (freeze, &provider) {
            let span = field(t, "writer").map(|v| v.span()).unwrap_or(item.span());
            self.check_freeze_vs_btrfs(fz, b, span, &wkey)?;
        }
        let is_pg = matches!(writer, WriterConfig::Postgres(_));
        let verify = verify::read(self, t, key, &id, &provider_pool)?;
        let reconcile_every = reconcile::every(self, t, key, &provider)?;
        let recovery = recovery::read(self, t, key)?;
        let approval = approval::read(self, t, key)?;
        let rpo_verified = schedule::rpo_counts(self, t, key, verify.is_some())?;
        Ok(TargetConfig {
            id,
            pool,
            provider_pool,
            freeze_limit,
            retries: retries.unwrap_or(if is_pg {
                DEFAULT_PG_RETRIES
            } else {
                DEFAULT_RETRIES
            }),
            retry_backoff: retry_backoff.unwrap_or(if is_pg {
                DEFAULT_PG_RETRY_BACKOFF
            } else {
                DEFAULT_RETRY_BACKOFF
            }),
            retry_backoff_max,
            keep_last,
            rpo,
            rpo_verified,
            retention,
            writer,
            provider,
            verify,
            reconcile_every,
            recovery,
            approval,
        })
    }
}

fn cx_keys(cx: &Cx<'_>, t: &DeTable<'_>, path: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    cx.check_keys(t, path, allowed)
}

impl fmt::Display for TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (writer {} in {}, provider {} in {})",
            self.id,
            self.writer.kind(),
            self.pool,
            self.provider.kind(),
            self.provider_pool
        )
    }
}

#[cfg(test)]
mod tests;
