//! The HTTP/1.1 server loop of `recman up`: a client must send its request
//! headers within `header_timeout` (which also closes a keep-alive connection
//! left idle that long), and at most `max_connections` are open at once (one
//! more gets a JSON 503 and is closed), so idle or slow clients can neither
//! pin the process's file descriptors nor starve `/healthz` and submits.
//! Graceful shutdown: stop accepting, let in-flight requests finish. With
//! TLS (`[api] tls_cert`) the handshake must end within `header_timeout` too.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::tls::Tls;

/// How long a client may take to send a request's headers, and how long a
/// keep-alive connection may sit idle between requests.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// Open connections at most (event streams included).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Limits of the HTTP server (`[api] header_timeout`, `[api] max_connections`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The answer to a connection over the cap, written before it is closed.
fn too_many() -> Vec<u8> {
    let body = r#"{"error":{"code":"too_many_connections","message":"the server has too many open connections; try again"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         retry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `stop` completes, then closes idle
/// connections and waits for in-flight requests (event streams end on their
/// own shutdown signal).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, closing_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut stop = pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let closing = closing_rx.clone();
        let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.current()));
        conns.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => connection(stream, app, limits, closing).await,
                Some(acceptor) => {
                    // A client that never finishes its handshake holds no slot for long.
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection(tls, app, limits, closing).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    closing.send_replace(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends, or until
/// `closing`, then lets its request in flight finish.
async fn connection<S>(io: S, app: Router, limits: Limits, mut closing: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), svc));
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// Answers a connection over the cap with a 503 (best effort, never waits).
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(&too_many());
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_is_a_well_formed_json_response() {
        let bytes = super::too_many();
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }
}
