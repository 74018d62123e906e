//! The data dir and config file a command works on, and the one way to load
//! that config: `--config`, else `DATA_DIR/recman.toml`, else what the
//! command accepts instead ([`Missing`]).
//!
//! The data dir (where the log lives) has one precedence rule for every
//! command ([`Home::resolve`]): `--data-dir`, else `RECMAN_DATA_DIR`, else
//! `[engine] data_dir` of the config, else `./recman-data`. A command that
//! appends to the log says where it is at start and refuses to begin a new,
//! empty log where a previous one must be ([`Home::check_log`], issue 12
//! item 6): in a data dir named by the config (unless `--init`), or in one
//! whose marker says a log was created there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use recman_config::Config;
use recman_events::{log, Backend, EventLog};

use crate::demo;

/// The data dir when nothing names one.
pub const DEFAULT_DATA_DIR: &str = "./recman-data";

/// Options every subcommand takes: where a command keeps its log and finds
/// its config (`--data-dir`, `--config`, `--init`).
#[derive(Debug, Clone, clap::Args)]
pub struct Home {
    /// Where recman keeps its event log and local state. Precedence: this
    /// flag, RECMAN_DATA_DIR, `[engine] data_dir` of the config, ./recman-data.
    #[arg(long = "data-dir", value_name = "DIR", global = true, env = "RECMAN_DATA_DIR")]
    pub data_dir_arg: Option<PathBuf>,
    /// Config file with targets (default: DATA_DIR/recman.toml when it exists,
    /// DATA_DIR from --data-dir, RECMAN_DATA_DIR or ./recman-data).
    #[arg(long, short = 'c', global = true, env = "RECMAN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Start a new, empty event log where none is yet, even in a data dir the
    /// config names or one that held a log before (first start of a service).
    #[arg(long, global = true)]
    pub init: bool,
    /// The API token a client command sends (a file with the token on its
    /// first line, as `recman user add` wrote it to show once). Precedence:
    /// this flag, RECMAN_TOKEN, `[api] token_file` of the config.
    #[arg(
        long = "api-token-file",
        value_name = "FILE",
        global = true,
        env = "RECMAN_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// The data dir in use, after [`Home::resolve`].
    #[arg(skip)]
    pub data_dir: PathBuf,
    /// What named it: `--data-dir`, `RECMAN_DATA_DIR`, `[engine] data_dir
    /// at FILE:LINE:COL` or `the default`.
    #[arg(skip)]
    pub data_dir_from: DataDirFrom,
}

/// What named the data dir (see [`Home::resolve`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DataDirFrom {
    Flag,
    Env,
    /// `[engine] data_dir`, with where it is written.
    Config(String),
    #[default]
    Default,
}

impl std::fmt::Display for DataDirFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataDirFrom::Flag => f.write_str("--data-dir"),
            DataDirFrom::Env => f.write_str("RECMAN_DATA_DIR"),
            DataDirFrom::Config(at) => write!(f, "[engine] data_dir at {at}"),
            DataDirFrom::Default => f.write_str("the default"),
        }
    }
}

/// What to do when there is no `--config` and no `DATA_DIR/recman.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Serve the demo target, saying so (`recman up`).
    ServeDemo,
    /// The demo target when `demo` is what was asked for, else an error
    /// (`recman snapshot`).
    DemoIfAsked(bool),
    /// An error that says to pass --config (`recman engine`, `recman worker`).
    Fail,
}

impl Home {
    /// Settles the data dir: `--data-dir`, else `RECMAN_DATA_DIR`, else
    /// `[engine] data_dir` of the config file, else `./recman-data`.
    pub fn resolve(&mut self) -> anyhow::Result<()> {
        (self.data_dir, self.data_dir_from) = match &self.data_dir_arg {
            Some(d) => {
                let from_env = std::env::var_os("RECMAN_DATA_DIR").is_some_and(|v| Path::new(&v) == d);
                let from = if from_env && !flag_given() {
                    DataDirFrom::Env
                } else {
                    DataDirFrom::Flag
                };
                (d.clone(), from)
            }
            None => match recman_config::data_dir_in(&self.config_file())? {
                Some((d, at)) => (d, DataDirFrom::Config(at)),
                None => (PathBuf::from(DEFAULT_DATA_DIR), DataDirFrom::Default),
            },
        };
        Ok(())
    }

    /// The config file: `--config`, else `DATA_DIR/recman.toml` (may not
    /// exist), DATA_DIR as named before the config is read.
    pub fn config_file(&self) -> PathBuf {
        let dir = self
            .data_dir_arg
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        recman_config::path_in(&dir, self.config.as_deref())
    }

    /// Loads the config; errors name file, line and key. Defaulted paths
    /// under the data dir (copy destinations, label dirs) follow the data dir
    /// in use.
    pub fn load_config(&self, missing: Missing) -> anyhow::Result<Config> {
        let mut config = self.load_config_as_written(missing)?;
        config.set_data_dir(&self.data_dir);
        Ok(config)
    }

    fn load_config_as_written(&self, missing: Missing) -> anyhow::Result<Config> {
        let path = self.config_file();
        if missing == Missing::Fail {
            return Config::load(&path).context("pass --config FILE (or write DATA_DIR/recman.toml)");
        }
        if self.config.is_some() || path.exists() {
            return Ok(Config::load(&path)?);
        }
        match missing {
            Missing::ServeDemo => {
                eprintln!(
                    "no config ({} does not exist): serving the demo target",
                    path.display()
                );
                demo::config(&self.data_dir)
            }
            Missing::DemoIfAsked(true) => demo::config(&self.data_dir),
            _ => bail!(
                "no config: pass --config FILE or write {} (or try `recman snapshot demo`)",
                path.display()
            ),
        }
    }

    /// Before a command appends to the log of the data dir: refuses to begin
    /// a new, empty log where a previous one must be, then says on stderr
    /// which log it uses and what named it.
    ///
    /// The rule: a data dir that holds a log is used. One without a log gets
    /// a new one, unless the config names it (`[engine] data_dir` is a
    /// statement that the log lives there: a missing one was moved, deleted,
    /// or its filesystem is not mounted) or its marker says a log was created
    /// there before; `--init` starts a new log anyway. A zero-byte or
    /// otherwise damaged log file is refused when opened (`recman audit`).
    pub fn check_log(&self, command: &str) -> anyhow::Result<()> {
        let dir = &self.data_dir;
        let found = log::detect(dir)?;
        if found.is_none() && !self.init {
            let marker = dir.join(log::MARKER_FILE);
            if let DataDirFrom::Config(_) = &self.data_dir_from {
                bail!(
                    "no event log in {} ({} names it): the log of this installation is missing \
                     (moved or deleted? its filesystem not mounted?); restore it, or pass --init \
                     on the first start to begin a new, empty log there",
                    dir.display(),
                    self.data_dir_from
                );
            }
            if marker.exists() {
                bail!(
                    "no event log in {}, but {} says one was created there: the log is missing \
                     (moved or deleted?); restore it, or pass --init to begin a new, empty log",
                    dir.display(),
                    marker.display()
                );
            }
        }
        let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        eprintln!(
            "recman {command}: log {} in {} (data dir from {}{})",
            found.map_or("new", |b| b.as_str()),
            shown.display(),
            self.data_dir_from,
            if found.is_none() {
                "; starting a new, empty log"
            } else {
                ""
            }
        );
        Ok(())
    }
}

impl Home {
    /// Opens the log for appending: the data dir's (its backend as found,
    /// redb for a new one; a log another process owns is refused with where
    /// that process's API is), or the PostgreSQL log of `[log] postgres`,
    /// waiting as a standby while another engine holds it
    /// ([`open_postgres_waiting`]).
    pub async fn open_log(&self, config: &Config, command: &str) -> anyhow::Result<Arc<dyn EventLog>> {
        if let Some(place) = pg_place(config)? {
            let opts = log::lease::LeaseOptions {
                lease: config.log.lease(),
            };
            return open_postgres_waiting(place, opts, command).await;
        }
        self.check_log(command)?;
        open_detected_patiently(&self.data_dir)
            .map_err(|e| crate::api::discovery::explain_locked(&self.data_dir, e))
    }

    /// Where the engine's checkpoints of the log of `config` go: a table
    /// beside a PostgreSQL log, else files in the data dir.
    pub fn checkpoints(&self, config: &Config) -> anyhow::Result<crate::checkpoint::Checkpoints> {
        let store: Arc<dyn crate::checkpoint::CheckpointStore> = match pg_place(config)? {
            Some(place) => Arc::new(crate::checkpoint::PgCheckpoints::new(place)),
            None => Arc::new(crate::checkpoint::FileStore::in_data_dir(&self.data_dir)),
        };
        Ok(crate::checkpoint::Checkpoints {
            store,
            policy: crate::checkpoint::Policy::from_config(config),
        })
    }

    /// The checkpoints of the log `recman audit` reads (as
    /// [`Home::open_log_for_reading`] chooses it).
    pub fn checkpoint_store_for_reading(
        &self,
    ) -> anyhow::Result<Arc<dyn crate::checkpoint::CheckpointStore>> {
        Ok(match self.log_place()? {
            Some(place) => Arc::new(crate::checkpoint::PgCheckpoints::new(place)),
            None => Arc::new(crate::checkpoint::FileStore::in_data_dir(&self.data_dir)),
        })
    }

    /// Opens the log for reading (`[log] postgres` when the config names
    /// one, else the data dir's): never creates one. A config that exists
    /// (or was named with --config) and does not load is an error naming its
    /// file, line and key: reading the data dir's log instead would show
    /// another log than the engine's.
    pub fn open_log_for_reading(&self) -> Result<Arc<dyn EventLog>, log::LogError> {
        match self
            .log_place()
            .map_err(|e| log::LogError::Store(format!("{e:#}")))?
        {
            Some(place) => log::open_postgres_for_reading(&place),
            None => log::open_for_reading(&self.data_dir),
        }
    }

    /// The PostgreSQL log the config names (`None`: the data dir's log, or
    /// no config at all).
    pub fn log_place(&self) -> anyhow::Result<Option<log::pg_store::PgPlace>> {
        let path = self.config_file();
        if self.config.is_none() && !path.exists() {
            return Ok(None);
        }
        pg_place(&Config::load(&path)?)
    }

    /// Where the log read by [`Home::open_log_for_reading`] lives, for
    /// messages: the PostgreSQL place, else the data dir.
    pub fn log_shown(&self) -> String {
        match self.log_place() {
            Ok(Some(place)) => place.display(),
            _ => self.data_dir.display().to_string(),
        }
    }
}

/// How long opening a data dir's log waits while another process has it
/// open: a reader (`recman events --follow`, `recman job`) holds it for a
/// moment at a time, an engine for its lifetime.
const LOCKED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the log in `dir` (its backend as found, redb for a new one),
/// retrying for up to [`LOCKED_PATIENCE`] while another process has it open,
/// so a short read elsewhere does not make this command fail.
pub fn open_detected_patiently(dir: &Path) -> Result<Arc<dyn EventLog>, log::LogError> {
    let deadline = std::time::Instant::now() + LOCKED_PATIENCE;
    loop {
        match log::open_detected(dir, Backend::Redb) {
            Err(log::LogError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            other => return other,
        }
    }
}

/// The PostgreSQL place of `[log]`, with the password of its file.
pub fn pg_place(config: &Config) -> anyhow::Result<Option<log::pg_store::PgPlace>> {
    let Some(url) = &config.log.postgres else {
        return Ok(None);
    };
    let password = match &config.log.password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading [log] password_file {}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => None,
    };
    let place = log::pg_store::PgPlace::new(url, &config.log.schema)
        .map_err(|e| anyhow::anyhow!("{}: [log] {e}", config.path.display()))?
        .with_password(password);
    Ok(Some(place))
}

/// How often a standby engine asks for the log's writer lock.
pub const STANDBY_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens the PostgreSQL log for appending. While another engine holds it,
/// this one is a standby: it says so once, asks again every
/// [`STANDBY_POLL`], and goes on when the lock is its own (the holder died,
/// or its session to the database did, or its lease expired: then its
/// sessions are ended): then it replays the log like any start. Any other
/// error ends the wait.
pub async fn open_postgres_waiting(
    place: log::pg_store::PgPlace,
    opts: log::lease::LeaseOptions,
    command: &str,
) -> anyhow::Result<Arc<dyn EventLog>> {
    let mut said = false;
    let since = std::time::Instant::now();
    // Ctrl-C or SIGTERM while waiting: a standby has nothing open to close
    // and exits 0 at once (its supervisor stopped it on purpose).
    let stop = crate::signal::stop();
    tokio::pin!(stop);
    loop {
        let p = place.clone();
        match tokio::task::spawn_blocking(move || log::open_postgres_with(&p, opts)).await? {
            Ok(l) => {
                let lease = l.lease();
                if let Some(lease) = &lease {
                    if said {
                        lease.set_waited(since.elapsed());
                    }
                }
                let epoch = lease.as_ref().map(|l| l.epoch).unwrap_or_default();
                let expired = lease.as_ref().is_some_and(|l| l.took_from_expired);
                if said || expired {
                    eprintln!(
                        "recman {command}: took over the event log in {} after {:.1} s as a standby{}; \
                         leader of epoch {epoch}; replaying it",
                        place.display(),
                        since.elapsed().as_secs_f64(),
                        if expired {
                            " (the holder's lease had expired: its sessions were ended)"
                        } else {
                            ""
                        }
                    );
                } else {
                    eprintln!(
                        "recman {command}: event log in {} (PostgreSQL), leader of epoch {epoch}",
                        place.display()
                    );
                }
                return Ok(l);
            }
            Err(log::LogError::Locked(m)) => {
                if !said {
                    eprintln!("recman {command}: standby: {m}; waiting to take over (asking every {STANDBY_POLL:?})");
                    said = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(STANDBY_POLL) => {}
                    _ = &mut stop => {
                        eprintln!("recman {command}: stopped while waiting as a standby");
                        std::process::exit(0);
                    }
                }
            }
            Err(e) => bail!("cannot open the event log in {}: {e}", place.display()),
        }
    }
}

/// Completes when this process lost the leadership of its shared log (its
/// lease was fenced or not renewed in time), with why; never for a log it
/// owns alone. The engine then steps down: it stops and exits non-zero.
pub async fn leadership_lost(log: &dyn EventLog) -> String {
    let Some(lease) = log.lease() else {
        return std::future::pending().await;
    };
    let every = (lease.options.margin() / 2).max(std::time::Duration::from_millis(10));
    loop {
        if let Some(why) = lease.lost() {
            return why;
        }
        tokio::time::sleep(every).await;
    }
}

/// The host checks of a command that runs workers (and, with `log_dir`,
/// appends to a log) for `pools` (every pool with `None`): the `exec`
/// programs exist and are executable here, and neither the log's directory
/// nor a freeze-marker directory is on a filesystem a target freezes.
pub fn check_host(
    config: &Config,
    pools: Option<&[recman_events::PoolName]>,
    log_dir: Option<&Path>,
) -> anyhow::Result<()> {
    config.check_programs(pools)?;
    let dirs: Vec<(&str, &Path)> = log_dir
        .map(|d| ("the event log's directory", d))
        .into_iter()
        .collect();
    config.check_not_frozen(&dirs, pools).map_err(anyhow::Error::msg)
}

/// The pools a local worker of `config` serves: `[worker] pools`, else all.
pub fn local_pools(config: &Config) -> Option<Vec<recman_events::PoolName>> {
    config.worker.as_ref().and_then(|w| w.pools.clone())
}

/// Whether `--data-dir` is on the command line (clap folds the flag and the
/// environment into one value; only the message needs to tell them apart).
fn flag_given() -> bool {
    std::env::args_os().any(|a| a == "--data-dir" || a.to_string_lossy().starts_with("--data-dir="))
}
