//! recman-workers: the config shared with the engine, the worker runtime, its
//! writers (quiesce an application) and providers (take the point-in-time copy),
//! and the freeze watchdog.

pub mod config;
pub mod exec;
pub mod provider;
pub mod runtime;
pub mod watchdog;
pub mod writer;

pub use config::{Config, ConfigError, TargetConfig};
pub use provider::Provider;
pub use runtime::{Worker, WorkerError};
pub use writer::{StepCtx, Writer};
