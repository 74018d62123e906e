//! Who calls the API and what they may do: a bearer token resolves to a
//! [`User`] in one place ([`authenticate`], also for the console's session
//! cookie), the user's role is checked against the least role each operation
//! needs ([`Access`], given per route in `super::endpoints`), and a user with
//! a target scope may act only on the targets it matches ([`User::check_target`]).
//!
//! Token files of `[[api.user]]` hold the SHA-256 of the token in hex
//! (`recman user add` writes them), never the token; the single
//! `[api] token_file` (a plain token) is the admin user `admin`. Every
//! comparison runs in constant time over every user.

use std::path::Path;

use anyhow::{bail, Context};
use axum::http::StatusCode;
use recman_config::{ApiConfig, Role, LEGACY_ADMIN};

use super::{ApiError, Shared};
use crate::client::read_token;

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token: health, readiness, the OpenAPI document.
    Public,
    /// A user with this role or a higher one.
    Role(Role),
}

impl Access {
    /// `public`, `viewer`, `operator` or `admin` (the OpenAPI document's
    /// `x-recman-role`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Role(r) => r.as_str(),
        }
    }
}

/// A caller the server recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Recorded as `by` in the events the user causes.
    pub name: String,
    pub role: Role,
    /// Target patterns (`*`, `?`); empty: every target.
    pub targets: Vec<String>,
}

/// The caller of a server with no token at all (loopback only): may do
/// everything, as before users existed.
pub const ANONYMOUS: &str = "anonymous";

impl User {
    fn anonymous() -> User {
        User {
            name: ANONYMOUS.into(),
            role: Role::Admin,
            targets: Vec::new(),
        }
    }

    /// Whether the user may act on `target`.
    pub fn may_act_on(&self, target: &str) -> bool {
        recman_config::in_scope(&self.targets, target)
    }

    /// A 403 naming the target and the user when `target` is beyond the
    /// user's scope.
    pub fn check_target(&self, target: &str) -> Result<(), ApiError> {
        if self.may_act_on(target) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "target_forbidden",
            format!(
                "user {} may not act on target {target} (its scope is {})",
                self.name,
                self.targets.join(", ")
            ),
        ))
    }

    /// A 403 naming the role needed when the user's role is below `need`.
    pub fn check_role(&self, need: Role, what: &str) -> Result<(), ApiError> {
        if self.role >= need {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{what} needs the role {need}; user {} has the role {}",
                self.name, self.role
            ),
        ))
    }
}

/// The users of a server that wants a token. Their token files are read
/// again on SIGHUP ([`reload_on_hangup`]), so a token rotated with `recman
/// user add` takes effect without a restart; the set of users and their
/// roles is the config's at start.
pub struct Users {
    /// Where the tokens are (`[api] token_file`, `[[api.user]]`).
    api: ApiConfig,
    tokens: std::sync::RwLock<Tokens>,
}

/// The tokens as last read.
struct Tokens {
    /// `[[api.user]]` with the SHA-256 of their token.
    hashed: Vec<(User, [u8; 32])>,
    /// `[api] token_file`: the admin `admin`, with the plain token.
    legacy: Option<(User, String)>,
}

impl Tokens {
    fn read(api: &ApiConfig) -> anyhow::Result<Tokens> {
        let legacy = api
            .token_file
            .as_deref()
            .map(|f| {
                read_token(f).map(|t| {
                    let admin = User {
                        name: LEGACY_ADMIN.into(),
                        role: Role::Admin,
                        targets: Vec::new(),
                    };
                    (admin, t)
                })
            })
            .transpose()?;
        let hashed = api
            .users
            .iter()
            .map(|u| {
                let hash = read_hash(&u.token_file)
                    .with_context(|| format!("the token file of API user {}", u.name))?;
                let user = User {
                    name: u.name.clone(),
                    role: u.role,
                    targets: u.targets.clone(),
                };
                Ok((user, hash))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Tokens { hashed, legacy })
    }
}

impl Users {
    /// The users of `[api]`; `None` when it names no token at all (then the
    /// API is open, on loopback only). Every token file must read.
    pub fn load(api: &ApiConfig) -> anyhow::Result<Option<Users>> {
        if api.token_file.is_none() && api.users.is_empty() {
            return Ok(None);
        }
        let tokens = Tokens::read(api)?;
        Ok(Some(Users {
            api: api.clone(),
            tokens: std::sync::RwLock::new(tokens),
        }))
    }

    /// Reads every token file again; on an error the tokens in use stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let tokens = Tokens::read(&self.api)?;
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
        Ok(())
    }

    /// The user whose token this is. Every user is compared, in constant
    /// time, whatever matched first.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let digest = sha256(token);
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for (user, hash) in &tokens.hashed {
            if constant_time_eq(&digest, hash) && found.is_none() {
                found = Some(user);
            }
        }
        if let Some((user, plain)) = &tokens.legacy {
            if constant_time_eq(token.as_bytes(), plain.as_bytes()) && found.is_none() {
                found = Some(user);
            }
        }
        found.cloned()
    }
}

/// Reads the users' token files again on every SIGHUP until the process
/// ends (spawn it); a file that does not read keeps every token as it was
/// and says why.
pub async fn reload_on_hangup(s: std::sync::Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Some(users) = &s.users else {
        return;
    };
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: the API users' token files are not read again");
        return;
    };
    while hup.recv().await.is_some() {
        match users.reload() {
            Ok(()) => tracing::info!("SIGHUP: the API users' token files were read again"),
            Err(e) => tracing::error!(
                "SIGHUP: the API keeps its users' tokens as they were, reading them failed: {e:#}"
            ),
        }
    }
}

/// The user of `token` on this server: with no token configured, the
/// anonymous admin of a loopback API; `None` when the token is unknown.
pub fn authenticate(s: &Shared, token: &str) -> Option<User> {
    match &s.users {
        None => Some(User::anonymous()),
        Some(users) => users.authenticate(token),
    }
}

/// Whether the server wants a token at all.
pub fn required(s: &Shared) -> bool {
    s.users.is_some()
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The lowercase hex SHA-256 of a token: what a user's token file holds.
pub fn token_hash_hex(token: &str) -> String {
    hex(&sha256(token))
}

fn sha256(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a user's token file: 64 hex digits (the SHA-256 of the token).
fn read_hash(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t = text.lines().next().unwrap_or("").trim();
    parse_hash(t).with_context(|| {
        format!(
            "{} must hold the SHA-256 of the token as 64 hex digits (write it with `recman user add`), \
             not the token itself",
            path.display()
        )
    })
}

fn parse_hash(t: &str) -> anyhow::Result<[u8; 32]> {
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("found {} characters that are not 64 hex digits", t.len());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// A new random token: 32 bytes from the kernel's CSPRNG, in hex.
pub fn new_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(format!("rm_{}", hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let user = |name: &str, role| User {
            name: name.into(),
            role,
            targets: Vec::new(),
        };
        Users {
            api: ApiConfig::default(),
            tokens: std::sync::RwLock::new(Tokens {
                hashed: vec![
                    (user("alice", Role::Operator), {
                        parse_hash(&token_hash_hex("alice-token")).unwrap()
                    }),
                    (
                        user("bob", Role::Viewer),
                        parse_hash(&token_hash_hex("bob-token")).unwrap(),
                    ),
                ],
                legacy: Some((user("admin", Role::Admin), "plain".into())),
            }),
        }
    }

    #[test]
    fn a_token_resolves_to_its_user_and_nothing_else_does() {
        let u = users();
        assert_eq!(u.authenticate("alice-token").unwrap().name, "alice");
        assert_eq!(u.authenticate("bob-token").unwrap().role, Role::Viewer);
        assert_eq!(u.authenticate("plain").unwrap().name, "admin");
        for wrong in [
            "",
            "alice",
            "alice-token ",
            "plai",
            &token_hash_hex("alice-token"),
        ] {
            assert_eq!(u.authenticate(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn a_token_file_must_hold_a_hash() {
        let h = token_hash_hex("x");
        assert_eq!(h.len(), 64);
        assert!(parse_hash(&h).is_ok());
        assert!(parse_hash(&h.to_uppercase()).is_ok());
        for bad in ["x", "", &h[1..], &format!("{h}0"), &format!("{}g", &h[1..])] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
        let t = new_token().unwrap();
        assert!(t.len() == 67 && t != new_token().unwrap());
    }

    #[test]
    fn roles_are_ordered_and_a_refusal_names_what_is_needed() {
        let bob = User {
            name: "bob".into(),
            role: Role::Viewer,
            targets: vec!["pg-*".into()],
        };
        let e = bob.check_role(Role::Operator, "POST /v1/snapshots").unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.detail.message.contains("operator") && e.detail.message.contains("bob"),
            "{}",
            e.detail.message
        );
        assert!(bob.check_role(Role::Viewer, "x").is_ok());
        assert!(bob.check_target("pg-main").is_ok());
        let e = bob.check_target("db01").unwrap_err();
        assert_eq!(e.detail.code, "target_forbidden");
        assert!(e.detail.message.contains("db01") && e.detail.message.contains("bob"));
    }
}
