//! The private RabbitMQ node of the tests (`tests/services/rabbitmq.sh`,
//! started by `tests/run`): its URLs, its `rabbitmqctl`, and a vhost of its
//! own per test. Without the node a test skips ([`crate::skip`]): it says why
//! by hand and fails under `CI=true`.

use std::path::PathBuf;
use std::process::Command;

use crate::skip::need_env;

/// `amqp://recman:…@127.0.0.1:PORT/recman-test`.
pub const URL_VAR: &str = "RECMAN_TEST_AMQP_URL";
/// The same node's TLS listener, `amqps://…`.
pub const AMQPS_URL_VAR: &str = "RECMAN_TEST_AMQPS_URL";
/// The throwaway CA that signed the TLS listener's certificate.
pub const CA_VAR: &str = "RECMAN_TEST_AMQP_CA";
/// A command that runs rabbitmqctl against the private node.
pub const RABBITMQCTL_VAR: &str = "RECMAN_TEST_RABBITMQCTL";

const HOW: &str =
    "start the private broker: `source tests/services/rabbitmq.sh && rabbitmq_start`; tests/run does";

/// The broker's URL, or `None` after a skip.
#[track_caller]
pub fn url() -> Option<String> {
    need_env(URL_VAR, HOW)
}

/// The broker's URL when its `rabbitmqctl` is there too (tests that restart
/// or configure the broker), or `None` after a skip.
#[track_caller]
pub fn broker() -> Option<String> {
    let url = url()?;
    need_env(RABBITMQCTL_VAR, HOW)?;
    Some(url)
}

/// The TLS listener's URL and the CA file that trusts it, or `None` after a skip.
#[track_caller]
pub fn tls() -> Option<(String, PathBuf)> {
    Some((need_env(AMQPS_URL_VAR, HOW)?, need_env(CA_VAR, HOW)?.into()))
}

/// Runs rabbitmqctl against the private node and returns its stdout; panics
/// when it fails. Call [`broker`] first.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let ctl = std::env::var_os(RABBITMQCTL_VAR)
        .unwrap_or_else(|| panic!("{RABBITMQCTL_VAR} is not set: check amqp::broker() first"));
    let out = Command::new(&ctl)
        .args(args)
        .output()
        .expect("running rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The user of an `amqp://user:password@host/vhost` URL.
pub fn user(url: &str) -> &str {
    userinfo(url).split(':').next().unwrap_or_default()
}

/// The password of an `amqp://user:password@host/vhost` URL.
pub fn password(url: &str) -> &str {
    userinfo(url).split_once(':').map_or("", |(_, p)| p)
}

fn userinfo(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.rsplit_once('@').map_or("", |(u, _)| u)
}

/// `url` with its vhost replaced by `vhost`.
pub fn with_vhost(url: &str, vhost: &str) -> String {
    let base = url.rfind('/').map_or(url, |i| &url[..i]);
    format!("{base}/{vhost}")
}

/// A vhost of its own for one test on the private broker, with every
/// permission for the broker's user; deleted on drop.
pub struct Vhost {
    pub name: String,
    /// The broker URL with this vhost.
    pub url: String,
}

impl Vhost {
    /// A vhost named `<test>-<pid>`, or `None` after a skip (no broker).
    #[track_caller]
    pub fn new(test: &str) -> Option<Vhost> {
        let base = broker()?;
        let name = format!("{test}-{}", std::process::id());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, user(&base), ".*", ".*", ".*"]);
        let url = with_vhost(&base, &name);
        Some(Vhost { name, url })
    }
}

impl Vhost {
    /// A user `<vhost>.<role>` of the node with a random password and, on
    /// this vhost, only the permissions given (regular expressions, as
    /// `rabbitmqctl set_permissions` takes them); returns its URL. Deleted
    /// with the vhost.
    pub fn user(&self, role: &str, configure: &str, write: &str, read: &str) -> String {
        let name = format!("{}.{role}", self.name);
        let pass = format!("{:016x}{:08x}", rand_u64(), std::process::id());
        rabbitmqctl(&["add_user", &name, &pass]);
        rabbitmqctl(&["set_permissions", "-p", &self.name, &name, configure, write, read]);
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("amqp", &self.url));
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{name}:{pass}@{host}")
    }
}

/// A random number from the OS, for passwords of throwaway users.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Some(ctl) = std::env::var_os(RABBITMQCTL_VAR) {
            let _ = Command::new(&ctl).args(["delete_vhost", &self.name]).output();
            // The users `user` made for it.
            let prefix = format!("{}.", self.name);
            if let Ok(out) = Command::new(&ctl)
                .args(["list_users", "--quiet", "--no-table-headers"])
                .output()
            {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if let Some(u) = line.split_whitespace().next().filter(|u| u.starts_with(&prefix)) {
                        let _ = Command::new(&ctl).args(["delete_user", u]).output();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts() {
        let u = "amqp://recman:p@ss:w0rd@127.0.0.1:5672/recman-test";
        assert_eq!(user(u), "recman");
        assert_eq!(password(u), "p@ss:w0rd");
        assert_eq!(with_vhost(u, "v1"), "amqp://recman:p@ss:w0rd@127.0.0.1:5672/v1");
        assert_eq!(user("amqp://127.0.0.1/v"), "");
    }
}
