//! The binaries' own code, as a library so that its fuzz targets and tests reach it: the entry
//! point ([`app`]), the command line ([`cli`], [`config`]), logging ([`logging`]), the client
//! commands and `dev` (the benchmarks are the `hivemind-bench` crate, `bench/`). `hivemind`
//! (`main.rs`) and `hivemind-lite` (`lite/`, this crate without its `control-plane` feature:
//! no openraft, no fjall, no `dev`, no `--control-plane`) both call [`app::main`]. Signals are handled by [`shutdown_on_signal`]
//! and the binary only; the crates take a cancellation token.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
#[cfg(feature = "control-plane")]
pub mod dev;
pub mod logging;
pub mod tls;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
        signal_token.cancel();
    });
    shutdown
}
