//! recman-events: the backbone shared by the engine, the workers and other
//! systems: ids, the event model, wire messages and their codecs, the event log.

pub mod audit;
pub mod bus;
pub mod clock;
pub mod codec;
pub mod ids;
pub mod log;
pub mod model;
pub mod schema;
pub mod wire;

pub use bus::{Address, Bus, BusError, Consumer, Delivery, MemoryBus, Message};
pub use ids::{snapshot_name, JobId, PoolName, RequestId, TargetId, WorkerId};
pub use log::{Backend, EventLog, LogError};
pub use model::{Event, EventBody, SnapshotInfo, SnapshotKind, Stage, StepDetail, StepError, StoredEvent};
pub use wire::{Command, EventMessage, Outcome, Report, SnapshotRequest, WireError, SCHEMA_VERSION};
