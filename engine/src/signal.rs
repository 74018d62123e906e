//! The stop signal of the long-running commands: Ctrl-C or SIGTERM.

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn stop() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
