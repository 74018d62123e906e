//! The console's server-side sessions: a random id (the cookie) maps to the
//! bearer token the session was opened with and a CSRF token; the table is
//! bounded and every entry expires (idle and absolute).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

/// The cookie that carries the session id.
pub const COOKIE: &str = "recman_session";
/// Sessions held at most; opening one more drops the one closest to expiry.
pub const MAX_SESSIONS: usize = 256;
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(60 * 60);
/// A session ends this long after login, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);

/// What a session stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The bearer token given at login: sent on as `Authorization`, so the
    /// API's `auth` decides what the session may do.
    pub token: String,
    /// Sent back by the page in `X-CSRF-Token` (or the `csrf` form field).
    pub csrf: String,
    /// Who logged in, when the server knows (shown in the header).
    pub user: Option<String>,
}

struct Entry {
    session: Session,
    created: Instant,
    used: Instant,
}

impl Entry {
    fn expires(&self) -> Instant {
        (self.used + IDLE).min(self.created + ABSOLUTE)
    }
}

/// The session table.
pub struct Sessions {
    table: Mutex<HashMap<String, Entry>>,
    rng: SystemRandom,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            table: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
        }
    }
}

/// 32 random bytes as hex; `None` if the system's generator failed.
fn random_hex(rng: &SystemRandom) -> Option<String> {
    let mut b = [0u8; 32];
    rng.fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Sessions {
    /// Opens a session for `token`; returns its id (the cookie's value).
    pub fn open(&self, token: String, user: Option<String>) -> Option<(String, Session)> {
        let id = random_hex(&self.rng)?;
        let session = Session {
            token,
            csrf: random_hex(&self.rng)?,
            user,
        };
        let now = Instant::now();
        let mut t = self.table.lock().ok()?;
        t.retain(|_, e| e.expires() > now);
        while t.len() >= MAX_SESSIONS {
            let Some(oldest) = t.iter().min_by_key(|(_, e)| e.expires()).map(|(k, _)| k.clone()) else {
                break;
            };
            t.remove(&oldest);
        }
        t.insert(
            id.clone(),
            Entry {
                session: session.clone(),
                created: now,
                used: now,
            },
        );
        Some((id, session))
    }

    /// The live session of `id` (its idle clock restarts), or `None`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut t = self.table.lock().ok()?;
        let e = t.get_mut(id)?;
        if e.expires() <= now {
            t.remove(id);
            return None;
        }
        e.used = now;
        Some(e.session.clone())
    }

    /// Ends the session `id`.
    pub fn close(&self, id: &str) {
        if let Ok(mut t) = self.table.lock() {
            t.remove(id);
        }
    }

    /// Sessions held now (expired ones included until the next open).
    pub fn len(&self) -> usize {
        self.table.lock().map_or(0, |t| t.len())
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The `Set-Cookie` of a new session: HttpOnly, SameSite=Strict, Secure with TLS.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ABSOLUTE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_bounded_and_closable() {
        let s = Sessions::default();
        let (a, sa) = s.open("tok".into(), None).unwrap();
        let (b, sb) = s.open("tok".into(), None).unwrap();
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_eq!(a.len(), 64);
        assert_eq!(s.get(&a).unwrap().token, "tok");
        assert!(s.get("nope").is_none());
        s.close(&a);
        assert!(s.get(&a).is_none());
        for _ in 0..MAX_SESSIONS * 2 {
            s.open("t".into(), None).unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS, "the table never grows past its bound");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(cookie("a=1; recman_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("recman_sessionx=1", COOKIE), None);
        assert!(set_cookie("i", true).contains("; Secure"));
        assert!(set_cookie("i", false).contains("HttpOnly; SameSite=Strict"));
    }
}
