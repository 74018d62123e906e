//! `recman bench freeze`: freeze windows of real jobs (`fsfreeze` writer +
//! `btrfs` provider through the engine handle, durable log and all) against
//! the bare sequence FIFREEZE → btrfs snapshot ioctl → FITHAW, in one run.
//!
//! The stack is ext4 on a loop image stored in a btrfs subvolume: the ext4
//! filesystem is frozen, the subvolume under it is snapshotted (a btrfs
//! snapshot of a *frozen btrfs* would wait for its own thaw).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use recman_config::{Config, FsFreezeConfig};
use recman_events::{log, Backend, EventBody, SnapshotRequest, Stage, TargetId, WorkerId};
use recman_workers::provider::btrfs_snapshot_ioctl;
use recman_workers::runtime::Worker;
use recman_workers::writer::{FsFreezeWriter, StepCtx};

use super::measure::percentile;
use crate::handle::{Drain, Engine};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Needs root (loop devices, mount, FIFREEZE) and btrfs-progs, e2fsprogs.\n\
Builds its filesystems under DATA_DIR/bench-freeze-PID and removes them afterwards.\n\
The last line is machine-readable: freeze_window_p50_us= freeze_window_p99_us= bare_p50_us= bare_p99_us="
)]
pub struct Args {
    /// Jobs through recman, and as many bare sequences.
    #[arg(long, default_value_t = 100)]
    pub jobs: usize,
    /// Where the worker keeps the host freeze state: `disk` (a state
    /// directory on the data dir's disk, as `recman up` and `recman snapshot`
    /// do: written durably after each freeze, inside the window) or `memory`
    /// (a worker alone in its process; the figures before 2026-12-02).
    #[arg(long, value_enum, default_value_t = HostState::Disk)]
    pub host_state: HostState,
}

/// `--host-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HostState {
    Disk,
    Memory,
}

impl HostState {
    fn as_str(self) -> &'static str {
        match self {
            HostState::Disk => "disk",
            HostState::Memory => "memory",
        }
    }
}

/// Loop filesystems, unmounted and detached on drop (also on error).
struct Stack {
    dir: PathBuf,
    mounts: Vec<(PathBuf, String)>,
}

impl Stack {
    fn mount(&mut self, img: &Path, size_mb: u64, mkfs: &[&str], at: &Path) -> anyhow::Result<()> {
        std::fs::File::create(img)?.set_len(size_mb << 20)?;
        let dev = sh("losetup", &["-f", "--show", &img.display().to_string()])?
            .trim()
            .to_string();
        let mut args: Vec<&str> = mkfs[1..].to_vec();
        args.push(&dev);
        if let Err(e) = sh(mkfs[0], &args) {
            let _ = sh("losetup", &["-d", &dev]);
            return Err(e);
        }
        std::fs::create_dir_all(at)?;
        if let Err(e) = sh("mount", &[&dev, &at.display().to_string()]) {
            let _ = sh("losetup", &["-d", &dev]);
            return Err(e);
        }
        self.mounts.push((at.to_path_buf(), dev));
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        while let Some((at, dev)) = self.mounts.pop() {
            let fz = FsFreezeWriter::new(
                "bench",
                FsFreezeConfig {
                    mountpoint: at.clone(),
                    state_dir: self.dir.join("state"),
                },
            );
            let _ = fz.thaw_blocking();
            if sh("umount", &[&at.display().to_string()]).is_err() {
                let _ = sh("umount", &["-l", &at.display().to_string()]);
            }
            let _ = sh("losetup", &["-d", &dev]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {prog} (installed?)"))?;
    if !out.status.success() {
        bail!(
            "{prog} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn run(data_dir: &Path, a: Args) -> anyhow::Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("recman bench freeze needs root (loop devices, mount, FIFREEZE)");
    }
    let jobs = a.jobs.max(1);
    std::fs::create_dir_all(data_dir)?;
    let dir = std::fs::canonicalize(data_dir)?.join(format!("bench-freeze-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut stack = Stack {
        dir: dir.clone(),
        mounts: Vec::new(),
    };
    let btrfs = dir.join("btrfs");
    stack.mount(&dir.join("btrfs.img"), 1024, &["mkfs.btrfs", "-q", "-f"], &btrfs)?;
    let vol = btrfs.join("vol");
    sh(
        "btrfs",
        &["-q", "subvolume", "create", &vol.display().to_string()],
    )?;
    let app = dir.join("app");
    stack.mount(&vol.join("app.img"), 64, &["mkfs.ext4", "-q", "-F"], &app)?;
    let snaps = btrfs.join("snaps");
    std::fs::create_dir_all(&snaps)?;
    std::fs::write(app.join("data"), vec![7u8; 1 << 20])?;

    // recman: the same through the engine, its durable log and the worker.
    let cfg_text = format!(
        "[[target]]\nid = \"bench\"\nfreeze_limit = \"10s\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"{}\"\nstate_dir = \"{}\"\n\
         [target.provider]\ntype = \"btrfs\"\nsubvolume = \"{}\"\ndest = \"{}\"\n",
        app.display(),
        dir.join("state").display(),
        vol.display(),
        snaps.display()
    );
    let config = Config::from_str(&cfg_text, dir.join("bench.toml"))?;
    let engine = Engine::builder(&config)
        .log(log::open(Backend::Redb, &dir.join("log"))?)
        .worker(match a.host_state {
            HostState::Disk => {
                Worker::from_config(WorkerId::from("bench"), &config).with_state_dir(dir.join("worker-state"))
            }
            HostState::Memory => Worker::from_config(WorkerId::from("bench"), &config),
        })
        .start()
        .await?;
    // Bare: FIFREEZE, snapshot ioctl, FITHAW; window = freeze return → thaw
    // return, as recman measures it. Interleaved with the jobs, so both see
    // the same filesystem state (btrfs commits, page cache).
    let fz = FsFreezeWriter::new(
        "bench",
        FsFreezeConfig {
            mountpoint: app.clone(),
            state_dir: dir.join("bare-state"),
        },
    );
    let ctx = StepCtx {
        target: TargetId::from("bench"),
        job: recman_events::JobId::new_v7(),
        attempt: 1,
        kind: recman_events::SnapshotKind::Full,
    };
    let mut bare = Vec::with_capacity(jobs);
    let mut windows = Vec::with_capacity(jobs);
    let mut added = Vec::with_capacity(jobs);
    let mut job_ms = Vec::with_capacity(jobs);
    let mut failed = 0;
    for i in 0..jobs {
        let (fz2, vol2, snaps2, ctx2) = (fz.clone(), vol.clone(), snaps.clone(), ctx.clone());
        let (us, thaw_us) = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64)> {
            fz2.freeze_blocking(&ctx2)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let t = Instant::now();
            let snap = btrfs_snapshot_ioctl(&vol2, &snaps2, &format!("bare-{i}"));
            let thaw = Instant::now();
            fz2.thaw_blocking().map_err(|e| anyhow::anyhow!(e.message))?;
            let (us, thaw_us) = (t.elapsed().as_micros() as u64, thaw.elapsed().as_micros() as u64);
            snap.context("btrfs snapshot ioctl")?;
            Ok((us, thaw_us))
        })
        .await??;
        bare.push(us);
        let req = SnapshotRequest::from_json(
            format!(r#"{{"request_id":"bench-{i}","targets":["bench"]}}"#).as_bytes(),
        )?;
        let t = Instant::now();
        let (_, events) =
            match tokio::time::timeout(Duration::from_secs(60), engine.submit_and_wait(req, "bench")).await {
                Ok(r) => r?,
                Err(_) => bail!("job bench-{i} did not finish within 60 s"),
            };
        let events: Vec<EventBody> = events.into_iter().map(|e| e.event.body).collect();
        let done = events.iter().find(|e| e.is_terminal()).cloned();
        match done {
            Some(EventBody::Completed { freeze_window_us, .. }) => {
                windows.push(freeze_window_us);
                // Inside the window, the worker spent this in the provider,
                // and the thaw call about what the bare sequence's took just
                // before. (Not the thaw step's time: that includes the host
                // state's write after the thaw returned, outside the window.)
                let provider: u64 = events
                    .iter()
                    .filter_map(|e| match e {
                        EventBody::StepSucceeded {
                            stage: Stage::Snapshot,
                            duration_us,
                            ..
                        } => Some(*duration_us),
                        _ => None,
                    })
                    .sum();
                added.push(freeze_window_us.saturating_sub(provider + thaw_us));
                job_ms.push(t.elapsed().as_micros() as u64);
            }
            Some(_) => failed += 1,
            None => bail!("job bench-{i} has no end in the log"),
        }
    }
    let _ = engine.shutdown(Drain::Skip).await;
    drop(stack);

    bare.sort_unstable();
    windows.sort_unstable();
    job_ms.sort_unstable();
    added.sort_unstable();
    let (ap50, ap99) = (percentile(&added, 0.5), percentile(&added, 0.99));
    let (bp50, bp99) = (percentile(&bare, 0.5), percentile(&bare, 0.99));
    let (wp50, wp99) = (percentile(&windows, 0.5), percentile(&windows, 0.99));
    println!(
        "stack: ext4 on a loop image inside a btrfs subvolume; {jobs} bare sequences interleaved with {jobs} recman jobs; host freeze state: {}",
        a.host_state.as_str()
    );
    println!("bare FIFREEZE→snapshot ioctl→FITHAW window: p50 {bp50} µs, p99 {bp99} µs");
    println!(
        "recman freeze window (fsfreeze + btrfs, embedded bus, redb log): p50 {wp50} µs, p99 {wp99} µs; whole job p50 {} µs",
        percentile(&job_ms, 0.5)
    );
    println!(
        "added by recman inside each window (window − provider step of the job − FITHAW of the bare sequence before it): p50 {ap50} µs, p99 {ap99} µs; failed jobs: {failed}"
    );
    println!(
        "freeze_window_p50_us={wp50} freeze_window_p99_us={wp99} bare_p50_us={bp50} bare_p99_us={bp99} added_p50_us={ap50} added_p99_us={ap99} jobs={} failed={failed} host_state={}",
        windows.len(),
        a.host_state.as_str()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
