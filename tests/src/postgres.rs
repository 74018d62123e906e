//! The PostgreSQL tests' harness: a private PostgreSQL 15 cluster run as the
//! `postgres` user on loopback with a free port (data dir, sockets, logs and
//! WAL archive under a temp dir), stopped when dropped; roles; and the
//! restore of a snapshot with its `backup_label` and the archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use recman_testkit::{free_port, sh};

use crate::linux::LoopFs;

/// PostgreSQL 15's programs (Debian's layout).
pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The superuser's password (and the test roles').
pub const PASSWORD: &str = "recman-test-pw";
/// What a PostgreSQL test needs besides root (for `linux::can_run`).
pub const TOOLS: &[&str] = &[
    "losetup",
    "mkfs.btrfs",
    "btrfs",
    "runuser",
    "initdb",
    "pg_ctl",
    "pgbench",
];

/// Runs a PostgreSQL program as the `postgres` user; panics with its output on failure.
pub fn as_postgres(prog: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(BIN).join(prog))
        .args(args)
        .env("PGPASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pgbench as the superuser against `port` on loopback, output discarded.
pub fn pgbench(port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new(Path::new(BIN).join("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .env("PGPASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// A pgbench load (two clients) on the `postgres` database, killed when dropped.
pub struct Load(Child);

impl Load {
    /// Initialises pgbench's tables (scale 1) and runs two clients for at most `secs`.
    pub fn start(port: u16, secs: u32) -> Load {
        let init = pgbench(port, &["-i", "-q", "-s", "1", "postgres"])
            .status()
            .unwrap();
        assert!(init.success(), "pgbench -i: {init}");
        let child = pgbench(port, &["-c", "2", "-j", "1", "-T", &secs.to_string(), "postgres"])
            .spawn()
            .unwrap();
        Load(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn chown_postgres(p: &Path) {
    sh("chown", &["-R", "postgres:postgres", p.to_str().unwrap()]);
}

pub fn append(p: &Path, text: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Writes an executable `sh` script (atomically, by rename).
fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A running private cluster; stopped (immediate) on drop.
pub struct Pg {
    pub data: PathBuf,
    pub port: u16,
}

impl Pg {
    pub fn start(data: &Path, port: u16, log: &Path) -> Pg {
        let pg = Pg {
            data: data.to_path_buf(),
            port,
        };
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "120",
                "start",
            ],
        );
        pg
    }

    /// A session as the superuser.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.client_as("postgres").await
    }

    /// A session as `user` (password [`PASSWORD`]).
    pub async fn client_as(&self, user: &str) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(PASSWORD)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(BIN).join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A cluster whose data directory is the btrfs subvolume `<mnt>/pg`, with a
/// WAL archive (`archive_mode = on`, `cp`) or without (`off`).
pub struct Cluster {
    /// The temp dir beside the mount: archive, sockets, logs, password file.
    pub top: PathBuf,
    pub sub: PathBuf,
    pub archive: PathBuf,
    pub logs: PathBuf,
    /// A file holding [`PASSWORD`].
    pub pw: PathBuf,
    pub pg: Pg,
}

impl Cluster {
    pub fn start(b: &LoopFs, archive_on: bool) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        let top = b.dir.path().to_path_buf();
        for p in [&top, &b.mnt] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let sub = b.mnt.join("pg");
        sh("btrfs", &["subvolume", "create", sub.to_str().unwrap()]);
        let (archive, sock, logs) = (top.join("archive"), top.join("sock"), top.join("pglogs"));
        for d in [&archive, &sock, &logs] {
            fs::create_dir(d).unwrap();
        }
        let pw = top.join("pw");
        fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        for p in [&sub, &archive, &sock, &pw, &logs] {
            chown_postgres(p);
        }
        let data = sub.join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                &format!("--pwfile={}", pw.display()),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-N",
            ],
        );
        let port = free_port();
        // Through a script a test may replace (`set_archive_script`).
        let script = top.join("archive.sh");
        write_script(&script, &format!("exec cp \"$1\" {}/\"$2\"\n", archive.display()));
        let archiving = if archive_on {
            format!(
                "archive_mode = on\narchive_command = '{} %p %f'\n",
                script.display()
            )
        } else {
            "archive_mode = off\n".to_string()
        };
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\n\
                 {archiving}max_wal_size = 256MB\n",
                sock.display()
            ),
        );
        let pg = Pg::start(&data, port, &logs.join("pg1.log"));
        Cluster {
            top,
            sub,
            archive,
            logs,
            pw,
            pg,
        }
    }

    /// Replaces the body of the archive command's script (`$1` = `%p`,
    /// `$2` = `%f`), atomically: the archiver runs the new one from its next file on.
    pub fn set_archive_script(&self, body: &str) {
        write_script(&self.top.join("archive.sh"), body);
    }

    /// Restores snapshot `snap` (a read-only btrfs snapshot of the data
    /// directory's subvolume) as a writable copy beside it, with its
    /// `backup_label` from `label_dir`, WAL from the archive, recovery to the
    /// end of the backup; starts it. Returns the running copy and its log.
    pub fn restore(&self, b: &LoopFs, snap: &Path, label_dir: &Path, name: &str) -> (Pg, PathBuf) {
        let restore = b.mnt.join(format!("restore-{name}"));
        sh(
            "btrfs",
            &[
                "subvolume",
                "snapshot",
                snap.to_str().unwrap(),
                restore.to_str().unwrap(),
            ],
        );
        let data2 = restore.join("data");
        for f in ["postmaster.pid", "postmaster.opts"] {
            let _ = fs::remove_file(data2.join(f));
        }
        let label = label_dir.join(name).join("backup_label");
        fs::copy(&label, data2.join("backup_label")).unwrap_or_else(|e| panic!("{}: {e}", label.display()));
        fs::write(data2.join("recovery.signal"), b"").unwrap();
        let sock2 = self.top.join(format!("sock-{name}"));
        fs::create_dir_all(&sock2).unwrap();
        chown_postgres(&sock2);
        let port2 = free_port();
        append(
            &data2.join("postgresql.conf"),
            &format!(
                "\nport = {port2}\nunix_socket_directories = '{}'\narchive_mode = off\nrestore_command = 'cp {}/%f %p'\n\
                 recovery_target = 'immediate'\nrecovery_target_action = 'promote'\n",
                sock2.display(),
                self.archive.display()
            ),
        );
        chown_postgres(&data2);
        let log = self.logs.join(format!("restore-{name}.log"));
        (Pg::start(&data2, port2, &log), log)
    }
}

/// `recman`'s recovery hooks for the cluster in `data` (TOML arrays):
/// `pg_ctl` as `postgres`, stopping (fast) only a running cluster and
/// starting (logging to `log`) only a stopped one, as the writer asks.
pub fn pg_ctl_hooks(data: &Path, log: &Path) -> (String, String) {
    let ctl = format!("runuser -u postgres -- {BIN}/pg_ctl -D '{}'", data.display());
    let stop = format!("{ctl} status >/dev/null 2>&1 || exit 0; exec {ctl} -m fast -w -t 120 stop");
    let start = format!(
        "{ctl} status >/dev/null 2>&1 && exit 0; exec {ctl} -l '{}' -w -t 120 start",
        log.display()
    );
    let arr = |s: String| format!("[\"/bin/sh\", \"-c\", {}]", toml_string(&s));
    (arr(stop), arr(start))
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Cluster {
    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.sub.join("data")
    }

    /// Target `pg1` as a restore needs it: the `postgres` writer (backup
    /// mode, labels in `labels`, `wal_archive`, `data_directory`, `pg_ctl`
    /// hooks) over the `btrfs` provider (snapshots in `<mnt>/snapshots`),
    /// in worker pool `pool`. Without `hooks` the writer's own `pg_ctl`
    /// default stops and starts the cluster.
    pub fn restore_config(&self, b: &LoopFs, labels: &Path, pool: &str, hooks: bool) -> String {
        let (stop, start) = pg_ctl_hooks(&self.data(), &self.logs.join("pg1.log"));
        let hooks = if hooks {
            format!("stop = {stop}\nstart = {start}\n")
        } else {
            String::new()
        };
        format!(
            "[[target]]\nid = \"pg1\"\npool = \"{pool}\"\nfreeze_limit = \"60s\"\n\
             [target.writer]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\n\
             password_file = \"{}\"\nlabel_dir = \"{}\"\nwait_for_archive = true\ntimeout = \"60s\"\n\
             wal_archive = \"{}\"\ndata_directory = \"{}\"\n{hooks}\
             [target.provider]\ntype = \"btrfs\"\nsubvolume = \"{}\"\ndest = \"{}\"\n\
             [target.recovery]\ntimeout = \"120s\"\n",
            self.pg.port,
            self.pw.display(),
            labels.display(),
            self.archive.display(),
            self.data().display(),
            self.sub.display(),
            b.mnt.join("snapshots").display(),
        )
    }
}

/// Creates `seq (n bigint primary key)`: rows a test commits one by one.
pub async fn create_seq(c: &tokio_postgres::Client) {
    c.batch_execute("CREATE TABLE seq (n bigint PRIMARY KEY)")
        .await
        .unwrap();
}

/// Commits rows `ns` of `seq`, one transaction each.
pub async fn insert_seq(c: &tokio_postgres::Client, ns: std::ops::RangeInclusive<i64>) {
    for n in ns {
        c.execute("INSERT INTO seq VALUES ($1)", &[&n]).await.unwrap();
    }
}

/// Every row of `seq`, in order.
pub async fn seq_rows(c: &tokio_postgres::Client) -> Vec<i64> {
    c.query("SELECT n FROM seq ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Switches WAL and waits (up to 60 s) until the switched file is archived.
pub async fn archive_now(c: &tokio_postgres::Client) {
    let file: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let last: Option<String> = c
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .await
            .unwrap()
            .get(0);
        if last.as_deref().is_some_and(|l| l >= file.as_str()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{file} not archived (last {last:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A session with the cluster on `port` (superuser, password [`PASSWORD`]),
/// retried for up to 60 s while it starts.
pub async fn connect(port: u16) -> tokio_postgres::Client {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user("postgres")
            .password(PASSWORD)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await;
        match r {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                return c;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("connecting to port {port}: {e}"),
        }
    }
}

/// A `postgresql://user:pw@host:port/db` URL (as `tests/services/postgres.sh`
/// exports it) → the URL without the password, for `[log] postgres` (which
/// refuses a password in the URL), and the password, for its
/// `password_file`.
pub fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').expect("user@host");
    let (user, pw) = userinfo.split_once(':').expect("user:password");
    (format!("{scheme}://{user}@{host}"), pw.to_string())
}
