//! The writer's lease on a shared log (PostgreSQL): which epoch it holds,
//! until when it may act, and why it stopped, as seen by this process.
//!
//! The store renews the lease (`pg_store`); everything that acts on the log's
//! behalf (the engine's commit task, its watchdog, the API) asks
//! [`Lease::check`]. The local deadline is the time the last successful
//! renewal was *sent* plus the lease, minus a margin: the server's lease
//! (`clock_timestamp()` of the renewal plus the lease) ends later, so a
//! leader that cannot renew stops acting before a standby may take over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::log::LogError;

/// The default lease of a writer on a PostgreSQL log.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// How a writer holds the log: its lease length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a renewal keeps the writer the leader; renewed every fifth of it.
    pub lease: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions { lease: DEFAULT_LEASE }
    }
}

impl LeaseOptions {
    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        (self.lease / 5).max(Duration::from_millis(50))
    }

    /// How long before the server's end of the lease the holder stops acting.
    pub fn margin(&self) -> Duration {
        (self.lease / 10).max(Duration::from_millis(20))
    }
}

/// The leadership this process holds on a shared log.
#[derive(Debug)]
pub struct Lease {
    pub epoch: i64,
    pub options: LeaseOptions,
    /// Milliseconds this process waited as a standby before it got the log
    /// (zero: it got it at once); see [`Lease::waited`].
    waited_ms: AtomicU64,
    /// Whether it took the log from a holder whose lease had expired
    /// (terminating that holder's sessions), rather than from a free lock.
    pub took_from_expired: bool,
    base: Instant,
    /// Milliseconds after `base` at which this process must stop acting.
    act_until_ms: AtomicU64,
    /// Milliseconds after `base` of the last successful renewal.
    renewed_ms: AtomicU64,
    lost: Mutex<Option<String>>,
}

impl Lease {
    /// A lease of `epoch` whose first grant was sent at `sent`.
    pub fn new(epoch: i64, options: LeaseOptions, sent: Instant) -> Lease {
        let l = Lease {
            epoch,
            options,
            waited_ms: AtomicU64::new(0),
            took_from_expired: false,
            base: sent,
            act_until_ms: AtomicU64::new(0),
            renewed_ms: AtomicU64::new(0),
            lost: Mutex::new(None),
        };
        l.renewed(sent);
        l
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant) {
        let until = sent + self.options.lease.saturating_sub(self.options.margin());
        self.act_until_ms.fetch_max(self.ms(until), Ordering::SeqCst);
        self.renewed_ms.fetch_max(self.ms(sent), Ordering::SeqCst);
    }

    /// The lease is gone for good (fenced, or not renewed in time).
    pub fn lose(&self, why: String) {
        let mut l = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if l.is_none() {
            *l = Some(why);
        }
    }

    /// Why this process may no longer act as the log's writer, if so.
    pub fn lost(&self) -> Option<String> {
        if let Some(why) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(why);
        }
        let now = self.ms(Instant::now());
        let until = self.act_until_ms.load(Ordering::SeqCst);
        if now >= until {
            let why = format!(
                "fenced: the lease of epoch {} on the event log was not renewed for {:.1} s \
                 (lease {:?}); this engine steps down",
                self.epoch,
                self.renew_age().as_secs_f64(),
                self.options.lease
            );
            self.lose(why.clone());
            return Some(why);
        }
        None
    }

    /// `Ok` while this process may act as the writer.
    pub fn check(&self) -> Result<(), LogError> {
        match self.lost() {
            None => Ok(()),
            Some(why) => Err(LogError::Store(why)),
        }
    }

    /// How long this process waited as a standby before it got the log.
    pub fn waited(&self) -> Duration {
        Duration::from_millis(self.waited_ms.load(Ordering::Relaxed))
    }

    /// Records the standby wait (set by whoever waited).
    pub fn set_waited(&self, d: Duration) {
        self.waited_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last successful renewal was sent.
    pub fn renew_age(&self) -> Duration {
        let now = self.ms(Instant::now());
        Duration::from_millis(now.saturating_sub(self.renewed_ms.load(Ordering::SeqCst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_not_renewed_stops_before_it_ends_and_stays_lost() {
        let opts = LeaseOptions {
            lease: Duration::from_millis(200),
        };
        let l = Lease::new(3, opts, Instant::now());
        assert!(l.check().is_ok());
        std::thread::sleep(Duration::from_millis(120));
        l.renewed(Instant::now());
        std::thread::sleep(Duration::from_millis(120));
        assert!(l.check().is_ok(), "renewed: valid for another 180 ms");
        std::thread::sleep(Duration::from_millis(80));
        let e = l.check().unwrap_err().to_string();
        assert!(e.contains("fenced") && e.contains("epoch 3"), "{e}");
        // A late renewal does not bring it back.
        l.renewed(Instant::now());
        assert!(l.check().is_err());
    }

    #[test]
    fn a_lost_lease_says_why() {
        let l = Lease::new(1, LeaseOptions::default(), Instant::now());
        l.lose("fenced: epoch 2 took over".into());
        l.lose("second reason is ignored".into());
        assert_eq!(l.lost().unwrap(), "fenced: epoch 2 took over");
    }
}
