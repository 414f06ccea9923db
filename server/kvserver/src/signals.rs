//! SIGTERM and SIGINT as one shutdown future: a server binary hands it to its event loop,
//! which stops taking input, lets the disk thread finish its batch, and exits 0.

use std::future::Future;
use tokio::signal::unix::{signal, SignalKind};

/// Installs the SIGTERM and SIGINT handlers now (so a signal that arrives before the
/// future is first polled is not lost) and returns a future that completes on the first
/// of them. Must be called inside a tokio runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}
