//! Serving one runtime over its adapters, and shutting them down: [`serve_http`] and
//! `serve_grpc` serve one socket each until a shutdown future completes (as mini-redis's
//! `server::run(listener, shutdown)`); [`Server`] runs them side by side with the idle-session
//! reaper and drains them within a grace period.

use std::sync::Arc;
use std::time::Duration;

use mcp_runtime_core::Runtime;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::host_origin::AllowLists;
use crate::listener::Admission;
use crate::policy::Policy;
use crate::transport;
#[cfg(feature = "grpc-uds")]
pub use crate::transport::grpc::GrpcSettings;

/// Why serving stopped before shutdown was asked for.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[cfg(feature = "grpc-uds")]
    #[error(transparent)]
    Grpc(#[from] tonic::transport::Error),
    /// An adapter's task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// An adapter returned although no shutdown was asked for.
    #[error("an adapter stopped unexpectedly")]
    AdapterStopped,
}

/// Serves the HTTP/JSON adapter on `listener` until `shutdown` completes, then waits for the
/// requests in flight on its connections (the caller bounds that wait, see [`Server::drain`]).
///
/// Each connection is admitted by `admission` (peer uid, connection cap, first-byte timeout);
/// every request head must arrive within the admission's header read timeout.
pub async fn serve_http(
    runtime: Arc<Runtime>,
    listener: UnixListener,
    admission: Admission,
    shutdown: impl Future<Output = ()> + Send,
) {
    let header_read_timeout = admission.header_read_timeout();
    transport::http::serve(runtime, listener, admission, header_read_timeout, shutdown).await;
}

/// What the public endpoint (edge mode) is served with besides the runtime.
#[derive(Debug, Clone)]
pub struct PublicEndpoint {
    /// The Core SPI client (the runtime must have been built with it as its hooks).
    pub policy: Arc<Policy>,
    /// The `Host` and `Origin` allow-lists.
    pub allow: AllowLists,
    /// The largest request head (request line and headers), in bytes; a longer one is a 431.
    pub max_header_bytes: usize,
    /// How long a `text/event-stream` answer may stay silent before an SSE comment
    /// (`: keep-alive`) is written on it, between whole events; `None`: never. The Python
    /// `mcp` SDK's server (through `sse-starlette`) pings every 15 s.
    pub sse_keep_alive: Option<std::time::Duration>,
}

/// Serves the public endpoint of edge mode on the TCP `listener` (`/mcp`, `/servers/{id}/mcp`
/// with the gateway's public semantics, callers resolved by the policy core) until `shutdown`
/// completes, then waits for the requests in flight (bounded by the caller). The policy's
/// watch task is not started here ([`Server::serve_public`] starts it).
pub async fn serve_public(
    runtime: Arc<Runtime>,
    endpoint: PublicEndpoint,
    listener: TcpListener,
    admission: Admission,
    shutdown: impl Future<Output = ()> + Send,
) {
    let edge = Arc::new(transport::public::Edge::new(
        runtime,
        endpoint.policy,
        endpoint.allow,
        endpoint.sse_keep_alive,
    ));
    transport::public::serve(
        edge,
        listener,
        admission,
        endpoint.max_header_bytes,
        shutdown,
    )
    .await;
}

/// Serves the gRPC adapter (`McpRuntime`, `grpc.health.v1`, server reflection) on `listener`
/// until `shutdown` completes, then lets the calls in flight finish. From the moment
/// `shutdown` completes, `grpc.health.v1` reports `NOT_SERVING`.
///
/// # Errors
///
/// [`ServeError::Grpc`] if the tonic server fails.
#[cfg(feature = "grpc-uds")]
pub async fn serve_grpc(
    runtime: Arc<Runtime>,
    listener: UnixListener,
    admission: Admission,
    settings: GrpcSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    Ok(transport::grpc::serve(runtime, listener, admission, settings, shutdown).await?)
}

/// The adapters serving one runtime, the idle-session reaper, and their shutdown.
///
/// Shutdown ([`Server::drain`]) has one order: readiness reports not ready (the binary first
/// keeps serving for its drain period, `--drain-ms`), then health reports not serving and the
/// standalone
/// GET streams end (the runtime starts draining), every adapter stops accepting and lets its
/// requests in flight finish for up to the grace period, then the calls still running are
/// cancelled (their callers get an error, their upstreams `notifications/cancelled`), and
/// last the stdio upstreams' servers are stopped.
#[derive(Debug)]
pub struct Server {
    runtime: Arc<Runtime>,
    shutdown: CancellationToken,
    adapters: JoinSet<Result<(), ServeError>>,
    reaper: JoinHandle<()>,
}

impl Server {
    /// Starts serving `runtime`: the idle-session reaper runs from now on (it checks at half
    /// the session TTL, at most once a minute); adapters are added with
    /// [`Server::serve_http`] and `Server::serve_grpc`.
    #[must_use]
    pub fn new(runtime: Arc<Runtime>) -> Self {
        let reaper = {
            let rt = Arc::clone(&runtime);
            let every = (rt.session_idle_ttl() / 2).min(Duration::from_secs(60));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    rt.reap_idle_sessions();
                }
            })
        };
        Self {
            runtime,
            shutdown: CancellationToken::new(),
            adapters: JoinSet::new(),
            reaper,
        }
    }

    /// Serves the metrics listener (see [`crate::metrics::serve_metrics`]) until the drain.
    pub fn serve_metrics(&mut self, listener: TcpListener) {
        let (rt, stop) = (Arc::clone(&self.runtime), self.shutdown.clone());
        self.adapters.spawn(async move {
            crate::metrics::serve_metrics(rt, listener, stop.cancelled_owned()).await;
            Ok(())
        });
    }

    /// The runtime served.
    #[must_use]
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Serves the HTTP/JSON adapter on `listener` (see [`serve_http`]) until the drain.
    pub fn serve_http(&mut self, listener: UnixListener, admission: Admission) {
        let (rt, stop) = (Arc::clone(&self.runtime), self.shutdown.clone());
        self.adapters.spawn(async move {
            serve_http(rt, listener, admission, stop.cancelled_owned()).await;
            Ok(())
        });
    }

    /// Serves the public endpoint on `listener` (see [`serve_public`]) and runs the policy's
    /// WatchPolicy and RecordCalls tasks, all until the drain.
    pub fn serve_public(
        &mut self,
        listener: TcpListener,
        admission: Admission,
        endpoint: PublicEndpoint,
    ) {
        let policy = Arc::clone(&endpoint.policy);
        let stop = self.shutdown.clone();
        self.adapters.spawn(async move {
            policy.watch(stop.cancelled_owned()).await;
            Ok(())
        });
        let policy = Arc::clone(&endpoint.policy);
        let stop = self.shutdown.clone();
        self.adapters.spawn(async move {
            policy.send_records(stop.cancelled_owned()).await;
            Ok(())
        });
        let (rt, stop) = (Arc::clone(&self.runtime), self.shutdown.clone());
        self.adapters.spawn(async move {
            serve_public(rt, endpoint, listener, admission, stop.cancelled_owned()).await;
            Ok(())
        });
    }

    /// Serves the gRPC adapter on `listener` (see [`serve_grpc`]) until the drain.
    #[cfg(feature = "grpc-uds")]
    pub fn serve_grpc(
        &mut self,
        listener: UnixListener,
        admission: Admission,
        settings: GrpcSettings,
    ) {
        let (rt, stop) = (Arc::clone(&self.runtime), self.shutdown.clone());
        self.adapters.spawn(serve_grpc(
            rt,
            listener,
            admission,
            settings,
            stop.cancelled_owned(),
        ));
    }

    /// Serves until `signal` completes, then drains within `grace` ([`Server::drain`]).
    ///
    /// # Errors
    ///
    /// The [`ServeError`] of an adapter that stopped before `signal`; the others are then
    /// dropped without a drain.
    pub async fn run_until(
        mut self,
        signal: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), ServeError> {
        tokio::select! {
            () = signal => {}
            Some(res) = self.adapters.join_next() => {
                res??;
                return Err(ServeError::AdapterStopped);
            }
        }
        self.drain(grace).await;
        Ok(())
    }

    /// Shuts down in the order described on [`Server`]; returns once every adapter has
    /// stopped, or the grace period is over and the calls still running were cancelled, and
    /// the stdio upstreams' servers have exited.
    pub async fn drain(mut self, grace: Duration) {
        // Not ready first (the binary does it at the signal, before its drain period): the
        // gRPC health watcher sees it before the listeners close.
        self.runtime.set_not_ready();
        tokio::task::yield_now().await;
        tracing::info!("shutting down: draining in-flight requests");
        self.runtime.start_draining();
        self.shutdown.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.adapters.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                "grace period over; cancelling calls still running and closing connections"
            );
            // Calls still running upstream get `notifications/cancelled` (and their callers an
            // error) before the process exits, instead of being cut off silently.
            self.runtime.cancel_calls(Duration::from_secs(2)).await;
        }
        self.runtime.stop_upstreams().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.reaper.abort();
        self.shutdown.cancel();
    }
}
