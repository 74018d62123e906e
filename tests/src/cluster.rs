//! The private three-node RabbitMQ cluster of the fault tests
//! (`tests/services/rabbitmq-cluster.sh`, started by `tests/run`): its URLs,
//! a vhost of the test's own on it, and what a test does to a node (kill -9,
//! SIGSTOP/SIGCONT, stop and start, find the leader of a queue). Without the
//! cluster a test skips (`recman_testkit::skip`).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_testkit::need_env;

/// The three nodes' AMQP URLs, space-separated (node 1, 2, 3).
pub const URLS_VAR: &str = "RECMAN_TEST_CLUSTER_URLS";
/// The cluster's control script (`ctl N rabbitmqctl-args…`, `ctl kill N`, …).
pub const CTL_VAR: &str = "RECMAN_TEST_CLUSTER_CTL";

const HOW: &str =
    "start the private cluster: `source tests/services/rabbitmq-cluster.sh && rmqc_start`; tests/run does";

/// A vhost of its own on the cluster; deleted on drop.
pub struct Cluster {
    ctl: String,
    pub vhost: String,
    /// One URL per node (1, 2, 3), with this vhost.
    pub urls: Vec<String>,
}

impl Cluster {
    /// The vhost `<test>-<pid>` on the cluster, or `None` after a skip.
    #[track_caller]
    pub fn new(test: &str) -> Option<Cluster> {
        let urls = need_env(URLS_VAR, HOW)?;
        let ctl = need_env(CTL_VAR, HOW)?;
        let urls: Vec<&str> = urls.split_whitespace().collect();
        assert_eq!(urls.len(), 3, "{URLS_VAR} must hold three URLs: {urls:?}");
        let vhost = format!("{test}-{}", std::process::id());
        let c = Cluster {
            ctl,
            urls: urls
                .iter()
                .map(|u| recman_testkit::amqp::with_vhost(u, &vhost))
                .collect(),
            vhost,
        };
        let user = recman_testkit::amqp::user(urls[0]).to_string();
        c.ctl_ok(&["1", "add_vhost", &c.vhost]);
        c.ctl_ok(&["1", "set_permissions", "-p", &c.vhost, &user, ".*", ".*", ".*"]);
        Some(c)
    }

    /// Runs the control script; its stdout, or the failure's text.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.ctl)
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", self.ctl))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{} {args:?}: {}{}",
                self.ctl,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// [`Cluster::ctl`], panicking when it fails.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        self.ctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The node name of node `n` (1, 2, 3).
    pub fn name(&self, n: usize) -> String {
        self.ctl_ok(&["name", &n.to_string()]).trim().to_string()
    }

    /// The node (1, 2, 3) that leads quorum queue `queue`, asked of any
    /// running node; `None` while there is no leader.
    pub fn leader(&self, queue: &str) -> Option<usize> {
        for n in 1..=3 {
            let Ok(out) = self.ctl(&[
                &n.to_string(),
                "list_queues",
                "-p",
                &self.vhost,
                "--no-table-headers",
                "--quiet",
                "name",
                "leader",
            ]) else {
                continue;
            };
            for line in out.lines() {
                let mut cols = line.split_whitespace();
                if cols.next() == Some(queue) {
                    let leader = cols.next().unwrap_or_default();
                    return (1..=3).find(|&m| self.name(m) == leader);
                }
            }
        }
        None
    }

    /// Waits (up to 120 s) until all three nodes run the app, form one
    /// cluster and report no partition.
    pub fn wait_healthy(&self) {
        if let Err(last) = self.healthy_within(Duration::from_secs(120)) {
            panic!("the cluster did not heal within 120 s: {last}");
        }
    }

    /// Waits up to `within` until all three nodes run, form one cluster and
    /// report no partition; the last status seen when they do not.
    pub fn healthy_within(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            let healthy =
                (1..=3).all(
                    |n| match self.ctl(&[&n.to_string(), "cluster_status", "--formatter", "json"]) {
                        Ok(s) => {
                            let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
                            let running = v["running_nodes"].as_array().map_or(0, Vec::len);
                            let partitions = v["partitions"].as_object().map_or(0, |p| p.len());
                            last = format!("node {n}: {running} running, partitions {}", v["partitions"]);
                            running == 3 && partitions == 0
                        }
                        Err(e) => {
                            last = e;
                            false
                        }
                    },
                );
            if healthy {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The nodes (1, 2, 3) holding a replica of some quorum queue of the
    /// vhost that is not online, with the queue: `list_queues members online`
    /// asked of the first node that answers.
    pub fn offline_replicas(&self) -> Vec<(String, usize)> {
        for n in 1..=3 {
            let Ok(out) = self.ctl(&[
                &n.to_string(),
                "list_queues",
                "-p",
                &self.vhost,
                "name",
                "members",
                "online",
                "--formatter",
                "json",
            ]) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            let names: Vec<String> = (1..=3).map(|m| self.name(m)).collect();
            let mut offline = Vec::new();
            for q in v.as_array().into_iter().flatten() {
                let list = |k: &str| -> Vec<String> {
                    q[k].as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                };
                let online = list("online");
                for m in list("members") {
                    if !online.contains(&m) {
                        if let Some(i) = names.iter().position(|x| *x == m) {
                            offline.push((q["name"].as_str().unwrap_or("?").to_string(), i + 1));
                        }
                    }
                }
            }
            return offline;
        }
        Vec::new()
    }

    /// The nodes (1, 2, 3) whose member of quorum queue `queue` is neither
    /// leader nor follower (a member RabbitMQ does not count toward the
    /// queue's quorum, though its node is up: `check_if_node_is_quorum_critical`
    /// counts only those two states), with the state seen; asked of the
    /// first node that answers `rabbitmq-queues quorum_status`.
    pub fn stuck_members(&self, queue: &str) -> Vec<(usize, String)> {
        for n in 1..=3 {
            let Ok(out) = self.ctl(&[
                "queues",
                &n.to_string(),
                "quorum_status",
                queue,
                "--vhost",
                &self.vhost,
                "--formatter",
                "json",
            ]) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            let names: Vec<String> = (1..=3).map(|m| self.name(m)).collect();
            let mut stuck = Vec::new();
            for member in v.as_array().into_iter().flatten() {
                let node = member["Node Name"].as_str().unwrap_or_default();
                let state = member["Raft State"].as_str().unwrap_or("?").to_string();
                if !matches!(state.as_str(), "leader" | "follower") {
                    if let Some(i) = names.iter().position(|x| x == node) {
                        stuck.push((i + 1, state));
                    }
                }
            }
            return stuck;
        }
        Vec::new()
    }

    /// A bus on the vhost that knows every node (a publisher's, a subscriber's).
    pub async fn bus(&self, name: &str) -> Arc<AmqpBus> {
        let opts = AmqpOptions {
            connection_name: name.into(),
            quorum_group_size: Some(3),
            ..Default::default()
        };
        AmqpBus::connect_any(&self.urls, opts)
            .await
            .expect("connect to the cluster")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.ctl(&["1", "delete_vhost", &self.vhost]);
    }
}
