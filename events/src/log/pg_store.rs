//! A `Store` on PostgreSQL: one row per record in a schema of its own, one
//! transaction per group commit, the writer fenced by an epoch.
//!
//! Tables of schema `S` (created on the first writable open):
//!
//! ```text
//! S.records (seq bigint primary key, job bytea, bytes bytea)   + index (job, seq)
//! S.leader  (id = 1, epoch bigint, holder text, since timestamptz,
//!            lease_until timestamptz, pids int[])
//! S.meta    (key text primary key, value bigint)   e.g. the events relay's cursor
//! ```
//!
//! A writable open takes a session-level advisory lock (a dedicated
//! connection holds it for the store's life; a second writer gets
//! `LogError::Locked`), then bumps `leader.epoch` and keeps the new value.
//! Every commit checks, inside its transaction and with the leader row
//! share-locked, that the epoch is still its own: a writer whose lock session
//! died (and whose place another engine took, bumping the epoch) can no longer
//! add a record, even through a connection that still works. Commits run with
//! `synchronous_commit = on`, so `COMMIT` returns once the records are flushed
//! on the server (and on its synchronous standbys, if it has any).
//!
//! The writer also holds a **lease** (`leader.lease_until`, by the server's
//! clock), renewed on the lock session every fifth of its length, and only
//! while it has not expired. A commit also requires an unexpired lease, so a
//! writer that was paused (SIGSTOP, a VM freeze) past its lease can neither
//! commit nor renew, whatever its sessions look like. A second writer that
//! finds the lock held but the lease expired terminates the holder's
//! sessions (`leader.pids`: the lock session and the records session, so an
//! open transaction of the paused writer is rolled back), takes the lock and
//! the next epoch. Locally the writer stops acting (see `lease::Lease`) a
//! margin before the server's lease ends when it cannot renew.
//!
//! tokio-postgres is async and `Store` is not: the connections live on a
//! thread of their own with a current-thread runtime, and each call sends it
//! a request and blocks for the answer (as a redb read blocks on the disk).
//! Sessions are plain TCP or Unix sockets (`NoTls`): TLS to the database is
//! not built yet.

use std::sync::mpsc as std_mpsc;

use tokio_postgres::{Client, NoTls};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::JobId;
use crate::log::lease::{Lease, LeaseOptions};
use crate::log::store::{Batch, Store};
use crate::log::{LogError, RawRecord};

/// Rows fetched per query when a scan asks for more.
const SCAN_CHUNK: usize = 4096;

/// Where a log lives in PostgreSQL: a connection string (`postgresql://…`
/// or `host=… user=…`) and a schema name.
#[derive(Clone, PartialEq, Eq)]
pub struct PgPlace {
    pub url: String,
    pub schema: String,
    /// The password, when it is not in `url` (read from a file).
    pub password: Option<String>,
}

impl std::fmt::Debug for PgPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl PgPlace {
    /// Checks the schema name: lower-case letters, digits and `_`, starting
    /// with a letter, at most 63 bytes (it is spliced into SQL as an
    /// identifier, so nothing else may pass).
    pub fn new(url: &str, schema: &str) -> Result<PgPlace, LogError> {
        let ok = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase())
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(LogError::Store(format!(
                "`{schema}` is not a usable schema name for the event log: use lower-case \
                 letters, digits and `_`, starting with a letter, at most 63 bytes"
            )));
        }
        url.parse::<tokio_postgres::Config>().map_err(|e| {
            LogError::Store(format!(
                "the PostgreSQL connection string of the event log does not parse: {e}"
            ))
        })?;
        Ok(PgPlace {
            url: url.to_string(),
            schema: schema.to_string(),
            password: None,
        })
    }

    /// The same place, connecting with `password`.
    pub fn with_password(mut self, password: Option<String>) -> PgPlace {
        self.password = password;
        self
    }

    /// The connection string without its password, for messages.
    pub fn display(&self) -> String {
        let shown = match self.url.parse::<tokio_postgres::Config>() {
            Ok(c) => {
                let hosts: Vec<String> = c
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(s) => s.clone(),
                        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                    })
                    .collect();
                format!(
                    "postgresql://{}@{}:{}/{}",
                    c.get_user().unwrap_or(""),
                    hosts.join(","),
                    c.get_ports().first().copied().unwrap_or(5432),
                    c.get_dbname().unwrap_or("")
                )
            }
            Err(_) => "postgresql://?".to_string(),
        };
        format!("{shown} schema {}", self.schema)
    }

    /// The advisory-lock key of this schema (the same in every process).
    fn lock_key(&self) -> i64 {
        let h = blake3::hash(format!("recman-event-log:{}", self.schema).as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        i64::from_le_bytes(b)
    }
}

/// How the store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The engine's: create the schema if missing, take the lock, fence.
    Write,
    /// Tools' and tamper tests': no lock, no epoch; the schema must exist.
    Read,
}

enum Req {
    Commit(Vec<(i64, Vec<u8>, Vec<u8>)>),
    Scan { from: i64, limit: i64 },
    Get(i64),
    JobSeqs(Vec<u8>),
    Last,
    PutRaw(i64, Option<Vec<u8>>),
    GetMeta(String),
    SetMeta(String, i64),
}

enum Resp {
    Done,
    Meta(Option<i64>),
    Rows(Vec<(u64, Vec<u8>)>),
    Seqs(Vec<u64>),
}

type Reply = std_mpsc::Sender<Result<Resp, LogError>>;

/// The store: a handle on the thread that owns the sessions.
pub struct PgStore {
    place: PgPlace,
    /// `None` once dropped (ends the thread).
    tx: Option<std_mpsc::Sender<(Req, Reply)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The epoch this writer holds (`None`: read-only).
    pub epoch: Option<i64>,
    /// The writer's lease (`None`: read-only).
    lease: Option<Arc<Lease>>,
}

fn pg_err(place: &PgPlace, what: &str, e: tokio_postgres::Error) -> LogError {
    let detail = e
        .as_db_error()
        .map(|d| format!("{}: {}", d.code().code(), d.message()))
        .unwrap_or_else(|| e.to_string());
    LogError::Store(format!(
        "PostgreSQL event log ({}): {what}: {detail}",
        place.display()
    ))
}

async fn connect(place: &PgPlace, rt_what: &str) -> Result<Client, LogError> {
    let mut config: tokio_postgres::Config = place
        .url
        .parse()
        .map_err(|e| pg_err(place, "parsing the connection string", e))?;
    if let Some(pw) = &place.password {
        config.password(pw.as_bytes());
    }
    config.connect_timeout(std::time::Duration::from_secs(10));
    let (client, conn) = config
        .connect(NoTls)
        .await
        .map_err(|e| pg_err(place, &format!("connecting ({rt_what})"), e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .batch_execute("SET synchronous_commit = on; SET statement_timeout = '60s'")
        .await
        .map_err(|e| pg_err(place, "setting up the session", e))?;
    Ok(client)
}

struct Worker {
    place: PgPlace,
    s: String,
    client: Client,
    /// The session holding the advisory lock, until the renewal task takes it.
    lock: Option<Client>,
    epoch: Option<i64>,
    lease: Option<Arc<Lease>>,
}

/// `pg_try_advisory_lock` of the place's key on `l`.
async fn try_lock(place: &PgPlace, l: &Client) -> Result<bool, LogError> {
    Ok(
        l.query_one("SELECT pg_try_advisory_lock($1)", &[&place.lock_key()])
            .await
            .map_err(|e| pg_err(place, "taking the writer's lock", e))?
            .get(0),
    )
}

/// Milliseconds of `d` as a bigint parameter.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Worker {
    async fn open(place: PgPlace, mode: Mode, opts: LeaseOptions) -> Result<Worker, LogError> {
        let s = place.schema.clone();
        let client = connect(&place, "records").await?;
        let mut lock = None;
        let mut epoch = None;
        let mut lease = None;
        if mode == Mode::Write {
            let l = connect(&place, "lock").await?;
            let mut got = try_lock(&place, &l).await?;
            let mut took_from_expired = false;
            if !got {
                // The holder's lease expired (it is paused, or cut off from
                // the database but its sessions linger): end its sessions,
                // which frees the lock and rolls back what it had begun.
                // An old schema without a lease column is simply locked.
                let ended = client
                    .query(
                        &format!(
                            "SELECT pg_terminate_backend(p, 5000) FROM {s}.leader, unnest(pids) AS p \
                             WHERE id = 1 AND lease_until < clock_timestamp()"
                        ),
                        &[],
                    )
                    .await
                    .map(|rows| rows.len())
                    .unwrap_or(0);
                if ended > 0 {
                    got = try_lock(&place, &l).await?;
                    took_from_expired = got;
                }
            }
            if !got {
                let holder = match client
                    .query_one(
                        &format!(
                            "SELECT holder, since::text, lease_until::text FROM {s}.leader WHERE id = 1"
                        ),
                        &[],
                    )
                    .await
                {
                    Ok(r) => format!(
                        " ({}, since {}, lease until {})",
                        r.get::<_, String>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2)
                    ),
                    Err(_) => client
                        .query_one(
                            &format!("SELECT holder, since::text FROM {s}.leader WHERE id = 1"),
                            &[],
                        )
                        .await
                        .map(|r| format!(" ({}, since {})", r.get::<_, String>(0), r.get::<_, String>(1)))
                        .unwrap_or_default(),
                };
                return Err(LogError::Locked(format!(
                    "the event log in {} is in use by another recman process{holder}: it holds \
                     the schema's advisory lock; stop that process or use another schema",
                    place.display()
                )));
            }
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {s};
                     CREATE TABLE IF NOT EXISTS {s}.records (
                         seq bigint PRIMARY KEY, job bytea NOT NULL, bytes bytea NOT NULL);
                     CREATE INDEX IF NOT EXISTS records_job ON {s}.records (job, seq);
                     CREATE TABLE IF NOT EXISTS {s}.leader (
                         id int PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL,
                         holder text NOT NULL, since timestamptz NOT NULL);
                     INSERT INTO {s}.leader VALUES (1, 0, '', now()) ON CONFLICT DO NOTHING;
                     ALTER TABLE {s}.leader
                         ADD COLUMN IF NOT EXISTS lease_until timestamptz NOT NULL DEFAULT now(),
                         ADD COLUMN IF NOT EXISTS pids int[] NOT NULL DEFAULT '{{}}';
                     CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value bigint NOT NULL);
                     SET idle_in_transaction_session_timeout = {};",
                    ms(opts.lease)
                ))
                .await
                .map_err(|e| pg_err(&place, "creating the log's tables", e))?;
            let holder = format!(
                "pid {} on {}",
                std::process::id(),
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim()
            );
            let mut pids: Vec<i32> = Vec::with_capacity(2);
            for c in [&l, &client] {
                pids.push(
                    c.query_one("SELECT pg_backend_pid()", &[])
                        .await
                        .map_err(|e| pg_err(&place, "asking for the session's pid", e))?
                        .get(0),
                );
            }
            let sent = Instant::now();
            let e: i64 = client
                .query_one(
                    &format!(
                        "UPDATE {s}.leader SET epoch = epoch + 1, holder = $1, since = now(), \
                         pids = $2, lease_until = clock_timestamp() + $3::bigint * interval '1 millisecond' \
                         WHERE id = 1 RETURNING epoch"
                    ),
                    &[&holder, &pids, &ms(opts.lease)],
                )
                .await
                .map_err(|e| pg_err(&place, "taking the next epoch", e))?
                .get(0);
            epoch = Some(e);
            let mut l_ = Lease::new(e, opts, sent);
            l_.took_from_expired = took_from_expired;
            lease = Some(Arc::new(l_));
            lock = Some(l);
        } else {
            let exists: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                     WHERE table_schema = $1 AND table_name = 'records')",
                    &[&s],
                )
                .await
                .map_err(|e| pg_err(&place, "looking for the log", e))?
                .get(0);
            if !exists {
                return Err(LogError::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no event log in {}", place.display()),
                )));
            }
        }
        Ok(Worker {
            place,
            s,
            client,
            lock,
            epoch,
            lease,
        })
    }

    async fn handle(&mut self, req: Req) -> Result<Resp, LogError> {
        let s = &self.s;
        let place = &self.place;
        let err = |what: &str| {
            let what = what.to_string();
            move |e| pg_err(place, &what, e)
        };
        match req {
            Req::Commit(rows) => {
                let (Some(mine), Some(lease)) = (self.epoch, &self.lease) else {
                    return Err(LogError::Store(
                        "the event log was opened for reading only".into(),
                    ));
                };
                lease.check()?;
                let tx = self
                    .client
                    .transaction()
                    .await
                    .map_err(err("beginning a commit"))?;
                let row = tx
                    .query_one(
                        &format!(
                            "SELECT epoch, lease_until > clock_timestamp() FROM {s}.leader \
                             WHERE id = 1 FOR SHARE"
                        ),
                        &[],
                    )
                    .await
                    .map_err(err("checking the epoch"))?;
                let (now, valid): (i64, bool) = (row.get(0), row.get(1));
                if now != mine {
                    let why = format!(
                        "fenced: another recman engine took over the event log in {} (epoch {now}, \
                         this one holds {mine}); this process must not append any more",
                        place.display()
                    );
                    lease.lose(why.clone());
                    return Err(LogError::Store(why));
                }
                if !valid {
                    let why = format!(
                        "fenced: the lease of epoch {mine} on the event log in {} has expired \
                         (this process was paused or cut off); it must not append any more",
                        place.display()
                    );
                    lease.lose(why.clone());
                    return Err(LogError::Store(why));
                }
                let mut seqs = Vec::with_capacity(rows.len());
                let mut jobs = Vec::with_capacity(rows.len());
                let mut bytes = Vec::with_capacity(rows.len());
                for (seq, job, b) in rows {
                    seqs.push(seq);
                    jobs.push(job);
                    bytes.push(b);
                }
                tx.execute(
                    &format!(
                        "INSERT INTO {s}.records (seq, job, bytes) \
                         SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])"
                    ),
                    &[&seqs, &jobs, &bytes],
                )
                .await
                .map_err(err("inserting records"))?;
                tx.commit().await.map_err(err("committing"))?;
                Ok(Resp::Done)
            }
            Req::Scan { from, limit } => {
                let rows = self
                    .client
                    .query(
                        &format!("SELECT seq, bytes FROM {s}.records WHERE seq >= $1 ORDER BY seq LIMIT $2"),
                        &[&from, &limit],
                    )
                    .await
                    .map_err(err("reading records"))?;
                Ok(Resp::Rows(
                    rows.into_iter()
                        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
                        .collect(),
                ))
            }
            Req::Get(seq) => {
                let rows = self
                    .client
                    .query(
                        &format!("SELECT seq, bytes FROM {s}.records WHERE seq = $1"),
                        &[&seq],
                    )
                    .await
                    .map_err(err("reading a record"))?;
                Ok(Resp::Rows(
                    rows.into_iter()
                        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
                        .collect(),
                ))
            }
            Req::JobSeqs(job) => {
                let rows = self
                    .client
                    .query(
                        &format!("SELECT seq FROM {s}.records WHERE job = $1 ORDER BY seq"),
                        &[&job],
                    )
                    .await
                    .map_err(err("reading a job's records"))?;
                Ok(Resp::Seqs(
                    rows.into_iter().map(|r| r.get::<_, i64>(0) as u64).collect(),
                ))
            }
            Req::Last => {
                let rows = self
                    .client
                    .query(
                        &format!("SELECT seq, bytes FROM {s}.records ORDER BY seq DESC LIMIT 1"),
                        &[],
                    )
                    .await
                    .map_err(err("reading the last record"))?;
                Ok(Resp::Rows(
                    rows.into_iter()
                        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
                        .collect(),
                ))
            }
            Req::GetMeta(key) => {
                let rows = self
                    .client
                    .query(&format!("SELECT value FROM {s}.meta WHERE key = $1"), &[&key])
                    .await
                    .map_err(err("reading a value of the log's meta table"))?;
                Ok(Resp::Meta(rows.first().map(|r| r.get::<_, i64>(0))))
            }
            Req::SetMeta(key, value) => {
                self.client
                    .execute(
                        &format!(
                            "INSERT INTO {s}.meta (key, value) VALUES ($1, $2) \
                             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                        ),
                        &[&key, &value],
                    )
                    .await
                    .map_err(err("writing a value of the log's meta table"))?;
                Ok(Resp::Done)
            }
            Req::PutRaw(seq, bytes) => {
                match bytes {
                    Some(b) => self
                        .client
                        .execute(
                            &format!(
                                "INSERT INTO {s}.records (seq, job, bytes) VALUES ($1, '\\x', $2) \
                                 ON CONFLICT (seq) DO UPDATE SET bytes = EXCLUDED.bytes"
                            ),
                            &[&seq, &b],
                        )
                        .await
                        .map_err(err("overwriting a record"))?,
                    None => self
                        .client
                        .execute(&format!("DELETE FROM {s}.records WHERE seq = $1"), &[&seq])
                        .await
                        .map_err(err("deleting a record"))?,
                };
                Ok(Resp::Done)
            }
        }
    }
}

/// Renews `lease` on the lock session `l` every `renew_every` until `stop`,
/// then lets go of the lock. A renewal that matches no row (another epoch,
/// or the lease already expired) loses the lease for good; one that fails
/// or hangs leaves it to expire locally ([`Lease::check`]).
async fn renew(place: PgPlace, l: Client, lease: Arc<Lease>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let s = &place.schema;
    let sql = format!(
        "UPDATE {s}.leader SET lease_until = clock_timestamp() + $2::bigint * interval '1 millisecond' \
         WHERE id = 1 AND epoch = $1 AND lease_until > clock_timestamp()"
    );
    let every = lease.options.renew_every();
    let lease_ms = ms(lease.options.lease);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(every) => {}
        }
        if lease.lost().is_some() {
            continue; // never renewed again; the owner steps down
        }
        let sent = Instant::now();
        let r = tokio::time::timeout(lease.options.lease, l.execute(&sql, &[&lease.epoch, &lease_ms])).await;
        match r {
            Ok(Ok(1)) => lease.renewed(sent),
            Ok(Ok(_)) => lease.lose(format!(
                "fenced: the lease of epoch {} on the event log in {} could not be renewed \
                 (it expired, or another engine took over); this engine steps down",
                lease.epoch,
                place.display()
            )),
            Ok(Err(e)) => {
                tracing::warn!(error = %pg_err(&place, "renewing the writer's lease", e), "lease not renewed")
            }
            Err(_) => tracing::warn!("renewing the writer's lease on the event log timed out"),
        }
    }
    // Let go of the lock before the store's drop returns, so the next open
    // (this process or another) finds it free; closing the session would
    // free it too, but only once the server has noticed.
    let _ = l
        .execute("SELECT pg_advisory_unlock($1)", &[&place.lock_key()])
        .await;
}

impl PgStore {
    /// Connects (and, with `Mode::Write`, creates the tables, takes the lock
    /// and the next epoch, with the default lease). Fails with
    /// `LogError::Locked` when another writer holds the lock.
    pub fn open(place: PgPlace, mode: Mode) -> Result<PgStore, LogError> {
        PgStore::open_with(place, mode, LeaseOptions::default())
    }

    /// [`PgStore::open`] with a lease of `opts` (writers only).
    pub fn open_with(place: PgPlace, mode: Mode, opts: LeaseOptions) -> Result<PgStore, LogError> {
        let (tx, rx) = std_mpsc::channel::<(Req, Reply)>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let p = place.clone();
        let thread = std::thread::Builder::new()
            .name("recman-log-pg".into())
            .spawn(move || {
                // One worker thread drives the sessions' connections and the
                // lease renewal while this thread waits for requests.
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("recman-log-pg-io")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(LogError::Io(e)));
                        return;
                    }
                };
                let mut w = match rt.block_on(Worker::open(p, mode, opts)) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
                let renewal = match (w.lock.take(), &w.lease) {
                    (Some(l), Some(lease)) => {
                        Some(rt.spawn(renew(w.place.clone(), l, lease.clone(), stop_rx)))
                    }
                    _ => None,
                };
                let _ = ready_tx.send(Ok((w.epoch, w.lease.clone())));
                while let Ok((req, reply)) = rx.recv() {
                    let _ = reply.send(rt.block_on(w.handle(req)));
                }
                let _ = stop_tx.send(());
                rt.block_on(async move {
                    if let Some(r) = renewal {
                        let _ = r.await;
                    }
                    drop(w)
                });
            })?;
        let (epoch, lease) = ready_rx
            .recv()
            .map_err(|_| LogError::Store("the PostgreSQL log thread ended while opening".into()))??;
        Ok(PgStore {
            place,
            tx: Some(tx),
            thread: Some(thread),
            epoch,
            lease,
        })
    }

    fn call(&self, req: Req) -> Result<Resp, LogError> {
        let (reply, rx) = std_mpsc::channel();
        self.tx
            .as_ref()
            .ok_or(LogError::Closed)?
            .send((req, reply))
            .map_err(|_| LogError::Closed)?;
        rx.recv().map_err(|_| LogError::Closed)?
    }

    fn rows(&self, req: Req) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        match self.call(req)? {
            Resp::Rows(r) => Ok(r),
            _ => Err(LogError::Store(
                "unexpected answer from the PostgreSQL log thread".into(),
            )),
        }
    }

    /// A number stored beside the log under `key` (e.g. the events relay's
    /// cursor), `None` when never set.
    pub fn get_meta(&self, key: &str) -> Result<Option<i64>, LogError> {
        match self.call(Req::GetMeta(key.to_string()))? {
            Resp::Meta(v) => Ok(v),
            _ => Err(LogError::Store(
                "unexpected answer from the PostgreSQL log thread".into(),
            )),
        }
    }

    /// Stores `value` under `key`, durably (its own transaction).
    pub fn set_meta(&self, key: &str, value: i64) -> Result<(), LogError> {
        self.call(Req::SetMeta(key.to_string(), value)).map(|_| ())
    }

    /// Where the log is.
    pub fn place(&self) -> &PgPlace {
        &self.place
    }
}

impl Drop for PgStore {
    /// Ends the thread and waits for it: the writer's lock is free when
    /// the store is gone.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Store for PgStore {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        let rows = batch
            .records()
            .map(|(seq, job, bytes)| (to_i64(seq), job.0.as_bytes().to_vec(), bytes.to_vec()))
            .collect();
        let r = self.call(Req::Commit(rows)).map(|_| ());
        // A commit that failed because this writer was replaced (its
        // sessions ended) says so, rather than "connection closed".
        if r.is_err() {
            if let Some(l) = &self.lease {
                l.check()?;
            }
        }
        r
    }

    fn scan(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        let mut n = 0;
        let mut next = to_i64(from);
        while n < max {
            let want = (max - n).min(SCAN_CHUNK);
            let rows = self.rows(Req::Scan {
                from: next,
                limit: want as i64,
            })?;
            let got = rows.len();
            for (seq, bytes) in rows {
                f(seq, &bytes);
                next = to_i64(seq).saturating_add(1);
            }
            n += got;
            if got < want {
                break;
            }
        }
        Ok(n)
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.rows(Req::Get(to_i64(seq)))?.pop().map(|(_, b)| b))
    }

    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        match self.call(Req::JobSeqs(job.0.as_bytes().to_vec()))? {
            Resp::Seqs(s) => Ok(s),
            _ => Err(LogError::Store(
                "unexpected answer from the PostgreSQL log thread".into(),
            )),
        }
    }

    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        Ok(self
            .rows(Req::Last)?
            .pop()
            .map(|(seq, bytes)| RawRecord { seq, bytes }))
    }

    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        self.call(Req::PutRaw(to_i64(seq), bytes.map(<[u8]>::to_vec)))
            .map(|_| ())
    }

    fn lease(&self) -> Option<Arc<Lease>> {
        self.lease.clone()
    }
}
