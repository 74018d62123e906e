//! The HTTP API beside a running engine, the one assembly `recman up` and
//! `recman engine --listen` share: the address, token and TLS rules ([`Plan`]),
//! the projection and the bound socket ([`Bound`]), then the server, its
//! view follower, readiness and `DATA_DIR/server.json` ([`Running`]).
//!
//! Order at start: [`Plan::new`] before anything is opened (a refused
//! address leaves no trace), [`Plan::bind`] once the log is open (an address
//! in use fails before the engine starts), [`Bound::start`] once the engine
//! runs. At shutdown: [`Running::stop`] once the engine stopped (the streams
//! end, in-flight requests finish), [`Announced::remove`] once the log is
//! closed (whoever reads the discovery file next can open the log).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use recman_config::Config;
use recman_events::EventLog;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::auth::Users;
use super::discovery::{self, Discovery};
use super::instrument::Stats;
use super::serve::{self, Limits};
use super::tls::Tls;
use super::Shared;
use crate::checkpoint::CheckpointStore;
use crate::handle::Caller;
use crate::view::View;

/// Where to listen, with what token, TLS and limits; checked, nothing
/// opened yet.
pub struct Plan {
    listen: SocketAddr,
    users: Option<Users>,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    console: crate::console::Console,
}

impl Plan {
    /// The API on `listen`, with the config's `[api]` users (or token),
    /// TLS and limits. Refuses a non-loopback address without users or
    /// `[api] token_file`, or without TLS unless `[api] insecure_http` says
    /// so knowingly.
    pub fn new(config: &Config, listen: SocketAddr) -> anyhow::Result<Plan> {
        let users = Users::load(&config.api)?;
        if !listen.ip().is_loopback() && users.is_none() {
            bail!(
                "refusing to listen on {listen}: it is not a loopback address and no bearer token is set; \
                 add users to the config (`[[api.user]]`, their token files written by `recman user add`), \
                 or name a token file (`[api] token_file = \"/etc/recman/token\"`), or listen on 127.0.0.1"
            );
        }
        let tls = config.api.tls().map(|(c, k)| Tls::load(c, k)).transpose()?;
        if !listen.ip().is_loopback() && tls.is_none() {
            if !config.api.insecure_http {
                bail!(
                    "refusing to listen on {listen}: it is not a loopback address and the API has no TLS \
                     (the token would cross the network in clear); name a certificate and its key in the \
                     config (`[api] tls_cert`, `tls_key`, PEM), or set `insecure_http = true` knowingly, \
                     or listen on 127.0.0.1"
                );
            }
            tracing::warn!(
                "the API listens on {listen} without TLS (`[api] insecure_http = true`): \
                 the bearer token crosses the network in clear"
            );
        }
        let limits = Limits {
            header_timeout: config.api.header_timeout.unwrap_or(serve::DEFAULT_HEADER_TIMEOUT),
            max_connections: config
                .api
                .max_connections
                .map_or(serve::DEFAULT_MAX_CONNECTIONS, |n| n as usize),
        };
        let console = crate::console::Console::new(config, tls.is_some());
        Ok(Plan {
            listen,
            users,
            tls,
            limits,
            console,
        })
    }

    /// Builds the read projection of `log` (retention, policies and
    /// schedules of `config`): from the newest valid checkpoint of `store`
    /// with a view section and the log after it, else from the whole log;
    /// then binds the address.
    pub async fn bind(
        self,
        config: &Config,
        log: &dyn EventLog,
        store: Option<&dyn CheckpointStore>,
    ) -> anyhow::Result<Bound> {
        let started = std::time::Instant::now();
        let retention: BTreeMap<_, _> = config
            .targets
            .iter()
            .map(|t| (t.id.clone(), t.keep_last))
            .collect();
        let policies = config
            .targets
            .iter()
            .map(|t| (t.id.clone(), crate::runtime::retention_policy(t)))
            .collect();
        let view = View::new(retention)
            .with_bounds(
                crate::runtime::bounds(config),
                config.engine.recent_finished as usize,
            )
            .with_policies(policies)
            .with_schedules(config.schedules.clone());
        let (view, resumed) = crate::checkpoint::resume_view(view, log, store).await?;
        tracing::info!(
            checkpoint = ?resumed.from,
            tail = resumed.tail,
            ms = crate::checkpoint::took(started),
            "API view rebuilt"
        );
        let listen = self.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (in use? try --listen 127.0.0.1:PORT)"))?;
        Ok(Bound {
            plan: self,
            listener,
            view,
        })
    }
}

/// The socket bound and the view built; the engine not yet asked.
pub struct Bound {
    plan: Plan,
    listener: TcpListener,
    view: View,
}

impl Bound {
    /// Serves the API for `engine`, then announces it in `data_dir`'s
    /// discovery file.
    pub fn start(
        self,
        engine: Caller,
        log: Arc<dyn EventLog>,
        stats: Arc<Stats>,
        data_dir: &Path,
    ) -> anyhow::Result<Running> {
        let local = self.listener.local_addr()?;
        let (stopping_tx, stopping) = watch::channel(false);
        let seq0 = self.view.last_seq;
        let shared = Arc::new(Shared {
            log,
            view: RwLock::new(self.view),
            seen: watch::channel(seq0).0,
            engine,
            ready: AtomicBool::new(false),
            users: self.plan.users,
            stats,
            stopping,
            console: self.plan.console,
        });
        let follower = tokio::spawn(super::follow(shared.clone()));
        let readiness = tokio::spawn(super::wait_ready(shared.clone()));
        let mut stop_rx = stopping_tx.subscribe();
        let http_stop = async move {
            let _ = stop_rx.wait_for(|v| *v).await;
        };
        let app = super::router(shared.clone());
        let tls = self.plan.tls;
        let reload = {
            let tls = tls.clone();
            let users = super::auth::reload_on_hangup(shared.clone());
            tokio::spawn(async move {
                match tls {
                    Some(t) => tokio::join!(t.reload_on_hangup(), users).0,
                    None => users.await,
                }
            })
        };
        let http = tokio::spawn(serve::serve(
            self.listener,
            app,
            self.plan.limits,
            tls.clone(),
            http_stop,
        ));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{local}");
        let pid = std::process::id();
        discovery::write(
            data_dir,
            &Discovery {
                url: url.clone(),
                pid,
                token_required: shared.users.is_some(),
                started_at_ms: recman_events::clock::now_ms(),
                tls_cert: tls.as_ref().map(|t| t.cert().to_path_buf()),
            },
        )
        .with_context(|| format!("writing {}", discovery::path(data_dir).display()))?;
        Ok(Running {
            url,
            http,
            stopping: stopping_tx,
            tasks: [follower, readiness, reload],
            shared,
            announced: Announced {
                data_dir: data_dir.to_path_buf(),
                pid,
            },
        })
    }
}

/// The API serving; announced in the discovery file.
pub struct Running {
    /// Base URL, e.g. `http://127.0.0.1:7080` (`https://` with TLS).
    pub url: String,
    http: JoinHandle<std::io::Result<()>>,
    stopping: watch::Sender<bool>,
    tasks: [JoinHandle<()>; 3],
    shared: Arc<Shared>,
    announced: Announced,
}

impl Running {
    /// Completes if the HTTP server stops on its own (it should not), with
    /// what it said.
    pub async fn failed(&mut self) -> anyhow::Error {
        let r = (&mut self.http).await;
        anyhow::anyhow!("the HTTP server stopped: {r:?}")
    }

    /// Ends the event streams, stops accepting, lets in-flight requests
    /// finish (at most 5 s) and stops following the log. The discovery file
    /// stays until [`Announced::remove`].
    pub async fn stop(self) -> Announced {
        let _ = self.stopping.send(true);
        if !self.http.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        }
        for t in &self.tasks {
            t.abort();
        }
        drop(self.shared);
        self.announced
    }
}

/// The discovery file this process wrote.
pub struct Announced {
    data_dir: PathBuf,
    pid: u32,
}

impl Announced {
    /// Removes the discovery file if it is still this process's.
    pub fn remove(self) {
        discovery::remove(&self.data_dir, self.pid);
    }
}
