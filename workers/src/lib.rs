//! recman-workers: the worker runtime, its writers (quiesce an application)
//! and providers (take the point-in-time copy), and the freeze watchdog.
//! The config they read is `recman-config`'s.

pub mod check;
pub mod exec;
pub(crate) mod pgserver;
pub mod provider;
pub mod runtime;
pub mod verify;
pub mod watchdog;
pub mod writer;

pub use provider::Provider;
pub use runtime::{Worker, WorkerError};
pub use writer::{StepCtx, Writer};

/// Runs a writer's or provider's blocking system calls off the async threads;
/// a panic in them becomes a retryable `internal` error naming `kind`.
pub(crate) async fn blocking<T: Send + 'static>(
    kind: &'static str,
    f: impl FnOnce() -> Result<T, recman_events::StepError> + Send + 'static,
) -> Result<T, recman_events::StepError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(recman_events::StepError::new(
            "internal",
            format!("{kind} task failed: {e}"),
            true,
        ))
    })
}
