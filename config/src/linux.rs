//! Config of the Linux writers and providers (`fsfreeze`, `postgres`,
//! `btrfs`, `qcow2`): their types and parse helpers, in the style of lib.rs.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use recman_events::{PoolName, TargetId};
use toml::de::DeTable;

use super::{field, join, ConfigError, Cx, DEFAULT_PROVIDER_TIMEOUT};

/// Where the `fsfreeze` writer keeps its freeze markers by default (tmpfs:
/// never on a filesystem it freezes, and gone after a reboot, like the freeze).
pub const DEFAULT_STATE_DIR: &str = "/run/recman";

/// `type = "fsfreeze"`.
#[derive(Clone, Debug, PartialEq)]
pub struct FsFreezeConfig {
    /// The mountpoint whose filesystem is frozen (absolute, must be a mount).
    pub mountpoint: PathBuf,
    /// Holds `fsfreeze/<target>.json` while frozen (default `/run/recman`).
    pub state_dir: PathBuf,
}

/// `type = "btrfs"`.
#[derive(Clone, Debug, PartialEq)]
pub struct BtrfsConfig {
    /// The subvolume to snapshot.
    pub subvolume: PathBuf,
    /// Directory on the same btrfs filesystem: one read-only snapshot per name.
    pub dest: PathBuf,
}

/// `type = "qcow2"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Qcow2Config {
    /// The qcow2 image file (internal snapshots live inside it).
    pub image: PathBuf,
    /// The `qemu-img` program (default `qemu-img`, looked up in PATH).
    pub qemu_img: String,
    pub timeout: Duration,
}

impl Cx<'_> {
    pub(super) fn fsfreeze_writer(
        &self,
        w: &DeTable<'_>,
        span: Range<usize>,
        wkey: &str,
    ) -> Result<FsFreezeConfig, ConfigError> {
        self.check_keys(w, wkey, &["type", "mountpoint", "state_dir"])?;
        let mountpoint = self.required(
            self.path(w, wkey, "mountpoint")?,
            span.clone(),
            wkey,
            "mountpoint",
        )?;
        let state_dir = self
            .path(w, wkey, "state_dir")?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if state_dir.starts_with(&mountpoint) {
            let s = field(w, "state_dir").map(|v| v.span()).unwrap_or(span);
            return Err(self.err(
                s,
                &join(wkey, "state_dir"),
                format!(
                    "{} is on the filesystem this writer freezes: the freeze marker could not be removed while frozen",
                    state_dir.display()
                ),
            ));
        }
        Ok(FsFreezeConfig {
            mountpoint,
            state_dir,
        })
    }

    pub(super) fn btrfs_provider(
        &self,
        p: &DeTable<'_>,
        span: Range<usize>,
        pkey: &str,
    ) -> Result<BtrfsConfig, ConfigError> {
        self.check_keys(p, pkey, &["type", "subvolume", "dest"])?;
        let subvolume = self.required(self.path(p, pkey, "subvolume")?, span.clone(), pkey, "subvolume")?;
        let dest = self.required(self.path(p, pkey, "dest")?, span.clone(), pkey, "dest")?;
        if dest.starts_with(&subvolume) {
            let s = field(p, "dest").map(|v| v.span()).unwrap_or(span);
            return Err(self.err(
                s,
                &join(pkey, "dest"),
                format!(
                    "{} is inside the subvolume {}: put snapshots beside it (btrfs snapshots are not recursive)",
                    dest.display(),
                    subvolume.display()
                ),
            ));
        }
        Ok(BtrfsConfig { subvolume, dest })
    }

    pub(super) fn qcow2_provider(
        &self,
        p: &DeTable<'_>,
        span: Range<usize>,
        pkey: &str,
    ) -> Result<Qcow2Config, ConfigError> {
        self.check_keys(p, pkey, &["type", "image", "qemu_img", "timeout"])?;
        let image = self.required(self.path(p, pkey, "image")?, span, pkey, "image")?;
        let qemu_img = match self.string(p, pkey, "qemu_img")? {
            None => "qemu-img".to_string(),
            Some((s, sp)) if s.is_empty() => {
                return Err(self.err(sp, &join(pkey, "qemu_img"), "must not be empty"))
            }
            Some((s, _)) => s,
        };
        let timeout = self
            .duration(p, pkey, "timeout")?
            .unwrap_or(DEFAULT_PROVIDER_TIMEOUT);
        Ok(Qcow2Config {
            image,
            qemu_img,
            timeout,
        })
    }

    /// A btrfs snapshot cannot be taken of a frozen btrfs filesystem (it
    /// waits for the thaw, which waits for the snapshot): refuse the pair.
    pub(super) fn check_freeze_vs_btrfs(
        &self,
        fz: &FsFreezeConfig,
        b: &BtrfsConfig,
        span: Range<usize>,
        wkey: &str,
    ) -> Result<(), ConfigError> {
        if b.subvolume.starts_with(&fz.mountpoint) || b.dest.starts_with(&fz.mountpoint) {
            return Err(self.err(
                span,
                &join(wkey, "type"),
                format!(
                    "fsfreeze of {} with a btrfs snapshot on that filesystem would deadlock (btrfs waits for the thaw to take a snapshot); a btrfs snapshot is atomic by itself: use writer \"none\", or \"postgres\" for a database",
                    fz.mountpoint.display()
                ),
            ));
        }
        Ok(())
    }
}

/// Default per-statement timeout of the `postgres` writer.
pub const DEFAULT_PG_TIMEOUT: Duration = Duration::from_secs(60);

/// `type = "postgres"` (PostgreSQL ≥ 15), optionally combined with a
/// `fsfreeze` of the filesystem that holds the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct PostgresConfig {
    /// Host name, IP, or a Unix socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    /// File holding the password (first line); none = no password.
    pub password_file: Option<PathBuf>,
    /// Where `<snapshot name>/backup_label` (and `tablespace_map`) go.
    pub label_dir: PathBuf,
    /// True when `label_dir` came from the default (`<data_dir>/backup_labels/<target>`).
    pub label_dir_is_default: bool,
    /// `pg_backup_stop(wait_for_archive)` and, after `pg_switch_wal()`,
    /// wait until the segment is archived.
    pub wait_for_archive: bool,
    /// Also freeze this mountpoint after `pg_backup_start` (thawed first).
    pub fsfreeze: Option<FsFreezeConfig>,
    /// Bounds each step (freeze, thaw, flush-logs); the engine's stage
    /// deadline follows it.
    pub timeout: Duration,
    /// The WAL archive (the directory `archive_command` copies into), for
    /// `recman check` and, with `prune_wal`, retention.
    pub wal_archive: Option<PathBuf>,
    /// Retention also removes archived WAL older than the oldest kept restore
    /// point needs (only set this when recman owns `wal_archive`).
    pub prune_wal: bool,
    /// Recovery: stops the cluster before an in-place restore (e.g.
    /// `["/usr/bin/pg_ctlcluster", "15", "main", "stop", "-m", "fast"]` or
    /// `["/usr/bin/systemctl", "stop", "postgresql@15-main"]`); must succeed
    /// when it is already stopped. Without it, `pg_ctl` on `data_directory`
    /// (as its owner); without either, in-place restores are refused.
    pub stop: Option<Vec<String>>,
    /// Recovery: starts the cluster again; must succeed when it runs.
    pub start: Option<Vec<String>>,
    /// Recovery: the cluster's data directory (inside the provider's
    /// source). With it a restore recovers the database: the restore
    /// point's `backup_label`, `recovery.signal` and a `restore_command`
    /// reading `wal_archive`, replayed by a private server (no TCP
    /// listener) to the restore point, a time or the end of the archive.
    /// Without it a restore only puts the files back.
    pub data_directory: Option<PathBuf>,
    /// Recovery: the cluster's `postgresql.conf` when it is not in the data
    /// directory (Debian: `/etc/postgresql/15/main/postgresql.conf`), so
    /// the private recovery archives the new timeline as the cluster would.
    pub config_file: Option<PathBuf>,
    /// Where `postgres` is, for that private recovery.
    pub bin_dir: PathBuf,
}

/// `<data_dir>/backup_labels/<target>`.
pub fn default_label_dir(data_dir: &std::path::Path, target: &str) -> PathBuf {
    data_dir.join("backup_labels").join(target)
}

impl Cx<'_> {
    /// An optional `true`/`false` key.
    pub(super) fn bool(&self, t: &DeTable<'_>, path: &str, key: &str) -> Result<Option<bool>, ConfigError> {
        match field(t, key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                toml::de::DeValue::Boolean(b) => Ok(Some(*b)),
                other => Err(self.err(
                    v.span(),
                    &join(path, key),
                    format!("expected true or false, found {}", other.type_str()),
                )),
            },
        }
    }

    pub(super) fn postgres_writer(
        &self,
        w: &DeTable<'_>,
        span: Range<usize>,
        wkey: &str,
        data_dir: &std::path::Path,
        target: &TargetId,
        pool: &PoolName,
    ) -> Result<PostgresConfig, ConfigError> {
        self.check_keys(
            w,
            wkey,
            &[
                "type",
                "host",
                "port",
                "user",
                "dbname",
                "password_file",
                "label_dir",
                "wait_for_archive",
                "fsfreeze",
                "state_dir",
                "timeout",
                "wal_archive",
                "prune_wal",
                "stop",
                "start",
                "data_directory",
                "config_file",
                "bin_dir",
            ],
        )?;
        self.note_hooks(w, wkey, &["stop", "start"], target, pool);
        let host = self
            .string(w, wkey, "host")?
            .map(|(s, _)| s)
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = match self.u32(w, wkey, "port")? {
            None => 5432,
            Some(p) => u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                let s = field(w, "port").map(|v| v.span()).unwrap_or(span.clone());
                self.err(s, &join(wkey, "port"), "must be a port number from 1 to 65535")
            })?,
        };
        let user = self
            .string(w, wkey, "user")?
            .map(|(s, _)| s)
            .unwrap_or_else(|| "postgres".into());
        let dbname = self
            .string(w, wkey, "dbname")?
            .map(|(s, _)| s)
            .unwrap_or_else(|| "postgres".into());
        let password_file = self.path(w, wkey, "password_file")?;
        let (label_dir, label_dir_is_default) = match self.path(w, wkey, "label_dir")? {
            Some(d) => (d, false),
            None => (default_label_dir(data_dir, target.as_str()), true),
        };
        let wait_for_archive = self.bool(w, wkey, "wait_for_archive")?.unwrap_or(false);
        let wal_archive = self.path(w, wkey, "wal_archive")?;
        let prune_wal = self.bool(w, wkey, "prune_wal")?.unwrap_or(false);
        if prune_wal && wal_archive.is_none() {
            let s = field(w, "prune_wal").map(|v| v.span()).unwrap_or(span.clone());
            return Err(self.err(
                s,
                &join(wkey, "prune_wal"),
                "needs wal_archive = \"/path\": the archive directory recman owns and may prune",
            ));
        }
        let fsfreeze = match self.path(w, wkey, "fsfreeze")? {
            None => None,
            Some(mountpoint) => Some(FsFreezeConfig {
                mountpoint,
                state_dir: self
                    .path(w, wkey, "state_dir")?
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            }),
        };
        let timeout = self.duration(w, wkey, "timeout")?.unwrap_or(DEFAULT_PG_TIMEOUT);
        let data_directory = self.path(w, wkey, "data_directory")?;
        let config_file = self.path(w, wkey, "config_file")?;
        let bin_dir = self
            .path(w, wkey, "bin_dir")?
            .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_PG_BIN_DIR));
        Ok(PostgresConfig {
            host,
            port,
            user,
            dbname,
            password_file,
            label_dir,
            label_dir_is_default,
            wait_for_archive,
            fsfreeze,
            timeout,
            wal_archive,
            prune_wal,
            stop: self.argv(w, wkey, "stop")?,
            start: self.argv(w, wkey, "start")?,
            data_directory,
            config_file,
            bin_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ConfigError, ProviderConfig, WriterConfig};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, "/etc/recman/recman.toml")
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn linux_writers_and_providers_parse_with_defaults() {
        let c = parse(
            "[engine]\ndata_dir = \"/var/lib/rm\"\n\
             [[target]]\nid = \"fs\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"/srv/data\"\n\
             [target.provider]\ntype = \"qcow2\"\nimage = \"vm/disk.qcow2\"\n\
             [[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\nport = 5433\npassword_file = \"pw\"\n\
             [target.provider]\ntype = \"btrfs\"\nsubvolume = \"/srv/pg\"\ndest = \"/srv/snaps\"\n",
        )
        .unwrap();
        assert_eq!(
            c.targets[0].writer,
            WriterConfig::FsFreeze(FsFreezeConfig {
                mountpoint: "/srv/data".into(),
                state_dir: DEFAULT_STATE_DIR.into(),
            })
        );
        match &c.targets[0].provider {
            ProviderConfig::Qcow2(q) => {
                assert_eq!(q.image, PathBuf::from("/etc/recman/vm/disk.qcow2"));
                assert_eq!(q.qemu_img, "qemu-img");
            }
            other => panic!("{other:?}"),
        }
        match &c.targets[1].writer {
            WriterConfig::Postgres(p) => {
                assert_eq!(
                    (p.host.as_str(), p.port, p.user.as_str()),
                    ("127.0.0.1", 5433, "postgres")
                );
                assert_eq!(p.password_file, Some(PathBuf::from("/etc/recman/pw")));
                assert_eq!(p.label_dir, PathBuf::from("/var/lib/rm/backup_labels/pg"));
                assert!(p.label_dir_is_default);
                assert!(!p.wait_for_archive);
                assert!(p.fsfreeze.is_none());
                assert_eq!((p.wal_archive.as_ref(), p.prune_wal), (None, false));
                // Recovery: files only, unless the data directory is named.
                assert_eq!((p.data_directory.as_ref(), p.config_file.as_ref()), (None, None));
                assert_eq!(p.bin_dir, PathBuf::from(crate::DEFAULT_PG_BIN_DIR));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.targets[1].provider.kind(), "btrfs");
        // Retries span a restart window: a postgres target waits longer by default.
        assert_eq!(
            (c.targets[0].retries, c.targets[0].retry_backoff),
            (crate::DEFAULT_RETRIES, crate::DEFAULT_RETRY_BACKOFF)
        );
        assert_eq!(
            (
                c.targets[1].retries,
                c.targets[1].retry_backoff,
                c.targets[1].retry_backoff_max
            ),
            (
                crate::DEFAULT_PG_RETRIES,
                crate::DEFAULT_PG_RETRY_BACKOFF,
                crate::DEFAULT_RETRY_BACKOFF_MAX
            )
        );
        assert_eq!(c.targets[1].writer.timeout(), DEFAULT_PG_TIMEOUT);
        let r = parse(
            "[[target]]\nid = \"pg\"\nretries = 8\nretry_backoff = \"10s\"\nretry_backoff_max = \"2m\"\n\
             [target.writer]\ntype = \"postgres\"\n[target.provider]\ntype = \"none\"\n",
        )
        .unwrap();
        let t = &r.targets[0];
        assert_eq!(
            (t.retries, t.retry_backoff, t.retry_backoff_max),
            (8, Duration::from_secs(10), Duration::from_secs(120))
        );
        let mut c = c;
        c.set_data_dir("/data");
        match &c.targets[1].writer {
            WriterConfig::Postgres(p) => assert_eq!(p.label_dir, PathBuf::from("/data/backup_labels/pg")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn linux_config_errors_name_the_key() {
        let e = err("[[target]]\nid = \"fs\"\n[target.writer]\ntype = \"fsfreeze\"\n[target.provider]\ntype = \"none\"\n");
        assert!(e.contains("target[0].writer.mountpoint: missing"), "{e}");
        let e = err("[[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\nport = 70000\n[target.provider]\ntype = \"none\"\n");
        assert!(e.contains(":5:") && e.contains("target[0].writer.port"), "{e}");
        let e = err(
            "[[target]]\nid = \"b\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"btrfs\"\nsubvolume = \"/srv/a\"\ndest = \"/srv/a/snaps\"\n",
        );
        assert!(
            e.contains("target[0].provider.dest") && e.contains("inside the subvolume"),
            "{e}"
        );
        let e = err(
            "[[target]]\nid = \"b\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"/srv\"\n[target.provider]\ntype = \"btrfs\"\nsubvolume = \"/srv/a\"\ndest = \"/srv/snaps\"\n",
        );
        assert!(
            e.contains("target[0].writer.type") && e.contains("deadlock"),
            "{e}"
        );
        let e = err(
            "[[target]]\nid = \"b\"\n[target.writer]\ntype = \"postgres\"\nfsfreeze = \"/srv\"\n[target.provider]\ntype = \"btrfs\"\nsubvolume = \"/srv/a\"\ndest = \"/srv/snaps\"\n",
        );
        assert!(e.contains("deadlock"), "{e}");
        let e = err("[[target]]\nid = \"f\"\n[target.writer]\ntype = \"fsfreeze\"\nmountpoint = \"/srv\"\nstate_dir = \"/srv/state\"\n[target.provider]\ntype = \"none\"\n");
        assert!(e.contains("target[0].writer.state_dir"), "{e}");
        let e = err("[[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\nprune_wal = true\n[target.provider]\ntype = \"none\"\n");
        assert!(
            e.contains("target[0].writer.prune_wal") && e.contains("wal_archive"),
            "{e}"
        );
        let e = err("[[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\nprune_wal = \"yes\"\nwal_archive = \"/a\"\n[target.provider]\ntype = \"none\"\n");
        assert!(
            e.contains("target[0].writer.prune_wal") && e.contains("true or false"),
            "{e}"
        );
    }

    #[test]
    fn the_linux_example_config_is_valid() {
        let c = Config::load(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/linux.toml")).unwrap();
        let kinds: Vec<(&str, &str)> = c
            .targets
            .iter()
            .map(|t| (t.writer.kind(), t.provider.kind()))
            .collect();
        assert_eq!(
            kinds,
            [("fsfreeze", "exec"), ("postgres", "btrfs"), ("none", "qcow2")]
        );
    }

    #[test]
    fn a_postgres_writer_names_what_a_restore_recovers() {
        let c = parse(
            "[[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\nwal_archive = \"/srv/arch\"\n\
             data_directory = \"/srv/pg/data\"\nconfig_file = \"pg.conf\"\nbin_dir = \"/opt/pg/bin\"\n\
             [target.provider]\ntype = \"btrfs\"\nsubvolume = \"/srv/pg\"\ndest = \"/srv/snaps\"\n",
        )
        .unwrap();
        let WriterConfig::Postgres(p) = &c.targets[0].writer else {
            panic!("{:?}", c.targets[0].writer)
        };
        assert_eq!(p.data_directory, Some(PathBuf::from("/srv/pg/data")));
        assert_eq!(
            p.config_file,
            Some(PathBuf::from("/etc/recman/pg.conf")),
            "relative to the config file"
        );
        assert_eq!(p.bin_dir, PathBuf::from("/opt/pg/bin"));
        let e = err(
            "[[target]]\nid = \"pg\"\n[target.writer]\ntype = \"postgres\"\ndata_directory = 5\n\
             [target.provider]\ntype = \"none\"\n",
        );
        assert!(
            e.contains("recman.toml:5") && e.contains("writer.data_directory"),
            "{e}"
        );
    }
}
