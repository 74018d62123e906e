//! `recman worker --amqp URL --pool P`: a worker process on RabbitMQ. It runs
//! steps only for targets in its own config, consumes its pools and its own
//! queue (thaws come back to the worker that froze), and thaws by itself when
//! a thaw does not come in time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use recman_config::{Config, DEFAULT_STATE_DIR};
use recman_events::bus::Bus;
use recman_events::{PoolName, WorkerId};
use recman_workers::runtime::Worker;

use crate::broker::AmqpArgs;
use crate::home::Home;
use crate::home::Missing;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
recman worker --amqp amqp://worker-mbx01@mq1/recman --amqp-password-file /etc/recman/amqp-password --pool host.mbx01\n  \
recman worker --config /etc/recman/recman.toml     # pools from [worker] pools or the targets\n  \
recman worker --config /etc/recman/recman.toml --status   # what is frozen on this host now, by which job\n\n\
Consumes recman.pool.<pool> for each pool and recman.worker.<id>. With --no-declare it\n\
declares only those two queues (see deploy/README.md for a worker's permissions).\n\
Stops on Ctrl-C or SIGTERM: lets the steps in flight finish for at most 30 s (then abandons\n\
them, killing their hooks; the engine asks again) and thaws what is still frozen.")]
pub struct Args {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Pool to consume (repeat for several). Default: `[worker] pools`, else
    /// every pool a target of the config names.
    #[arg(long = "pool", value_name = "POOL")]
    pub pools: Vec<String>,
    /// Worker id (its own queue is recman.worker.<id>). Default: `[worker] id`,
    /// else <hostname>-<pid>.
    #[arg(long)]
    pub id: Option<String>,
    /// Unsettled commands per queue.
    #[arg(long, default_value_t = recman_workers::runtime::DEFAULT_PREFETCH)]
    pub prefetch: u16,
    /// Declare only this worker's queues, not the whole topology (for a user
    /// without configure permission on the engine's queues).
    #[arg(long)]
    pub no_declare: bool,
    /// The host's freeze state (which job froze each target, by which worker
    /// process): every worker of a host must use the same one. Default:
    /// `[worker] state_dir`, else /run/recman.
    #[arg(long, env = STATE_DIR_ENV, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the host's freeze state of the targets of these pools (frozen
    /// now: by which job, attempt and worker, since when, watchdog due; the
    /// last thaw) and exit; reads only, needs no broker.
    #[arg(long)]
    pub status: bool,
}

/// The environment variable that names the host's freeze state directory.
pub const STATE_DIR_ENV: &str = "RECMAN_STATE_DIR";

/// Where the workers of this process keep the host's freeze state: `flag`
/// (or `RECMAN_STATE_DIR`), else `[worker] state_dir`, else `default`
/// (`/run/recman` where several worker processes may serve one host;
/// `DATA_DIR/worker-state` for the embedded engine's own worker, alone on
/// its in-process bus).
pub fn state_dir(flag: Option<&Path>, config: &Config, default: PathBuf) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(STATE_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| config.worker.as_ref().and_then(|w| w.state_dir.clone()))
        .unwrap_or(default)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let mut config = g.load_config(Missing::Fail)?;
    config.set_data_dir(&g.data_dir);
    let id =
        a.id.clone()
            .or_else(|| {
                config
                    .worker
                    .as_ref()
                    .and_then(|w| w.id.as_ref().map(|i| i.to_string()))
            })
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    recman_events::wire::check_id("worker id", &id)?;
    for p in &a.pools {
        recman_events::wire::check_id("pool", p)?;
    }
    let dir = state_dir(a.state_dir.as_deref(), &config, PathBuf::from(DEFAULT_STATE_DIR));
    let worker = if a.pools.is_empty() {
        Worker::from_config(WorkerId::from(id.as_str()), &config)
    } else {
        let pools = a.pools.iter().map(|p| PoolName::new(p.clone())).collect();
        Worker::new(WorkerId::from(id.as_str()), pools, &config)
    }
    .with_prefetch(a.prefetch)
    .with_state_dir(dir.clone());
    if worker.pools().is_empty() {
        anyhow::bail!(
            "this worker serves no pool (`[worker] pools = []` in {}): name the pools it serves there or with --pool",
            g.config_file().display()
        );
    }
    if a.status {
        return status(&config, worker.pools(), &dir).await;
    }
    crate::home::check_host(&config, Some(worker.pools()), None)?;
    eprintln!(
        "recman worker {id}: data dir {} (from {})",
        g.data_dir.display(),
        g.data_dir_from
    );
    let amqp = a
        .amqp
        .connect(Some(&config), format!("recman-worker-{id}"), !a.no_declare)
        .await
        .map_err(|e| {
            if !a.no_declare && format!("{e:#}").contains("ACCESS_REFUSED") {
                e.context(
                    "this user may not declare the topology: with the worker role's permissions \
                     (deploy/README.md, \"Users and permissions\") run the worker with --no-declare; \
                     the engine or deploy/rabbitmq/definitions.json declares it",
                )
            } else {
                e
            }
        })?;
    let bus: Arc<dyn Bus> = amqp.clone();
    eprintln!(
        "recman worker {id}: pools {}; host freeze state in {}; Ctrl-C to stop",
        worker
            .pools()
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        worker
            .state_dir()
            .map_or_else(String::new, |d| d.display().to_string())
    );
    worker.run(bus, crate::signal::stop()).await?;
    if amqp.connection_lost() {
        anyhow::bail!("the broker connection was lost and did not come back");
    }
    Ok(ExitCode::SUCCESS)
}

/// `--status`: each target of `pools` as the host's freeze state in `dir` has it.
async fn status(config: &Config, pools: &[PoolName], dir: &Path) -> anyhow::Result<ExitCode> {
    use recman_core::worker::ThawedBy;
    use recman_workers::runtime::HostState;
    let host = HostState::inspect(dir);
    let now = recman_events::clock::now_ms();
    let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
    println!(
        "host freeze state {} (pools {})",
        dir.display(),
        pools.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
    );
    let mut frozen = 0;
    for t in config.targets.iter().filter(|t| pools.contains(&t.pool)) {
        let mem = host.read(&t.id).await?;
        let state = match mem.hold() {
            Some(h) => {
                frozen += 1;
                format!(
                    "FROZEN by job {} attempt {} for {} (worker {}, process {}), watchdog thaws in {}",
                    h.job,
                    h.attempt,
                    secs(now.saturating_sub(h.frozen_at_ms)),
                    h.process.worker,
                    if host.alive(&h.process) {
                        "alive"
                    } else {
                        "gone: the next worker of this host takes it over"
                    },
                    secs(h.deadline_ms.saturating_sub(now)),
                )
            }
            None => "not frozen".to_string(),
        };
        let last = match mem.last_thawed() {
            Some(((job, attempt), th)) => format!(
                "; last thaw: job {job} attempt {attempt} by {}, freeze window {}",
                match th.by {
                    ThawedBy::Command => "the engine's command",
                    ThawedBy::Watchdog => "a worker by itself",
                },
                format_args!("{:.1} ms", th.window_us as f64 / 1000.0)
            ),
            None => String::new(),
        };
        println!("{:<16} {:<16} {state}{last}", t.id.as_str(), t.pool.as_str());
    }
    println!("{frozen} frozen now");
    Ok(ExitCode::SUCCESS)
}
