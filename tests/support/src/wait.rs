//! Waiting on a condition with a generous deadline, instead of sleeping a
//! fixed time and hoping: polls every 20 ms, returns as soon as the condition
//! holds, and panics naming what it waited for once the deadline passes. The
//! deadline only bounds a failure, so it can be long.

use std::fmt::Display;
use std::future::Future;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The default deadline: long enough for a loaded 2-core CI machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it is true; panics after `within`.
#[track_caller]
pub fn wait_until(what: impl Display, within: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, within, || cond().then_some(()))
}

/// Polls `f` until it returns a value, and returns it; panics after `within`.
#[track_caller]
pub fn wait_for<T>(what: impl Display, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`wait_for`] in async code: `f` may await, and the wait yields to the
/// runtime instead of blocking its thread.
pub async fn wait_for_async<T, F, Fut>(what: impl Display, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits up to `within` for `child` to exit; kills it (SIGKILL) and returns
/// `None` when it does not.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("waiting for a child process") {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] in async code: yields to the runtime between polls.
pub async fn wait_until_async(what: impl Display, within: Duration, mut cond: impl FnMut() -> bool) {
    wait_for_async(what, within, || std::future::ready(cond().then_some(()))).await
}
