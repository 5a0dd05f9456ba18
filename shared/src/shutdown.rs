//! Graceful shutdown: one `CancellationToken` for the whole process, cancelled on
//! SIGTERM (Kubernetes, `docker stop`) or Ctrl-C.
//!
//! Services pass clones of the token down to every loop; a consumer that sees it
//! cancelled stops taking new deliveries, finishes and acknowledges what it holds,
//! then closes its channel. Anything still unacknowledged when the process dies is
//! redelivered by the broker, so a hard kill loses nothing either.

pub use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or Ctrl-C.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown requested; finishing in-flight work.");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM; Ctrl-C only.");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
