//! Graceful shutdown: one [`CancellationToken`] cancelled by SIGTERM or ctrl-c and passed
//! down to every loop and server (never a global).

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A token that is cancelled when the process receives SIGTERM or ctrl-c. The handlers
/// are installed before this returns, so a signal sent the moment the service says it
/// serves is handled, not the default action (death by the signal, no clean exit).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    let signalled = installed_handlers();
    tokio::spawn(async move {
        signalled.await;
        tracing::info!("shutdown requested");
        trigger.cancel();
    });
    token
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either signal.
#[cfg(unix)]
fn installed_handlers() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                only.recv().await;
            }
            (Err(_), Err(_)) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Ctrl-c where there are no Unix signals.
#[cfg(not(unix))]
fn installed_handlers() -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    /// The signal is sent before the runtime has run anything else: a handler installed
    /// only once the spawned task first ran would leave SIGTERM's default action in
    /// place, and this test process would die of it.
    #[tokio::test]
    async fn a_sigterm_sent_right_after_setup_cancels_the_token() {
        let token = super::on_signal();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), token.cancelled())
            .await
            .expect("cancelled by the SIGTERM");
    }
}
