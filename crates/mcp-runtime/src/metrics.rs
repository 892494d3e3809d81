//! The metrics listener (`--metrics-listen ADDR:PORT`, off by default): a TCP listener of its
//! own serving the Prometheus text format on `GET /metrics` (`docs/operations.md`), and the
//! same `GET /health` and `GET /ready` as the HTTP/JSON socket, so that a probe can use a TCP
//! port although the runtime's other sockets are Unix sockets. Anything else is a 404.
//!
//! The metrics themselves live in the core ([`mcp_runtime_core::metrics`]); serving this
//! listener switches them on. The listener is bound by `socket::bind_tcp` (every socket is
//! bound in `socket.rs`) and closes with the drain.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mcp_runtime_core::Runtime;
use mcp_runtime_core::metrics;
use tokio::net::TcpListener;

use crate::transport::http::{health_response, ready_response};

/// Serves `/metrics`, `/health` and `/ready` of `runtime` on `listener` until `shutdown`
/// completes. Metrics are switched on for the process ([`metrics::enable`]) before the first
/// connection is accepted.
pub async fn serve_metrics(
    runtime: Arc<Runtime>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    metrics::enable();
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(runtime);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (conn, _) = tokio::select! {
            c = listener.accept() => match c {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let served = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(conn), TowerToHyperService::new(app.clone()));
        let watched = graceful.watch(served);
        tokio::spawn(async move {
            let _ = watched.await;
        });
    }
    drop(listener);
    // A scrape takes milliseconds; one that hangs is not waited for.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), graceful.shutdown()).await;
}

async fn scrape(State(rt): State<Arc<Runtime>>) -> Response {
    let m = metrics::enable();
    m.sessions_open
        .set(i64::try_from(rt.health().open_sessions).unwrap_or(i64::MAX));
    let mut text = String::with_capacity(16 * 1024);
    if metrics::encode(m, &mut text).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([("content-type", metrics::CONTENT_TYPE)], text).into_response()
}

async fn health(State(rt): State<Arc<Runtime>>) -> Response {
    health_response(&rt)
}

async fn ready(State(rt): State<Arc<Runtime>>) -> Response {
    ready_response(&rt)
}
