//! Retention of what the `postgres` writer leaves beside a snapshot: the
//! label directory of each pruned snapshot goes with it, and with
//! `prune_wal = true` archived WAL older than the oldest kept restore point
//! needs is removed from `wal_archive` (pgBackRest's `expire`, with
//! pg_archivecleanup's rule of what is older; see `wal.rs`).
//!
//! "Kept restore points" are the label directories left whose snapshot the
//! provider still lists (all of them when it cannot list): a label of an
//! attempt that never got its snapshot holds no WAL back, and a snapshot
//! taken while this runs is newer than every kept one, so it needs nothing
//! removed here. With no kept labelled restore point nothing is removed.

use std::fs;
use std::io;
use std::path::Path;

use recman_config::PostgresConfig;
use recman_events::StepError;

use super::wal;

/// What one prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Label directories removed (snapshot names).
    pub labels: Vec<String>,
    /// The start segment of the oldest kept restore point, when WAL was pruned.
    pub oldest_needed: Option<String>,
    /// Archived files removed.
    pub wal_files: usize,
}

fn io_err(what: &str, p: &Path, e: io::Error) -> StepError {
    StepError::new("io_error", format!("{what} {}: {e}", p.display()), true)
}

/// After the provider deleted `deleted`: removes their label directories,
/// then (with `prune_wal`) the archived WAL no kept restore point needs.
/// `listed`: the snapshots the provider still holds (`None`: unknown).
pub fn after_prune(
    cfg: &PostgresConfig,
    deleted: &[String],
    listed: Option<&[String]>,
) -> Result<Pruned, StepError> {
    let mut out = Pruned::default();
    for name in deleted {
        // A snapshot name is one path component (never `..` or a slash).
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            continue;
        }
        let dir = cfg.label_dir.join(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => out.labels.push(name.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing the label directory", &dir, e)),
        }
    }
    let Some(archive) = cfg.wal_archive.as_deref().filter(|_| cfg.prune_wal) else {
        return Ok(out);
    };
    let Some(oldest) = oldest_kept_start(&cfg.label_dir, listed)? else {
        tracing::info!(label_dir = %cfg.label_dir.display(), "no kept restore point has a backup_label: no WAL pruned");
        return Ok(out);
    };
    let entries = fs::read_dir(archive).map_err(|e| io_err("listing the WAL archive", archive, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing the WAL archive", archive, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !wal::prunable(name, &oldest) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => out.wal_files += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing archived WAL", &entry.path(), e)),
        }
    }
    if out.wal_files > 0 {
        fs::File::open(archive)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("syncing", archive, e))?;
    }
    out.oldest_needed = Some(oldest);
    Ok(out)
}

/// The start segment of the oldest kept restore point in `label_dir`
/// (`None`: there is none). A label that cannot be read stops the prune:
/// better keep WAL than lose what a restore point needs.
pub fn oldest_kept_start(label_dir: &Path, listed: Option<&[String]>) -> Result<Option<String>, StepError> {
    let entries = match fs::read_dir(label_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("listing", label_dir, e)),
    };
    let mut oldest: Option<String> = None;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing", label_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || listed.is_some_and(|l| !l.contains(&name)) {
            continue;
        }
        let path = entry.path().join("backup_label");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("reading", &path, e)),
        };
        let start = wal::label_start_segment(&text).ok_or_else(|| {
            StepError::new(
                "invalid_label",
                format!("{}: no START WAL LOCATION: WAL not pruned", path.display()),
                false,
            )
        })?;
        if oldest.as_deref().is_none_or(|o| !wal::at_or_after(&start, o)) {
            oldest = Some(start);
        }
    }
    Ok(oldest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg(dir: &Path, prune_wal: bool) -> PostgresConfig {
        PostgresConfig {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            dbname: "postgres".into(),
            password_file: None,
            label_dir: dir.join("labels"),
            label_dir_is_default: false,
            wait_for_archive: true,
            fsfreeze: None,
            timeout: std::time::Duration::from_secs(60),
            wal_archive: Some(dir.join("archive")),
            prune_wal,
            stop: None,
            start: None,
            data_directory: None,
            config_file: None,
            bin_dir: PathBuf::from(recman_config::DEFAULT_PG_BIN_DIR),
        }
    }

    fn label(dir: &Path, name: &str, seg: &str) {
        let d = dir.join("labels").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("backup_label"),
            format!("START WAL LOCATION: 0/1 (file {seg})\nLABEL: x\n"),
        )
        .unwrap();
    }

    fn archive(dir: &Path, names: &[&str]) -> PathBuf {
        let a = dir.join("archive");
        fs::create_dir_all(&a).unwrap();
        for n in names {
            fs::write(a.join(n), b"wal").unwrap();
        }
        a
    }

    fn left(a: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(a)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    const S3: &str = "000000010000000000000003";
    const S4: &str = "000000010000000000000004";
    const S5: &str = "000000010000000000000005";
    const S6: &str = "000000010000000000000006";

    #[test]
    fn labels_go_with_their_snapshot_and_wal_before_the_oldest_kept_start_goes() {
        let t = tempfile::tempdir().unwrap();
        label(t.path(), "old", S3);
        label(t.path(), "mid", S5);
        label(t.path(), "new", S6);
        let a = archive(
            t.path(),
            &[
                S3,
                "000000010000000000000003.00000028.backup",
                S4,
                S5,
                "000000010000000000000005.00000028.backup",
                S6,
                "00000001.history",
            ],
        );
        let listed = ["mid".to_string(), "new".to_string()];
        let p = after_prune(&cfg(t.path(), true), &["old".into()], Some(&listed)).unwrap();
        assert_eq!(p.labels, ["old"]);
        assert_eq!(p.oldest_needed.as_deref(), Some(S5));
        assert_eq!(p.wal_files, 3);
        assert!(!t.path().join("labels/old").exists());
        assert_eq!(
            left(&a),
            [
                "00000001.history",
                S5,
                "000000010000000000000005.00000028.backup",
                S6
            ]
        );
        // Again (a redelivered prune): nothing more.
        let p = after_prune(&cfg(t.path(), true), &["old".into()], Some(&listed)).unwrap();
        assert_eq!((p.labels.len(), p.wal_files), (0, 0));
    }

    #[test]
    fn without_prune_wal_or_a_kept_label_the_archive_is_untouched() {
        let t = tempfile::tempdir().unwrap();
        label(t.path(), "old", S3);
        label(t.path(), "orphan", S3);
        label(t.path(), "new", S5);
        let a = archive(t.path(), &[S3, S4, S5]);
        let p = after_prune(&cfg(t.path(), false), &["old".into()], None).unwrap();
        assert_eq!((p.labels.len(), p.wal_files), (1, 0));
        assert_eq!(left(&a).len(), 3);
        // The provider lists nothing with a label: nothing is known to be needed, nothing removed.
        let p = after_prune(&cfg(t.path(), true), &[], Some(&[])).unwrap();
        assert_eq!((p.wal_files, p.oldest_needed), (0, None));
        // An orphan label (no snapshot listed) does not hold WAL back; unknown listing: every label does.
        let listed = ["new".to_string()];
        assert_eq!(
            oldest_kept_start(&t.path().join("labels"), Some(&listed))
                .unwrap()
                .as_deref(),
            Some(S5)
        );
        assert_eq!(
            oldest_kept_start(&t.path().join("labels"), None)
                .unwrap()
                .as_deref(),
            Some(S3)
        );
    }

    #[test]
    fn an_unreadable_label_stops_the_wal_prune() {
        let t = tempfile::tempdir().unwrap();
        label(t.path(), "new", S5);
        fs::create_dir_all(t.path().join("labels/bad")).unwrap();
        fs::write(t.path().join("labels/bad/backup_label"), "garbage").unwrap();
        let a = archive(t.path(), &[S3, S5]);
        let e = after_prune(&cfg(t.path(), true), &[], None).unwrap_err();
        assert!(e.message.contains("START WAL LOCATION"), "{e:?}");
        assert_eq!(left(&a).len(), 2);
    }
}
