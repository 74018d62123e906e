//! `recman snapshot demo`: a demo target under the data dir (sample files plus
//! `live.log`, appended to by an in-process application that the freeze
//! really pauses), so a fresh clone can watch an application-consistent snapshot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use recman_config::Config;
use recman_events::bus::BoxFuture;
use recman_events::StepError;
use recman_workers::writer::{StepCtx, Writer};
use tokio::sync::{watch, Mutex};

/// The live application's file inside the demo source.
pub const LIVE_FILE: &str = "live.log";
/// How often the live application appends a line.
const LIVE_EVERY: Duration = Duration::from_millis(5);

/// Creates the demo source directory and a config for it.
pub fn config(data_dir: &Path) -> anyhow::Result<Config> {
    let src = data_dir.join("demo/source");
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    // Absolute paths: the config resolves relative ones against its own file's directory.
    let data_dir = &std::fs::canonicalize(data_dir)?;
    let src = data_dir.join("demo/source");
    for (name, text) in [
        (
            "README.txt",
            "Sample data of the recman demo target. live.log is appended to by\n\
                        `recman snapshot demo` while it runs; the freeze pauses it.\n",
        ),
        ("orders.csv", "id,item\n1,disk\n2,tape\n"),
    ] {
        let p = src.join(name);
        if !p.exists() {
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    let dest = data_dir.join("snapshots/demo");
    // The writer is replaced by `LiveApp` (see `snapshot.rs`); `none` keeps the
    // config valid for `recman validate-config` and tools.
    let text = format!(
        "[[target]]\nid = \"demo\"\nkeep_last = 5\nfreeze_limit = \"10s\"\n[target.writer]\ntype = \"none\"\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
        src.display(),
        dest.display()
    );
    Ok(Config::from_str(&text, data_dir.join("demo.toml"))?)
}

/// A small application: appends numbered lines to `live.log`; a freeze waits
/// until the line being written is complete and on disk, and holds further
/// writes until the thaw (as `fsfreeze` or a database backup mode would).
pub struct LiveApp {
    file: Mutex<std::fs::File>,
    path: PathBuf,
    frozen: watch::Sender<bool>,
}

impl LiveApp {
    /// Opens (appends to) `DATA_DIR/demo/source/live.log` and starts writing.
    pub fn start(data_dir: &Path) -> anyhow::Result<Arc<LiveApp>> {
        let path = data_dir.join("demo/source").join(LIVE_FILE);
        let next = match std::fs::read_to_string(&path) {
            Ok(s) => s.lines().count() as u64 + 1,
            Err(_) => 1,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let app = Arc::new(LiveApp {
            file: Mutex::new(file),
            path,
            frozen: watch::channel(false).0,
        });
        let weak = Arc::downgrade(&app);
        tokio::spawn(async move {
            let mut n = next;
            let mut tick = tokio::time::interval(LIVE_EVERY);
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { return };
                let mut thawed = app.frozen.subscribe();
                // Blocks here while frozen, as a write to a frozen filesystem would.
                if thawed.wait_for(|f| !*f).await.is_err() {
                    return;
                }
                let mut f = app.file.lock().await;
                if *app.frozen.borrow() {
                    continue;
                }
                if writeln!(f, "{n:08} the demo application was running").is_err() {
                    return;
                }
                n += 1;
            }
        });
        Ok(app)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Writer for LiveApp {
    fn kind(&self) -> &'static str {
        "demo-live-app"
    }

    fn freeze<'a>(&'a self, _ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            let f = self.file.lock().await;
            self.frozen.send_replace(true);
            f.sync_all()
                .map_err(|e| StepError::new("io", format!("fsync of {}: {e}", self.path.display()), true))
        })
    }

    fn thaw<'a>(&'a self, _ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            self.frozen.send_replace(false);
            Ok(())
        })
    }

    fn flush_logs<'a>(&'a self, _ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Checks a snapshot's copy of `live.log`: numbered from 1 without a gap, every
/// line complete. Returns the number of lines.
pub fn check_live_copy(snapshot_dir: &Path) -> Result<u64, String> {
    let p = snapshot_dir.join(LIVE_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line is cut in the middle".into());
    }
    let mut n = 0u64;
    for line in text.lines() {
        n += 1;
        let num: u64 = line
            .split(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("line {n} is damaged: {line:?}"))?;
        if num != n {
            return Err(format!("line {n} holds number {num}: a gap"));
        }
    }
    Ok(n)
}
