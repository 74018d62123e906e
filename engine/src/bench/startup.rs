//! `recman bench startup`: engine start-up on a large log, from the newest
//! checkpoint and the log's tail (open, load and check the checkpoint,
//! replay the tail: the core is ready), against a full replay of the same
//! log measured in the same run; the time until the API answers (its view
//! from the checkpoint's view section and the tail, then the engine's
//! start, as `recman up` does them: `api_ready_ms`); also the time the
//! checkpoint writer takes to encode and store one (beside the engine's
//! loop, which does not pause for it).
//!
//! The log is the simulator's log of a calm run (`--template-jobs` jobs),
//! repeated until it holds `--jobs` jobs, each copy with fresh job ids,
//! request ids and target names (so the state grows as a fleet's would) and
//! its clock moved on.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use recman_core::sim::{self, Faults, SimConfig};
use recman_core::CoreConfig;
use recman_events::{log, Backend, Event, JobId, StoredEvent};
use serde_json::Value;

use crate::checkpoint::{self, CheckpointStore, FileStore};
use crate::view::{self, Until, View};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes a new log into a fresh directory under --data-dir and removes it at the end.\n\
The last line of output is key=value pairs for scripts."
)]
pub struct Args {
    /// Jobs in the log (about 15 events each).
    #[arg(long, default_value_t = 300_000)]
    pub jobs: usize,
    /// Distinct targets over the whole log.
    #[arg(long, default_value_t = 100_000)]
    pub targets: usize,
    /// Jobs of the simulated run that is repeated.
    #[arg(long, default_value_t = 1_000)]
    pub template_jobs: usize,
    /// Also fold the API's view from the whole log (what start-up did
    /// without a checkpoint), time it, and check that the view started from
    /// the checkpoint shows the same.
    #[arg(long)]
    pub view: bool,
    /// Events after the checkpoint (default: the `[checkpoint] every_events`
    /// default, the longest tail the engine leaves).
    #[arg(long, default_value_t = recman_config::DEFAULT_EVERY_EVENTS)]
    pub tail: u64,
}

/// The API's empty view as `recman up` configures it by default.
fn configured() -> View {
    View::new(Default::default()).with_bounds(CoreConfig::default().bounds, view::RECENT_FINISHED)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Copy `k` of a template event (as JSON): ids and names made unique, times moved.
fn remap(
    v: &mut Value,
    k: usize,
    shift_ms: u64,
    ids: &mut HashMap<String, String>,
    targets: &BTreeSet<String>,
) {
    match v {
        Value::String(s) => {
            if let Some(n) = ids.get(s.as_str()) {
                *s = n.clone();
            } else if s.len() == 36 && s.parse::<JobId>().is_ok() {
                let n = JobId::new_v7().to_string();
                ids.insert(s.clone(), n.clone());
                *s = n;
            } else if targets.contains(s.as_str()) {
                *s = format!("{s}c{k}");
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| remap(x, k, shift_ms, ids, targets)),
        Value::Object(o) => {
            for (key, x) in o.iter_mut() {
                match (key.as_str(), &mut *x) {
                    ("request_id", Value::String(s)) => *s = format!("{s}-c{k}"),
                    (key, Value::Number(n)) if key.ends_with("_ms") => {
                        if let Some(t) = n.as_u64() {
                            *x = Value::from(t + shift_ms);
                        }
                    }
                    _ => remap(x, k, shift_ms, ids, targets),
                }
            }
        }
        _ => {}
    }
}

pub async fn run(data_dir: &Path, a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.template_jobs > 0 && a.jobs >= a.template_jobs,
        "--jobs must be at least --template-jobs (> 0)"
    );
    let copies = a.jobs.div_ceil(a.template_jobs);
    let template_targets = a.targets.div_ceil(copies).max(2);
    eprintln!(
        "simulating a calm run of {} jobs on {template_targets} targets (the template, repeated {copies} times)",
        a.template_jobs
    );
    let cfg = SimConfig {
        seed: 1,
        jobs: a.template_jobs,
        targets: template_targets,
        groups: true,
        faults: Faults::None,
        mutation: None,
        worker_mutation: None,
        schedules: false,
        engines: 1,
        over_ms: None,
    };
    let (_, template, core_cfg) = tokio::task::spawn_blocking(move || {
        sim::run_with_config(&cfg).map_err(|v| anyhow::anyhow!("{}", sim::render(&v)))
    })
    .await??;
    let targets: BTreeSet<String> = core_cfg.targets.keys().map(|t| t.as_str().to_string()).collect();
    let span_ms = template.last().map(|e| e.at_ms).unwrap_or(0)
        - template.first().map(|e| e.at_ms).unwrap_or(0)
        + 1_000;
    let template: Vec<Value> = template
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .context("the template as JSON")?;
    let total = (template.len() * copies) as u64;
    anyhow::ensure!(
        a.tail < total,
        "--tail {} is not below the log's {total} events",
        a.tail
    );
    let at = total - a.tail;

    let dir = data_dir.join(format!("bench-startup-{}", std::process::id()));
    anyhow::ensure!(!dir.exists(), "{} exists", dir.display());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tpl = Template {
        events: &template,
        copies,
        span_ms,
        targets: &targets,
    };
    let result = measure(&dir, tpl, total, at, a.view).await;
    let _ = std::fs::remove_dir_all(&dir);
    let line = result?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// The log to write: `copies` copies of `events`, each `span_ms` later.
struct Template<'a> {
    events: &'a [Value],
    copies: usize,
    span_ms: u64,
    targets: &'a BTreeSet<String>,
}

async fn measure(
    dir: &Path,
    tpl: Template<'_>,
    total: u64,
    at: u64,
    with_view: bool,
) -> anyhow::Result<String> {
    let store = Arc::new(FileStore::in_data_dir(dir));
    let started = Instant::now();
    let (encode_ms, checkpoint_bytes, state_jobs) = {
        let log = log::open(Backend::Redb, dir)?;
        // The writer's fold: the API's view, holding the core state.
        let mut folded = configured();
        let mut seq = 0u64;
        let mut batch: Vec<Event> = Vec::with_capacity(8192);
        let mut found = None;
        for k in 0..tpl.copies {
            let mut ids = HashMap::new();
            for v in tpl.events {
                let mut v = v.clone();
                remap(&mut v, k, k as u64 * tpl.span_ms, &mut ids, tpl.targets);
                let e: Event = serde_json::from_value(v).context("a remapped event")?;
                seq += 1;
                let stored = StoredEvent { seq, event: e };
                folded.apply(&stored);
                batch.push(stored.event);
                if batch.len() == 8192 || seq == at || seq == total {
                    log.append(std::mem::take(&mut batch)).await?;
                }
                if seq == at {
                    // What the writer does off the engine's loop.
                    let t = Instant::now();
                    let hash =
                        checkpoint::record_hash(log.as_ref(), at)?.context("the checkpoint's record")?;
                    let bytes = recman_core::checkpoint::encode_with_view(
                        at,
                        &hash,
                        &folded.state,
                        &folded.encode_section(),
                    );
                    let len = bytes.len();
                    store.save(at, bytes, 3).await?;
                    found = Some((ms(t), len, folded.state.jobs.len()));
                }
            }
            if k % 50 == 49 {
                eprintln!("  {seq} of {total} events written");
            }
        }
        log.append(batch).await?;
        found.context("the checkpoint was not taken")?
    };
    eprintln!(
        "wrote {total} events and a checkpoint at record {at} ({checkpoint_bytes} bytes, {state_jobs} jobs) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Baseline: open and fold the whole log.
    let t = Instant::now();
    let full = {
        let log = log::open(Backend::Redb, dir)?;
        let core =
            tokio::task::block_in_place(|| crate::runtime::replay(CoreConfig::default(), log.as_ref()))?;
        anyhow::ensure!(
            core.state().applied == total,
            "the full replay folded {}",
            core.state().applied
        );
        core
    };
    let full_replay_ms = ms(t);

    // Start-up: open, newest valid checkpoint, tail.
    let t = Instant::now();
    let (core, resumed) = {
        let log = log::open(Backend::Redb, dir)?;
        let r = crate::checkpoint::resume(
            CoreConfig::default(),
            log.as_ref(),
            Some(store.as_ref() as &dyn CheckpointStore),
        )
        .await?;
        drop(log);
        r
    };
    let startup_ms = ms(t);

    anyhow::ensure!(
        resumed.from == Some(at),
        "start-up did not use the checkpoint: {resumed:?}"
    );
    if let Some(d) = recman_core::checkpoint::difference(core.state(), full.state()) {
        anyhow::bail!("start-up from the checkpoint differs from the full replay: {d}");
    }
    eprintln!(
        "full replay {full_replay_ms:.0} ms; from the checkpoint ({} tail events) {startup_ms:.0} ms; \
         the checkpoint writer takes {encode_ms:.0} ms to encode and store one (off the engine's loop)",
        resumed.tail
    );
    drop((core, full));

    // The API: `recman up` builds its view (from the checkpoint's view
    // section and the tail), then starts the engine (from the checkpoint and
    // the tail); /readyz answers once the engine answers.
    let t = Instant::now();
    let (started, view_resumed, view_startup_ms) = {
        let log = log::open(Backend::Redb, dir)?;
        let store = Some(store.as_ref() as &dyn CheckpointStore);
        let (v, r) = checkpoint::resume_view(configured(), log.as_ref(), store).await?;
        let view_ms = ms(t);
        let (core, _) = checkpoint::resume(CoreConfig::default(), log.as_ref(), store).await?;
        drop(core);
        (v, r, view_ms)
    };
    let api_ready_ms = ms(t);
    anyhow::ensure!(
        view_resumed.from == Some(at),
        "the API's view did not start from the checkpoint: {view_resumed:?}"
    );
    anyhow::ensure!(started.last_seq == total, "the view is at {}", started.last_seq);
    eprintln!(
        "the API's view from the checkpoint ({} tail events) {view_startup_ms:.0} ms; the API answers after {api_ready_ms:.0} ms",
        view_resumed.tail
    );
    let full_view = if with_view {
        let t = Instant::now();
        let full = {
            let log = log::open(Backend::Redb, dir)?;
            tokio::task::block_in_place(|| configured().build(log.as_ref(), Until::End))?
        };
        let view_ms = ms(t);
        anyhow::ensure!(full.last_seq == total, "the view folded to {}", full.last_seq);
        anyhow::ensure!(
            view::shown(&started) == view::shown(&full),
            "the API's view from the checkpoint shows other than a fold of the whole log"
        );
        eprintln!("the API's view folded from the whole log: {view_ms:.0} ms (shows the same)");
        format!(" view_full_ms={view_ms:.0}")
    } else {
        String::new()
    };
    Ok(format!(
        "startup_ms={startup_ms:.0} full_replay_ms={full_replay_ms:.0} events={total} checkpoint_bytes={checkpoint_bytes} \
         tail={} jobs_in_state={state_jobs} write_ms={encode_ms:.0} view_startup_ms={view_startup_ms:.0}{full_view} \
         api_ready_ms={api_ready_ms:.0}",
        resumed.tail
    ))
}
