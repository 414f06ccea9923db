//! Tracing setup shared by the server binaries: one place decides where log lines go
//! (stderr) and how the level is chosen (flag first, then `RUST_LOG`, then `info`).

use tracing_subscriber::EnvFilter;

/// The filter used when neither `--log-level` nor `RUST_LOG` says otherwise. At `info`
/// a node logs lifecycle events (start, stop) and the core's events (elections, role and
/// leader changes, transfers, membership changes, snapshot sends and installs), never
/// one line per request.
pub const DEFAULT_FILTER: &str = "info";

/// Why the log filter was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid log level {spec:?}: {reason} (examples: info, debug, warn,kv_node=debug)")]
pub struct LogLevelError {
    spec: String,
    reason: String,
}

/// Installs the global tracing subscriber, writing to stderr. `level` is an `EnvFilter`
/// directive string (`info`, `debug`, `warn,kv_node=trace`); `None` falls back to
/// `RUST_LOG`, then [`DEFAULT_FILTER`]. Calling it twice keeps the first subscriber (so
/// in-process tests may call it freely).
pub fn init(level: Option<&str>) -> Result<(), LogLevelError> {
    let filter = match level {
        Some(spec) => EnvFilter::try_new(spec).map_err(|e| LogLevelError {
            spec: spec.to_string(),
            reason: e.to_string(),
        })?,
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        }
    };
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line stderr cannot take (its pipe's reader went away) is dropped: the
        // subscriber's own report of it would go through eprintln!, whose panic on a
        // closed pipe would stop the node.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    Ok(())
}
