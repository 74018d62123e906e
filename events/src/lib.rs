//! recman-events: the backbone shared by the engine, the workers and other
//! systems: ids, the event model, wire messages and their codecs, the event log.
//!
//! The event log (`log`, `audit`) and the bus (`bus`) are behind the default
//! features of the same names; without them the crate is plain data (no tokio,
//! no store), which is what the pure `recman-core` uses.

pub mod action;
#[cfg(feature = "log")]
pub mod audit;
#[cfg(feature = "bus")]
pub mod bus;
pub mod clock;
pub mod codec;
pub mod export;
pub mod ids;
#[cfg(feature = "log")]
pub mod log;
pub mod model;
pub mod schema;
pub mod time;
pub mod wire;

#[cfg(feature = "bus")]
pub use bus::{Address, Bus, BusError, Consumer, Delivery, MemoryBus, Message};
pub use ids::{legacy_snapshot_name, snapshot_name, JobId, PoolName, RequestId, TargetId, WorkerId};
#[cfg(feature = "log")]
pub use log::{Backend, EventLog, LogError};
pub use model::{
    ArrayExpiry, Event, EventBody, LiveData, PruneFailure, RecoveryAction, SnapshotInfo, SnapshotKind, Stage,
    StepDetail, StepError, StoredEvent, Until,
};
pub use wire::{
    CancelRequest, Command, EventMessage, Outcome, RecoveryArgs, RecoveryRequest, Report, Request,
    SnapshotRequest, WireError, SCHEMA_VERSION,
};
