//! Workspace-level integration tests live in tests/tests/; this library holds
//! the harnesses they share that need recman's own crates, one module each
//! (the generic helpers every test crate shares are in `tests/support`,
//! `recman-testkit`):
//!
//! - `cli`: a real `recman up`, bare HTTP, the CLI and API tests' config;
//! - `amqp`: buses on a test's vhost, `recman` processes, the broker tests' config;
//! - `cluster`: the three-node RabbitMQ cluster, a vhost on it, faults on its nodes;
//! - `linux`: loop filesystems, the numbered writer, the embedded engine;
//! - `postgres`: a private PostgreSQL 15 cluster, roles, restores of snapshots;
//! - `threepar`: a fake 3PAR array and the config that reaches it;
//! - `wsapi_fake`: the fake itself (only for what cannot exist on a test machine).

pub mod amqp;
pub mod cli;
pub mod cluster;
pub mod linux;
pub mod postgres;
pub mod threepar;
pub mod wsapi_fake;
