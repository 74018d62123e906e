//! The `none` provider: records a snapshot without copying anything (benches,
//! dry runs, writers whose freeze is the point).

use recman_events::bus::BoxFuture;
use recman_events::{SnapshotInfo, SnapshotKind, StepError, TargetId};

use super::Provider;

#[derive(Clone, Copy, Debug, Default)]
pub struct NoneProvider;

impl Provider for NoneProvider {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        target: &'a TargetId,
        _: SnapshotKind,
    ) -> BoxFuture<'a, Result<SnapshotInfo, StepError>> {
        Box::pin(async move {
            super::check_snapshot_name(name)?;
            Ok(SnapshotInfo {
                name: name.to_string(),
                provider: "none".into(),
                location: format!("none:{target}/{name}"),
                size_bytes: None,
                existed: false,
                array_expiry: None,
            })
        })
    }
    fn delete<'a>(&'a self, _: &'a str, _: &'a TargetId) -> BoxFuture<'a, Result<bool, StepError>> {
        Box::pin(async { Ok(false) })
    }
    fn list<'a>(&'a self, _: &'a TargetId) -> BoxFuture<'a, Result<Vec<String>, StepError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
