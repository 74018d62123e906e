//! The `EventLog` conformance suite on the PostgreSQL store (`log::pg_store`),
//! the SIGKILL case included, against the private server `tests/run` starts
//! (`tests/services/postgres.sh`, `RECMAN_TEST_PG_URL`): one fresh schema per
//! test, dropped after it. Then what only this store has: fencing by epoch,
//! a read-only open that creates nothing, and schema names that cannot
//! reach the SQL.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recman_events::log::conformance::{ev, job, DurablePlace, LogPlace};
use recman_events::log::pg_store::{Mode, PgPlace, PgStore};
use recman_events::log::{open_postgres, open_postgres_for_reading, Store};
use recman_events::{log_conformance_tests, EventLog, LogError};

const URL_VAR: &str = "RECMAN_TEST_PG_URL";
const HOW: &str = "start a private server: `source tests/services/postgres.sh && pg_start`; tests/run does";

fn available() -> bool {
    recman_testkit::need_env(URL_VAR, HOW).is_some()
}

fn url() -> String {
    std::env::var(URL_VAR).expect(URL_VAR)
}

/// A schema of its own (dropped on drop unless it is the SIGKILL child's).
struct Pg {
    place: PgPlace,
    owned: bool,
}

impl Pg {
    fn new() -> Pg {
        static N: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "t{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        Pg {
            place: PgPlace::new(&url(), &schema).unwrap(),
            owned: true,
        }
    }
}

/// Opens, waiting up to 10 s while the lock is held by another process: the
/// server frees a killed process's advisory lock once it has seen its sockets
/// close, not at the instant of the kill (an engine waits for the lock as a
/// standby does). A holder in this process is never waited for: the suite
/// checks that a second open of a live log is refused at once.
fn open_waiting(place: &PgPlace) -> Result<Arc<dyn EventLog>, LogError> {
    let me = format!("pid {} on", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open_postgres(place) {
            Err(LogError::Locked(m)) if !m.contains(&me) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            r => return r,
        }
    }
}

impl LogPlace for Pg {
    fn open(&self) -> Result<Arc<dyn EventLog>, LogError> {
        open_waiting(&self.place)
    }
    fn open_for_reading(&self) -> Result<Arc<dyn EventLog>, LogError> {
        open_postgres_for_reading(&self.place)
    }
    fn store(&self) -> Result<Arc<dyn Store>, LogError> {
        Ok(Arc::new(PgStore::open(self.place.clone(), Mode::Read)?))
    }
}

impl DurablePlace for Pg {
    fn location(&self) -> String {
        format!("{}\t{}", self.place.schema, self.place.url)
    }
    fn at(location: &str) -> Pg {
        let (schema, url) = location.split_once('\t').expect("schema<TAB>url");
        Pg {
            place: PgPlace::new(url, schema).unwrap(),
            owned: false,
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let schema = self.place.schema.clone();
        let url = self.place.url.clone();
        // Its own thread and runtime: a drop may run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            })
        })
        .join();
    }
}

log_conformance_tests!(postgres, Pg::new, needs = available);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A writer whose place was taken (another engine bumped the epoch after
/// the lock was lost) can no longer append, even though its connection
/// works; what it appended before stays, and the new writer continues the
/// chain.
#[test]
fn a_writer_whose_epoch_was_taken_is_fenced() {
    if !available() {
        return;
    }
    let pg = Pg::new();
    block_on(async {
        let old = open_postgres(&pg.place).unwrap();
        old.append(vec![ev(job(1), 1), ev(job(1), 2)]).await.unwrap();
        // What a new leader does once the old one's lock is gone: here the
        // lock is still held, so bump the epoch behind its back.
        let (c, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let s = &pg.place.schema;
        c.execute(&format!("UPDATE {s}.leader SET epoch = epoch + 1"), &[])
            .await
            .unwrap();
        let e = old.append(vec![ev(job(1), 3)]).await.unwrap_err().to_string();
        assert!(e.contains("fenced"), "{e}");
        // Poisoned: no later append gets through either.
        assert!(old.append(vec![ev(job(2), 4)]).await.is_err());
        drop(old);
        let new = open_waiting(&pg.place).unwrap();
        assert_eq!(new.last_seq(), 2);
        assert_eq!(new.append(vec![ev(job(2), 5)]).await.unwrap(), vec![3]);
        assert!(recman_events::audit::audit(&*new).is_clean());
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {s}.records"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 3);
    });
}

/// A writer whose lease ran out (here: set back behind its back, as if it
/// had been paused past it) can neither renew nor commit; a second writer
/// finds the lease expired while the lock is still held, ends the holder's
/// sessions, takes the lock and the next epoch, and continues the chain.
#[test]
fn a_writer_whose_lease_expired_is_fenced_and_replaced() {
    use recman_events::log::lease::LeaseOptions;
    use recman_events::log::open_postgres_with;
    if !available() {
        return;
    }
    let pg = Pg::new();
    let opts = LeaseOptions {
        lease: Duration::from_secs(1),
    };
    block_on(async {
        let old = open_postgres_with(&pg.place, opts).unwrap();
        old.append(vec![ev(job(1), 1)]).await.unwrap();
        let lease = old.lease().expect("a writer holds a lease");
        // Renewed while it runs: still valid after three leases.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(lease.check().is_ok(), "{:?}", lease.lost());
        assert!(
            lease.renew_age() < Duration::from_secs(1),
            "{:?}",
            lease.renew_age()
        );
        // A second writer meanwhile: refused, the lease is live.
        let e = open_postgres_with(&pg.place, opts).err().unwrap().to_string();
        assert!(e.contains("in use") && e.contains("lease until"), "{e}");
        let (c, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let s = &pg.place.schema;
        c.execute(
            &format!("UPDATE {s}.leader SET lease_until = clock_timestamp() - interval '1 second'"),
            &[],
        )
        .await
        .unwrap();
        // Its next renewal (every 200 ms) matches no row: it knows.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(lease.check().unwrap_err().to_string().contains("fenced"));
        let new = open_postgres_with(&pg.place, opts).unwrap();
        let new_lease = new.lease().unwrap();
        assert_eq!(new_lease.epoch, lease.epoch + 1);
        assert!(new_lease.took_from_expired);
        let e = old.append(vec![ev(job(1), 2)]).await.unwrap_err().to_string();
        assert!(e.contains("fenced"), "{e}");
        assert!(lease.check().is_err(), "the old writer knows it lost the lease");
        assert_eq!(new.append(vec![ev(job(2), 3)]).await.unwrap(), vec![2]);
        assert!(recman_events::audit::audit(&*new).is_clean());
        drop(old);
        drop(new);
    });
}

/// Each writable open takes a higher epoch and says who holds the log.
#[test]
fn every_writer_takes_a_higher_epoch_and_names_itself() {
    if !available() {
        return;
    }
    let pg = Pg::new();
    let a = PgStore::open(pg.place.clone(), Mode::Write).unwrap();
    let first = a.epoch.unwrap();
    let e = PgStore::open(pg.place.clone(), Mode::Write)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("in use") && e.contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    drop(a);
    let b = PgStore::open(pg.place.clone(), Mode::Write).unwrap();
    assert_eq!(b.epoch, Some(first + 1));
}

/// Reading a log that is not there creates nothing and says where it looked.
#[test]
fn reading_a_missing_log_creates_nothing() {
    if !available() {
        return;
    }
    let pg = Pg::new();
    let e = open_postgres_for_reading(&pg.place).err().unwrap().to_string();
    assert!(e.contains("no event log") && e.contains(&pg.place.schema), "{e}");
    assert!(
        !e.contains("postgresql://postgres:"),
        "no password in messages: {e}"
    );
    block_on(async {
        let (c, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
                &[&pg.place.schema],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    });
}

/// A schema name is spliced into SQL as an identifier: only plain names pass.
#[test]
fn schema_names_that_are_not_plain_identifiers_are_refused() {
    for bad in [
        "",
        "Recman",
        "1log",
        "log;drop table x",
        "a\"b",
        "a.b",
        &"x".repeat(64),
    ] {
        let e = PgPlace::new("postgresql://u@127.0.0.1/db", bad).err();
        assert!(e.is_some(), "{bad:?} was accepted");
    }
    assert!(PgPlace::new("postgresql://u@127.0.0.1/db", "recman_log2").is_ok());
    assert!(PgPlace::new("not a url ://", "recman").is_err());
}

/// The meta table (the events relay's cursor lives there) keeps a value
/// across opens and processes; an unset key is `None`.
#[test]
fn meta_values_outlive_the_store_that_wrote_them() {
    if !available() {
        return;
    }
    let pg = Pg::new();
    let w = PgStore::open(pg.place.clone(), Mode::Write).unwrap();
    assert_eq!(w.get_meta("events_relay_cursor").unwrap(), None);
    w.set_meta("events_relay_cursor", 41).unwrap();
    w.set_meta("events_relay_cursor", 42).unwrap();
    drop(w);
    let r = PgStore::open(pg.place.clone(), Mode::Read).unwrap();
    assert_eq!(r.get_meta("events_relay_cursor").unwrap(), Some(42));
}
