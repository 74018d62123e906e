//! The data dir and config file a command works on, and the one way to load
//! that config: `--config`, else `DATA_DIR/recman.toml`, else what the
//! command accepts instead ([`Missing`]).

use std::path::PathBuf;

use anyhow::{bail, Context};
use recman_config::Config;

use crate::demo;

/// Options every subcommand takes: where a command keeps its log and finds
/// its config (`--data-dir`, `--config`).
#[derive(Debug, Clone, clap::Args)]
pub struct Home {
    /// Where recman keeps its event log and local state.
    #[arg(long, global = true, env = "RECMAN_DATA_DIR", default_value = "./recman-data")]
    pub data_dir: PathBuf,
    /// Config file with targets (default: DATA_DIR/recman.toml when it exists).
    #[arg(long, short = 'c', global = true, env = "RECMAN_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// The config file: `--config`, else `DATA_DIR/recman.toml` (may not exist).
    pub fn config_file(&self) -> PathBuf {
        recman_config::path_in(&self.data_dir, self.config.as_deref())
    }

    /// Loads the config; errors name file, line and key.
    pub fn load_config(&self, missing: Missing) -> anyhow::Result<Config> {
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
}
