//! The stop signal both node kinds drain on.

/// Wait for SIGTERM (Kubernetes stopping the pod) or Ctrl-C; returns the signal's name.
pub async fn stop_signal() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
