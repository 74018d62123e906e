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
    /// The job of facts about no job (schedule and RPO events): the nil UUID.
    pub const NONE: JobId = JobId(uuid::Uuid::nil());

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

    /// The `n`th id of a batch made from this fresh one (`n` = 0: itself):
    /// its random low bits xor `n`, still a v7 id of the same time.
    pub fn nth(&self, n: u32) -> Self {
        JobId(uuid::Uuid::from_u128(self.0.as_u128() ^ u128::from(n)))
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

/// The deterministic name of the snapshot taken by one attempt of one job:
/// `rm-<20 characters>-a<attempt>`, 26 characters up to attempt 9, at most 28
/// up to attempt 999, so 3PAR's 31-character limit leaves room for the `-N`
/// of a volume set's members. A redelivered command computes the same name,
/// finds the snapshot already there and reports it instead of taking a
/// second one (invariant 3).
///
/// The 20 characters are base32 (Crockford, lowercase, so names sort by
/// time) of 100 bits of the job id: its 48-bit millisecond timestamp and its
/// last 52 bits (in a v7 id, the low 20 bits of the per-millisecond counter
/// and 32 random bits). Two jobs share a name only when created in the same
/// millisecond with the same 52 bits: for a fleet taking ten million
/// snapshots a year, about 1e-12 expected collisions a year. (Names of
/// earlier builds, `rm-<16 hex>-a<attempt>`, carried 32 bits of time that
/// wrap every 49 days and 32 random bits; they stay valid names, recorded in
/// old events and pruned as such.)
pub fn snapshot_name(job: JobId, attempt: u32) -> String {
    let id = job.0.as_u128();
    let bits = ((id >> 80) << 52) | (id & ((1u128 << 52) - 1));
    let mut out = String::with_capacity(28);
    out.push_str("rm-");
    for i in (0..20).rev() {
        out.push(BASE32[((bits >> (5 * i)) & 31) as usize] as char);
    }
    out.push_str("-a");
    out.push_str(&attempt.to_string());
    out
}

/// The snapshot name of earlier builds (`rm-<16 hex>-a<attempt>`: 32 bits
/// of time, 32 random bits), kept for the simulator's self-test (a core
/// that still uses it must be caught) and for reading old logs' names.
pub fn legacy_snapshot_name(job: JobId, attempt: u32) -> String {
    let hex = job.0.simple().to_string();
    format!("rm-{}{}-a{}", &hex[4..12], &hex[24..32], attempt)
}

/// Crockford's base32 alphabet, lowercase (no i, l, o, u): digits sort
/// before letters, so names sort like the numbers they encode.
const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

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
        assert_eq!(snapshot_name(a, 1).len(), 26, "{}", snapshot_name(a, 1));
        assert!(snapshot_name(a, 999).len() <= 28, "{}", snapshot_name(a, 999));
        assert!(snapshot_name(a, 1)
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn snapshot_names_sort_by_time_and_carry_the_last_52_bits() {
        let early = JobId::from_parts(1_700_000_000_000, u64::MAX as u128);
        let late = JobId::from_parts(1_700_000_000_001, 0);
        assert!(snapshot_name(early, 1) < snapshot_name(late, 1));
        // Ids that differ only in bit 51 or only in bit 0 get different names.
        let base = JobId::from_parts(1_700_000_000_000, 0);
        for bit in [0u32, 31, 51] {
            let other = JobId(uuid::Uuid::from_u128(base.as_u128() ^ (1u128 << bit)));
            assert_ne!(snapshot_name(base, 1), snapshot_name(other, 1), "bit {bit}");
        }
    }

    /// The defect of the old names (issue 12): jobs created in one
    /// millisecond shared all their time bits, so 200 000 of them had about
    /// 4.6 expected collisions among 32 random bits. The same jobs with
    /// today's names: none.
    #[test]
    fn jobs_of_one_millisecond_get_distinct_names() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut seen = std::collections::HashSet::new();
        let mut legacy = std::collections::HashSet::new();
        for _ in 0..200_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let job = JobId::from_parts(1_750_000_000_000, rng as u128);
            assert!(seen.insert(snapshot_name(job, 1)), "collision");
            legacy.insert(legacy_snapshot_name(job, 1));
        }
        assert!(
            legacy.len() < 200_000,
            "the legacy name keeps only 32 random bits"
        );
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
