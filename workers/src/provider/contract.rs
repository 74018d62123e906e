//! The provider contract, run against every provider that needs no root
//! or external tool here (`copy`, `none`, `exec`; `btrfs` shares `copy`'s
//! owner marker, `owner.rs`; `3par` checks its copies' base and comment in
//! `tests/tests/threepar_provider.rs`): names are checked, a snapshot is
//! idempotent, `lookup` tells absent from this attempt's from another job's
//! and from something recman did not take, a delete of a missing name is
//! `Ok(false)`.

use recman_core::worker::Existing;
use recman_events::{JobId, SnapshotKind, TargetId};

use super::{Provider, SnapshotJob};

/// `records_owner`: the provider keeps who each snapshot is for (else its
/// `lookup` says `Absent` and its `snapshot` must be idempotent by itself).
/// `plant_foreign(name)`: puts something not taken by recman under `name`
/// (`None` when the provider has no storage to plant in).
pub async fn run(p: &dyn Provider, records_owner: bool, plant_foreign: Option<&dyn Fn(&str)>) {
    let t = TargetId::from("db01");
    let a = (JobId::from_parts(7, 1), 1);
    let b = (JobId::from_parts(8, 2), 1);
    let req = |name, job| SnapshotJob {
        name,
        target: &t,
        kind: SnapshotKind::Full,
        job: Some(job),
    };
    // Bad names never reach the storage.
    assert!(p.snapshot_job(req("../x", a)).await.is_err(), "{}", p.kind());
    assert_eq!(
        p.lookup("rm-a-a1", &t).await.unwrap(),
        Existing::Absent,
        "{}",
        p.kind()
    );
    let first = p.snapshot_job(req("rm-a-a1", a)).await.unwrap();
    assert!(!first.existed, "{}", p.kind());
    let again = p.snapshot_job(req("rm-a-a1", a)).await.unwrap();
    assert_eq!(again.name, "rm-a-a1");
    let found = p.lookup("rm-a-a1", &t).await.unwrap();
    if records_owner {
        assert!(again.existed, "{}: a second snapshot was cut", p.kind());
        assert_eq!(found, Existing::Owned(a), "{}", p.kind());
    } else {
        assert_eq!(found, Existing::Absent, "{}", p.kind());
    }
    if let Some(plant) = plant_foreign {
        plant("rm-f-a1");
        assert!(
            matches!(p.lookup("rm-f-a1", &t).await.unwrap(), Existing::Foreign(_)),
            "{}: something recman did not take is not foreign",
            p.kind()
        );
    }
    if records_owner {
        assert!(p.delete("rm-a-a1", &t).await.unwrap(), "{}", p.kind());
        assert_eq!(
            p.lookup("rm-a-a1", &t).await.unwrap(),
            Existing::Absent,
            "{}",
            p.kind()
        );
        let renewed = p.snapshot_job(req("rm-a-a1", b)).await.unwrap();
        assert!(!renewed.existed);
        // The name taken again for another job: its owner says so.
        assert_eq!(
            p.lookup("rm-a-a1", &t).await.unwrap(),
            Existing::Owned(b),
            "{}",
            p.kind()
        );
        assert!(!p.delete("rm-none-a1", &t).await.unwrap(), "{}", p.kind());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::provider::{CopyProvider, ExecProvider, NoneProvider};

    #[tokio::test]
    async fn copy_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/f"), b"x").unwrap();
        let dest = dir.path().join("snaps");
        let p = CopyProvider::new(dir.path().join("src"), dest.clone());
        let plant = |name: &str| std::fs::create_dir_all(dest.join(name)).unwrap();
        run(&p, true, Some(&plant)).await;
    }

    #[tokio::test]
    async fn none_keeps_the_contract() {
        run(&NoneProvider, false, None).await;
    }

    #[tokio::test]
    async fn exec_keeps_the_contract() {
        let p = ExecProvider::new(recman_config::ExecProviderConfig {
            create: vec!["true".into()],
            delete: None,
            restore: None,
            rollback: None,
            mount: None,
            unmount: None,
            timeout: Duration::from_secs(5),
        });
        run(&p, false, None).await;
    }
}
