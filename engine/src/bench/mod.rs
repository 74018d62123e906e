//! The benchmarks (`recman bench log|jobs|freeze|failover|startup`): each prints its figure
//! and a baseline measured in the same run, the last line as key=value pairs
//! for scripts. Figures and how to read them: BENCHMARKS.md.
//!
//! `log`: durable appends and a checked replay against raw `fdatasync`;
//! `jobs`: whole jobs through the engine handle (`closed_loop`), in-process
//! or over RabbitMQ (`amqp`, against the broker's own speed, `baseline`);
//! `freeze`: freeze windows of real `fsfreeze` + `btrfs` jobs against the
//! bare ioctls; `failover`: takeovers of a standby engine on a PostgreSQL
//! log against the database's own round trip; `startup`: start-up from a
//! checkpoint and the log's tail against a full replay. `measure` holds the percentiles, the disk baseline and the
//! report of the jobs runs.

pub mod amqp;
pub mod baseline;
pub mod closed_loop;
pub mod failover;
pub mod freeze;
pub mod jobs;
pub mod log;
pub mod measure;
pub mod startup;
