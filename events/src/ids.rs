//! Identifiers shared by the engine, the workers and other systems on the bus.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One job: a snapshot request for one target or one consistency group.
/// UUID v7, so ids sort by creation time.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(transparent)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct JobId(pub uuid::Uuid);

impl JobId {
    /// A fresh time-ordered id.
    pub fn new_v7() -> Self {
        JobId(uuid::Uuid::now_v7())
    }

    /// A deterministic v7-shaped id from a timestamp and random bits, for the
    /// sans-IO core and the simulator (no clock, no OS randomness).
    pub fn from_parts(unix_ms: u64, rand: u128) -> Self {
        let rand_bytes = rand.to_be_bytes();
        let mut r = [0u8; 10];
        r.copy_from_slice(&rand_bytes[6..16]);
        JobId(uuid::Builder::from_unix_timestamp_millis(unix_ms, &r).into_uuid())
    }

    /// The last 8 hex digits (random in a v7 id; the first ones are the
    /// timestamp and repeat for jobs created together), to tell jobs apart on a screen.
    pub fn short(&self) -> String {
        self.0.simple().to_string()[24..].to_string()
    }

    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(JobId(s.parse()?))
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
            Serialize, Deserialize, JsonSchema,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[serde(transparent)]
        #[rkyv(derive(Debug, PartialEq, Eq))]
        pub struct $name(#[schemars(regex(pattern = r"^[A-Za-z0-9._:@-]{1,128}$"))] pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    };
}

string_id!(
    /// The sender's idempotency key: the same request id always means the same job.
    RequestId
);
string_id!(
    /// One protected dataset on one host, as declared in config.
    TargetId
);
string_id!(
    /// A named set of interchangeable workers: `host.<name>` or `array.<name>`.
    PoolName
);
string_id!(
    /// One worker process; thaws are routed back to the worker that froze.
    WorkerId
);

/// The deterministic name of the snapshot taken by one attempt of one job.
/// A redelivered command computes the same name, finds the snapshot already
/// there and reports success instead of taking a second one (invariant 3).
/// 24 characters: fits 3PAR's 31-character limit with room for a `-N` suffix.
pub fn snapshot_name(job: JobId, attempt: u32) -> String {
    let hex = job.0.simple().to_string();
    // The last 16 hex digits of a v7 uuid are random; the first 12 are time.
    format!("rm-{}{}-a{}", &hex[4..12], &hex[24..32], attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_deterministic_short_and_distinct() {
        let a = JobId::from_parts(1_700_000_000_000, 42);
        let b = JobId::from_parts(1_700_000_000_000, 43);
        assert_eq!(snapshot_name(a, 1), snapshot_name(a, 1));
        assert_ne!(snapshot_name(a, 1), snapshot_name(a, 2));
        assert_ne!(snapshot_name(a, 1), snapshot_name(b, 1));
        assert!(snapshot_name(a, 999).len() <= 28, "{}", snapshot_name(a, 999));
    }

    #[test]
    fn short_ids_differ_for_jobs_created_in_the_same_millisecond() {
        let a = JobId::from_parts(1_700_000_000_000, 1);
        let b = JobId::from_parts(1_700_000_000_000, 2);
        assert_ne!(a.short(), b.short());
        assert_eq!(a.short().len(), 8);
    }

    #[test]
    fn job_ids_from_parts_are_v7_and_ordered_by_time() {
        let a = JobId::from_parts(1_000, 7);
        let b = JobId::from_parts(2_000, 1);
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b);
    }
}
