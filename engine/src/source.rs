//! Where a read command gets its answers: the running server of the data dir
//! (its `server.json`, or `--server URL`), else the data dir's log directly,
//! through the same projection (`view`).

use std::collections::BTreeMap;

use recman_events::log::LogError;
use recman_events::TargetId;

use crate::client::Client;
use crate::home::Home;
use crate::view::{Until, View};

/// Where a read command gets its answers.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArg {
    /// Talk to this server (e.g. http://127.0.0.1:7080) instead of the data dir's.
    #[arg(long, value_name = "URL", env = "RECMAN_SERVER")]
    pub server: Option<String>,
}

/// The help text of the read commands.
pub const READ_HELP: &str =
    "Reads the running `recman up` or `recman engine --listen` of the data dir (DATA_DIR/server.json)\n\
or --server URL; without one, reads the data dir's event log directly.\n\n\
Exit codes: 0 done, 1 not found, 2 could not run (no log, server unreachable, bad arguments).";

pub enum Source {
    Local(Box<View>),
    Remote(Client),
}

/// `keep_last` per target from the config, when there is one.
pub fn retention(home: &Home) -> BTreeMap<TargetId, Option<u32>> {
    match recman_config::Config::load(home.config_file()) {
        Ok(c) => c.targets.iter().map(|t| (t.id.clone(), t.keep_last)).collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Every retention rule per target from the config, when there is one.
pub fn policies(home: &Home) -> BTreeMap<TargetId, recman_core::RetentionPolicy> {
    match recman_config::Config::load(home.config_file()) {
        Ok(c) => c
            .targets
            .iter()
            .map(|t| (t.id.clone(), crate::runtime::retention_policy(t)))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Builds the view of the data dir's log up to `until`, folding the whole
/// log (`recman replay` rebuilds from the log on purpose; the other reads
/// use [`current_view`]).
pub fn local_view(home: &Home, until: Until) -> anyhow::Result<View> {
    let log = open_log(home)?;
    Ok(configured_view(home).build(log.as_ref(), until)?)
}

/// The view of the data dir's log as it is now, as the API's view starts:
/// from the newest valid checkpoint the engine wrote (the view section it
/// carries) and the log after it, so a read does not fold years of log.
/// Without a usable checkpoint it folds the whole log (a warning says why
/// one was skipped). `RECMAN_LOG=info` shows where it started.
pub async fn current_view(home: &Home) -> anyhow::Result<View> {
    let log = open_log(home)?;
    let view = configured_view(home);
    // Beside the log just opened (a config that does not load failed there).
    let store = home.checkpoint_store_for_reading()?;
    let started = std::time::Instant::now();
    let (view, resumed) = crate::checkpoint::resume_view(view, log.as_ref(), Some(store.as_ref())).await?;
    tracing::info!(
        checkpoint = ?resumed.from,
        tail = resumed.tail,
        ms = crate::checkpoint::took(started),
        "read the event log from a checkpoint"
    );
    Ok(view)
}

/// The data dir's log (or the config's PostgreSQL log), for reading.
fn open_log(home: &Home) -> anyhow::Result<std::sync::Arc<dyn recman_events::EventLog>> {
    home.open_log_for_reading().map_err(|e| match e {
        LogError::Locked(m) => anyhow::anyhow!(
            "{m}\nanother process owns the log and no server announces itself in {}; \
             wait for it to finish, or pass --server URL",
            crate::api::discovery::path(&home.data_dir).display()
        ),
        e => anyhow::anyhow!("cannot read the event log in {}: {e}", home.data_dir.display()),
    })
}

/// An empty view as the config sets it up (retention, bounds, schedules).
fn configured_view(home: &Home) -> View {
    let config = recman_config::Config::load(home.config_file()).ok();
    let bounds = config.as_ref().map(crate::runtime::bounds).unwrap_or_default();
    let recent = config.as_ref().map_or(crate::view::RECENT_FINISHED, |c| {
        c.engine.recent_finished as usize
    });
    let schedules = config.map(|c| c.schedules).unwrap_or_default();
    View::new(retention(home))
        .with_bounds(bounds, recent)
        .with_schedules(schedules)
        .with_policies(policies(home))
}

/// Job `id` from the data dir's log, folded on its own (a job the view no
/// longer keeps in memory).
pub fn local_job(home: &Home, id: recman_events::JobId) -> anyhow::Result<Option<crate::view::JobDetail>> {
    let log = home
        .open_log_for_reading()
        .map_err(|e| anyhow::anyhow!("cannot read the event log in {}: {e}", home.data_dir.display()))?;
    Ok(crate::view::job_from_log(log.as_ref(), id)?)
}

impl Source {
    /// The server (`server` or the discovery file), else the local view.
    pub async fn open(home: &Home, server: Option<&str>) -> anyhow::Result<Source> {
        match Client::discover(home, server).await? {
            Some(c) => Ok(Source::Remote(c)),
            None => Ok(Source::Local(Box::new(current_view(home).await?))),
        }
    }
}

/// A list command (`recman targets|mounts|clones`): `GET /v1/KEY` from the
/// running server (or `--server`), else `local` on the data dir; printed
/// as `{"KEY": [...]}` with `--json`, else by `table`.
pub async fn list<T, L, P>(
    home: &Home,
    server: &ServerArg,
    json: bool,
    key: &str,
    local: L,
    table: P,
) -> anyhow::Result<std::process::ExitCode>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    L: FnOnce(&View) -> Vec<T>,
    P: FnOnce(&[T]),
{
    let list: Vec<T> = match Source::open(home, server.server.as_deref()).await? {
        Source::Local(v) => local(&v),
        Source::Remote(c) => {
            let mut body: serde_json::Value = c.get(&format!("/v1/{key}")).await?;
            serde_json::from_value(body[key].take())
                .map_err(|e| anyhow::anyhow!("GET /v1/{key}: an unexpected answer: {e}"))?
        }
    };
    if json {
        println!("{}", serde_json::json!({ key: list }));
    } else {
        table(&list);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
