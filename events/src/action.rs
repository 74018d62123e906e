//! What a recovery job does with a restore point ([`RecoveryAction`]), how
//! far a restored database replays its log ([`Until`]), and the action's
//! stored form, which keeps version 1's archived layout ([`AsStored`]).

use rkyv::rancor::Fallible;
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Deserialize as _, Place, Serialize as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::JobId;

/// What a recovery job does with a restore point (`core/src/recovery.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecoveryAction {
    /// Bring the target's live data back to the restore point: stop the
    /// application, take a safety snapshot, revert, start it again.
    InPlace {
        /// A database target (`postgres` writer): replay the WAL archive
        /// past the restore point, to a time or to its end. Omitted: the
        /// restore point itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Until>,
    },
    /// Restore beside production into `path` (which must not exist yet);
    /// the live data is never touched.
    To {
        path: String,
        /// As for `in_place`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Until>,
    },
    /// Expose the restore point on a host of the target's provider pool,
    /// read-only unless `writable` (a writable mount works on a copy).
    Mount {
        #[serde(default)]
        writable: bool,
        /// Where: a worker pool of the config, else a worker id (its own
        /// queue). Default: the target's provider pool. For `3par` the name
        /// of the array's host the copy is exported to (the array pool
        /// does the work), instead of the target's `mount_host`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on: Option<String>,
    },
    /// Take away the mount that recovery job `mount` made.
    Unmount { mount: JobId },
    /// A writable, independent copy named `name`, kept until removed.
    Clone { name: String },
    /// Remove clone `name`.
    RemoveClone { name: String },
    /// Apply the target's retention rules now (`recman prune`) on a target
    /// with `require_approval`: the deletes wait for a second admin's
    /// approval, then are asked for as the automatic ones are. No restore
    /// point is named: the rules choose when it is approved.
    Prune,
}

impl RecoveryAction {
    /// `restore`, `restore_to`, `mount`, `unmount`, `clone`, `remove_clone`,
    /// `prune`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecoveryAction::InPlace { .. } => "restore",
            RecoveryAction::To { .. } => "restore_to",
            RecoveryAction::Mount { .. } => "mount",
            RecoveryAction::Unmount { .. } => "unmount",
            RecoveryAction::Clone { .. } => "clone",
            RecoveryAction::RemoveClone { .. } => "remove_clone",
            RecoveryAction::Prune => "prune",
        }
    }

    /// A mount on the provider pool.
    pub fn mount(writable: bool) -> Self {
        RecoveryAction::Mount { writable, on: None }
    }

    /// An in-place restore, to the restore point itself.
    pub fn in_place() -> Self {
        RecoveryAction::InPlace { until: None }
    }

    pub fn is_in_place(&self) -> bool {
        matches!(self, RecoveryAction::InPlace { .. })
    }

    /// How far a restore replays the log past its point, if asked.
    pub fn until(&self) -> Option<Until> {
        match self {
            RecoveryAction::InPlace { until } | RecoveryAction::To { until, .. } => *until,
            _ => None,
        }
    }
}

/// How far a database restored from a restore point replays its log
/// (PostgreSQL: the WAL archive). On the wire: `"latest"` or an RFC 3339
/// time (`"2026-11-30T10:15:00Z"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// A point in time (Unix ms): PostgreSQL's `recovery_target_time`,
    /// transactions committed at or before it are kept.
    Time(u64),
    /// The end of the archive: the point of failure.
    Latest,
}

impl std::fmt::Display for Until {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Until::Time(ms) => f.write_str(&crate::time::rfc3339(*ms)),
            Until::Latest => f.write_str("latest"),
        }
    }
}

impl std::str::FromStr for Until {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("latest") {
            return Ok(Until::Latest);
        }
        crate::time::parse_rfc3339(s)
            .map(Until::Time)
            .map_err(|e| format!("{e}, or \"latest\" for the end of the archive"))
    }
}

impl Serialize for Until {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Until {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Until {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Until".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "How far a restored database replays its WAL archive: \"latest\" (the end of the\narchive, the point of failure) or an RFC 3339 time (transactions committed at\nor before it are kept).",
            "type": "string",
            "anyOf": [
                { "const": "latest" },
                { "format": "date-time" }
            ]
        })
    }
}

/// `Until` as stored: Unix ms in two halves (4-aligned, so the stored
/// action keeps version 1's size); all ones is `Latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct StoredUntil {
    hi: u32,
    lo: u32,
}

impl From<Until> for StoredUntil {
    fn from(u: Until) -> Self {
        let v = match u {
            Until::Time(ms) => ms.min(u64::MAX - 1),
            Until::Latest => u64::MAX,
        };
        StoredUntil {
            hi: (v >> 32) as u32,
            lo: v as u32,
        }
    }
}

impl From<StoredUntil> for Until {
    fn from(s: StoredUntil) -> Self {
        match (u64::from(s.hi) << 32) | u64::from(s.lo) {
            u64::MAX => Until::Latest,
            ms => Until::Time(ms),
        }
    }
}

/// The action as the log stores it. The first six variants are version 1's
/// `RecoveryAction`, field for field (so old records read the same); new
/// shapes are appended, never larger than `To` (the layout test in
/// `model.rs` holds the size at 20 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Stored {
    InPlace,
    To { path: String },
    Mount { writable: bool },
    Unmount { mount: JobId },
    Clone { name: String },
    RemoveClone { name: String },
    // Appended: never reorder.
    InPlaceUntil { until: StoredUntil },
    ToUntil { path: String, until: StoredUntil },
    MountOn { writable: bool, on: String },
    Prune,
}

impl From<&RecoveryAction> for Stored {
    fn from(a: &RecoveryAction) -> Self {
        match a {
            RecoveryAction::InPlace { until: None } => Stored::InPlace,
            RecoveryAction::InPlace { until: Some(u) } => Stored::InPlaceUntil { until: (*u).into() },
            RecoveryAction::To { path, until: None } => Stored::To { path: path.clone() },
            RecoveryAction::To { path, until: Some(u) } => Stored::ToUntil {
                path: path.clone(),
                until: (*u).into(),
            },
            RecoveryAction::Mount { writable, on: None } => Stored::Mount { writable: *writable },
            RecoveryAction::Mount {
                writable,
                on: Some(on),
            } => Stored::MountOn {
                writable: *writable,
                on: on.clone(),
            },
            RecoveryAction::Unmount { mount } => Stored::Unmount { mount: *mount },
            RecoveryAction::Clone { name } => Stored::Clone { name: name.clone() },
            RecoveryAction::RemoveClone { name } => Stored::RemoveClone { name: name.clone() },
            RecoveryAction::Prune => Stored::Prune,
        }
    }
}

impl From<Stored> for RecoveryAction {
    fn from(s: Stored) -> Self {
        match s {
            Stored::InPlace => RecoveryAction::InPlace { until: None },
            Stored::InPlaceUntil { until } => RecoveryAction::InPlace {
                until: Some(until.into()),
            },
            Stored::To { path } => RecoveryAction::To { path, until: None },
            Stored::ToUntil { path, until } => RecoveryAction::To {
                path,
                until: Some(until.into()),
            },
            Stored::Mount { writable } => RecoveryAction::Mount { writable, on: None },
            Stored::MountOn { writable, on } => RecoveryAction::Mount {
                writable,
                on: Some(on),
            },
            Stored::Unmount { mount } => RecoveryAction::Unmount { mount },
            Stored::Clone { name } => RecoveryAction::Clone { name },
            Stored::RemoveClone { name } => RecoveryAction::RemoveClone { name },
            Stored::Prune => RecoveryAction::Prune,
        }
    }
}

/// `#[rkyv(with = AsStored)]`: archives a [`RecoveryAction`] as [`Stored`].
pub struct AsStored;

impl ArchiveWith<RecoveryAction> for AsStored {
    type Archived = ArchivedStored;
    type Resolver = StoredResolver;

    fn resolve_with(field: &RecoveryAction, resolver: Self::Resolver, out: Place<Self::Archived>) {
        // The resolver holds positions only; a copy resolves the same.
        Stored::from(field).resolve(resolver, out);
    }
}

impl<S: Fallible + rkyv::ser::Writer + ?Sized> SerializeWith<RecoveryAction, S> for AsStored
where
    Stored: rkyv::Serialize<S>,
{
    fn serialize_with(field: &RecoveryAction, s: &mut S) -> Result<Self::Resolver, S::Error> {
        Stored::from(field).serialize(s)
    }
}

impl<D: Fallible + ?Sized> DeserializeWith<ArchivedStored, RecoveryAction, D> for AsStored
where
    ArchivedStored: rkyv::Deserialize<Stored, D>,
{
    fn deserialize_with(field: &ArchivedStored, d: &mut D) -> Result<RecoveryAction, D::Error> {
        Ok(field.deserialize(d)?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_reads_latest_and_times_and_says_what_it_wants() {
        assert_eq!("latest".parse::<Until>(), Ok(Until::Latest));
        assert_eq!(
            "2000-03-01T00:00:00Z".parse::<Until>(),
            Ok(Until::Time(951_868_800_000))
        );
        let e = "yesterday".parse::<Until>().unwrap_err();
        assert!(e.contains("latest"), "{e}");
        let a: RecoveryAction =
            serde_json::from_str(r#"{"type":"to","path":"/x","until":"2000-03-01T00:00:00.5Z"}"#).unwrap();
        assert_eq!(a.until(), Some(Until::Time(951_868_800_500)));
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"type":"to","path":"/x","until":"2000-03-01T00:00:00.500Z"}"#
        );
        // Version 1's body, and its unit variant, still read.
        let old: RecoveryAction = serde_json::from_str(r#"{"type":"in_place"}"#).unwrap();
        assert_eq!(old, RecoveryAction::in_place());
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"type":"in_place"}"#);
    }

    #[test]
    fn every_action_survives_its_stored_form() {
        let all = [
            RecoveryAction::in_place(),
            RecoveryAction::InPlace {
                until: Some(Until::Latest),
            },
            RecoveryAction::InPlace {
                until: Some(Until::Time(1_795_650_300_123)),
            },
            RecoveryAction::To {
                path: "/restore/here".into(),
                until: None,
            },
            RecoveryAction::To {
                path: "/restore/here".into(),
                until: Some(Until::Time(0)),
            },
            RecoveryAction::mount(true),
            RecoveryAction::Mount {
                writable: false,
                on: Some("host.b".into()),
            },
            RecoveryAction::Unmount {
                mount: JobId::new_v7(),
            },
            RecoveryAction::Clone { name: "c".into() },
            RecoveryAction::RemoveClone { name: "c".into() },
        ];
        for a in all {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&Stored::from(&a)).unwrap();
            let back = rkyv::from_bytes::<Stored, rkyv::rancor::Error>(&bytes).unwrap();
            assert_eq!(RecoveryAction::from(back), a);
        }
    }
}
