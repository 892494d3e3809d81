//! The HTTP edge: rmcp's streamable HTTP service mounted at [`MCP_PATH`] in axum.
//!
//! The listener is injected ([`serve`] never decides where it listens) and shutdown is a
//! future, so the binary, the tests and any embedding process drive both.

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use rmcp::transport::{
    StreamableHttpServerConfig, StreamableHttpService,
    streamable_http_server::session::local::LocalSessionManager,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    server::{FixtureServer, SharedState},
    session::RequestScopedSessionManager,
};

/// The path the MCP endpoint is served on.
pub const MCP_PATH: &str = "/mcp";

/// Largest accepted POST body (256 MiB), well above rmcp's 4 MiB default, so benchmarks
/// can echo large texts.
const MAX_REQUEST_BODY_BYTES: usize = 256 * 1024 * 1024;

/// How long rmcp keeps a finished request's events for `Last-Event-ID` resumption.
/// rmcp's default (60 s) would pin every large `payload` response in memory for a minute.
const COMPLETED_CACHE_TTL: Duration = Duration::from_secs(1);

/// How long open connections get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The MCP endpoint URL for a server listening on `addr`.
pub fn mcp_url(addr: SocketAddr) -> String {
    format!("http://{addr}{MCP_PATH}")
}

/// Serves the fixture on `listener` until `shutdown` completes, then drains.
///
/// Sessions are stateful (`Mcp-Session-Id`) and a POSTed request is answered as an SSE
/// stream. Requests must carry a loopback `Host` (`127.0.0.1`, `localhost` or `[::1]`,
/// any port) or the listener's own address, which is rmcp's DNS-rebinding protection.
/// When `shutdown` completes, every session and SSE stream is cancelled and in-flight
/// connections get a few seconds to finish.
///
/// # Errors
///
/// Returns the I/O error if the listener's address cannot be read or serving fails.
pub async fn serve(
    listener: TcpListener,
    generated_tools: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_state(listener, SharedState::new(generated_tools), shutdown).await
}

/// Serves the fixture with a prepared `state` (for example
/// [`SharedState::with_conformance`]) on `listener`, as [`serve`] does.
///
/// # Errors
///
/// Returns the I/O error if the listener's address cannot be read or serving fails.
pub async fn serve_state(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let generated_tools = state.generated_tools();
    let required = state
        .required_header()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()));
    let traceparents = state.traceparent_log().cloned();
    let conformance = state.conformance();
    let state = Arc::new(state);
    let cancel = CancellationToken::new();

    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(addr))
        .with_max_request_body_bytes(MAX_REQUEST_BODY_BYTES)
        .with_cancellation_token(cancel.child_token());
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.completed_cache_ttl = COMPLETED_CACHE_TTL;
    let service = StreamableHttpService::new(
        move || Ok(FixtureServer::new(state.clone())),
        Arc::new(RequestScopedSessionManager::new(sessions)),
        config,
    );
    let mut router = axum::Router::new().route_service(MCP_PATH, service);
    if conformance {
        let pending = crate::reconnect::Pending::default();
        router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                crate::reconnect::layer(pending.clone(), req, next)
            },
        ));
    }
    if let Some((name, value)) = required {
        // An upstream with credentials: 401 without the header (its value never echoed).
        router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let ok = req
                    .headers()
                    .get(name.as_str())
                    .is_some_and(|v| v.as_bytes() == value.as_bytes());
                async move {
                    if ok {
                        next.run(req).await
                    } else {
                        axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::UNAUTHORIZED,
                            "missing or wrong credentials",
                        ))
                    }
                }
            },
        ));
    }

    if let Some(log) = traceparents {
        router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                if let Some(v) = req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                {
                    log.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(v.to_owned());
                }
                next.run(req)
            },
        ));
    }

    tracing::info!(%addr, generated_tools, "serving MCP at {}", mcp_url(addr));
    let stop = cancel.clone();
    // Nagle's algorithm would hold the SSE body write behind the header write until the
    // client's delayed ACK (about 40 ms per request): disable it on every connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }

    // Cancelling the token ends every session and SSE stream (standalone GET streams
    // never end by themselves), which lets the graceful shutdown complete.
    tracing::info!("shutting down");
    cancel.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("connections still open after the grace period; closing");
            Ok(())
        }
    }
}

/// Hosts accepted in the `Host` header: rmcp's loopback defaults (any port) plus the
/// listener's own address, in case it is not a loopback one.
fn allowed_hosts(addr: SocketAddr) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
        hosts.push(addr.to_string());
    }
    hosts
}
