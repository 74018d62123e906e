//! recman-testkit: what every test crate of the workspace shares, in one place.
//!
//! - [`skip`]: the skip rule. A test whose service, tool or privilege is
//!   missing says why and returns when run by hand, and fails under `CI=true`
//!   (`tests/run` sets it).
//! - [`amqp`]: the private RabbitMQ node `tests/run` starts (its URLs, its
//!   `rabbitmqctl`, a vhost per test).
//! - [`bin`]: the `recman` binary (`RECMAN_BIN`, or the current one, built),
//!   and commands on it.
//! - [`sys`]: root, tools on the PATH, free ports, temp dirs.
//! - [`wait`]: waiting on a condition with a generous deadline, not sleeping.
//!
//! It depends on no recman crate, so any crate can take it as a
//! dev-dependency. Harnesses that need recman's crates (the embedded engine,
//! loop filesystems, the WSAPI fake, broker-backed buses) live in `tests/src`
//! (`recman-tests`).

pub mod amqp;
pub mod bin;
pub mod skip;
pub mod suite;
pub mod sys;
pub mod wait;

pub use bin::{recman, recman_bin, recman_cmd, recman_cmd_bare, text};
pub use skip::{need_env, need_root, need_tools, skip, strict};
pub use sys::{free_port, is_root, sh, temp_dir, which};
pub use wait::{wait_exit, wait_for, wait_for_async, wait_until, wait_until_async, DEADLINE};
