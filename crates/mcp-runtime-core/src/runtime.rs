//! The runtime: its settings, its state (session table, catalog with the upstream pool, the
//! tracker of its tasks) and its public face: [`Runtime::handle`], health, draining, shutdown.
//! What a request means is `dispatch`'s; the life of an upstream call is `forward`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::catalog::{CatalogConfig, CatalogError};
use crate::live::{CatalogChange, LiveCatalog};
use crate::quota::{QuotaConfig, Quotas};
use crate::request::{Outcome, Request};
use crate::session::Sessions;
use crate::state::{StateConfig, Store, StoreError, StoreHealth};

/// Why the runtime did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The catalog: a required upstream unreachable, or the catalog inconsistent.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The state store: a `--state-url` the Redis client cannot use.
    #[error(transparent)]
    State(#[from] StoreError),
}

/// MCP protocol versions the runtime speaks, newest first (MCP spec revisions).
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// MCP protocol versions without sessions the runtime speaks (MCP 2026-07-28: every request
/// carries its version and client capabilities in `_meta`), served on the same endpoint as
/// [`PROTOCOL_VERSIONS`] (`dispatch.rs`, `Era`).
pub const SESSIONLESS_PROTOCOL_VERSIONS: [&str; 1] = ["2026-07-28"];

/// Every version the runtime speaks, newest first: [`SESSIONLESS_PROTOCOL_VERSIONS`] then
/// [`PROTOCOL_VERSIONS`] (the `supported` list of `server/discover` and of -32022).
#[must_use]
pub fn all_protocol_versions() -> Vec<&'static str> {
    SESSIONLESS_PROTOCOL_VERSIONS
        .iter()
        .chain(PROTOCOL_VERSIONS.iter())
        .copied()
        .collect()
}

/// The version assumed when a request carries no `MCP-Protocol-Version` header (MCP spec
/// 2025-06-18, transports: "the server SHOULD assume protocol version 2025-03-26").
pub const DEFAULT_PROTOCOL_VERSION: &str = "2025-03-26";

/// Default limit of one message in either direction: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Default of [`RuntimeConfig::max_sessions_per_subject`]: room for a client that opens a
/// session per task, far below what fills the table for everyone.
pub const DEFAULT_MAX_SESSIONS_PER_SUBJECT: usize = 256;

/// Runtime settings the binary passes in.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Largest request body and largest result, in bytes.
    pub max_message_bytes: usize,
    /// How long one upstream call may take before the caller gets a timeout error and the
    /// upstream a `notifications/cancelled`.
    pub upstream_timeout: Duration,
    /// Optional features compiled into the binary, reported by health (e.g. `grpc-uds`).
    pub features: Vec<String>,
    /// A session with no request, call or open stream for this long is ended by
    /// [`Runtime::reap_idle_sessions`].
    pub session_idle_ttl: Duration,
    /// Most sessions one subject (AuthContext email) may hold at once; `initialize` beyond it
    /// is answered 429 ([`crate::RequestError::TooManySessions`]).
    pub max_sessions_per_subject: usize,
    /// What one subject may hold at once (streams, calls, bytes in flight) and the process's
    /// budget of bytes in flight ([`crate::quota`]).
    pub quotas: QuotaConfig,
    /// The contract version `MAJOR.MINOR` reported by health: [`crate::CONTRACT_VERSION`].
    /// Only tests of the version handshake set another (the binary allows that in debug
    /// builds only, through `MCP_RUNTIME_TEST_CONTRACT_VERSION`).
    pub contract_version: String,
    /// Where shared state lives (memory, or Redis for several replicas) and how much SSE
    /// event history is kept ([`crate::state`]).
    pub state: StateConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            upstream_timeout: Duration::from_secs(60),
            features: Vec::new(),
            session_idle_ttl: Duration::from_secs(3600),
            max_sessions_per_subject: DEFAULT_MAX_SESSIONS_PER_SUBJECT,
            quotas: QuotaConfig::default(),
            contract_version: crate::CONTRACT_VERSION.to_owned(),
            state: StateConfig::default(),
        }
    }
}

/// What the health endpoints report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `false` once shutdown started.
    pub serving: bool,
    /// The runtime crate version.
    pub runtime_version: &'static str,
    /// The contract version `MAJOR.MINOR` (normally [`crate::CONTRACT_VERSION`]).
    pub contract_version: String,
    /// Enabled optional features.
    pub features: Vec<String>,
    /// Open MCP sessions.
    pub open_sessions: usize,
    /// Spoken MCP protocol versions, newest first.
    pub protocol_versions: Vec<&'static str>,
    /// The state store: its kind and whether it answers.
    pub state: StoreHealth,
    /// Upstreams whose last attempt failed at the transport (unreachable), each with whether
    /// the catalog marks it required; a required one down makes the runtime degraded.
    pub upstreams_down: Vec<(String, bool)>,
    /// `true` once shutdown started or [`Runtime::set_not_ready`] was called: `/ready` and
    /// gRPC health answer not serving (requests are still served until the listeners close).
    pub not_ready: bool,
}

impl Health {
    /// `"degraded"` when a required upstream is down, else `"ok"`.
    #[must_use]
    pub fn condition(&self) -> &'static str {
        if self.upstreams_down.iter().any(|(_, required)| *required) {
            "degraded"
        } else {
            "ok"
        }
    }

    /// Why the runtime is not ready (`draining`, `state_unavailable`), or `None` when it is.
    #[must_use]
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.not_ready || !self.serving {
            Some("draining")
        } else if !self.state.reachable {
            Some("state_unavailable")
        } else {
            None
        }
    }
}

/// The transport-agnostic MCP runtime. Cheap to share: adapters hold an `Arc<Runtime>`.
///
/// Tasks: the core spawns two kinds, both on the runtime's `TaskTracker`: the rest of an
/// upstream call whose answer became an SSE stream, and the `notifications/cancelled` of a call
/// that ended unanswered (module `forward`). It runs no timer of its own: the sidecar's
/// `Server` calls [`Runtime::reap_idle_sessions`]; only the Redis store runs tasks of its own
/// (`crate::state`). (reqwest's connection pool spawns its own connection
/// tasks; they are not the runtime's.)
#[derive(Debug)]
pub struct Runtime {
    /// The current catalog version and how it changes ([`crate::live`]).
    pub(crate) catalog: Arc<LiveCatalog>,
    /// This replica's sessions (with Redis: its cache of the shared records).
    pub(crate) sessions: Arc<Sessions>,
    /// Where shared state lives ([`crate::state`]).
    pub(crate) store: Store,
    /// What each subject holds against its quotas, and the process's bytes in flight.
    pub(crate) quotas: Arc<Quotas>,
    pub(crate) config: RuntimeConfig,
    draining: AtomicBool,
    /// `true` once [`Runtime::set_not_ready`] was called; watched by the gRPC health service.
    not_ready: tokio::sync::watch::Sender<bool>,
    /// The `initialize` result for each of [`PROTOCOL_VERSIONS`], encoded once at start.
    pub(crate) initialize_results: Vec<String>,
    /// Upstream calls under way (a call increments it, its drop decrements); only reported,
    /// by [`Runtime::inflight_upstream_calls`].
    pub(crate) inflight_upstream: Arc<AtomicUsize>,
    /// Every upstream call under way (as a token), every task the core spawned, and every
    /// `notifications/cancelled` still being sent: what shutdown waits for.
    pub(crate) tasks: TaskTracker,
    /// The outside policy's hooks (edge mode), if any: see [`crate::hooks`].
    pub(crate) hooks: Option<Arc<dyn crate::hooks::Hooks>>,
    /// The sessions' resource subscriptions ([`crate::subscribe`]).
    pub(crate) subscriptions: Arc<crate::subscribe::Subscriptions>,
    /// Stops the upstream listeners ([`crate::subscribe::listen`]); cancelled when the
    /// runtime is dropped or its upstreams stopped.
    listening: tokio_util::sync::CancellationToken,
    _listening: tokio_util::sync::DropGuard,
    /// Cancelled when shutdown starts: ends the catalog watches ([`Runtime::catalog_events`]).
    watches_end: tokio_util::sync::CancellationToken,
}

impl Runtime {
    /// Discovers the catalog, opens the state store and builds the runtime. With Redis the
    /// store's heartbeat and subscriber tasks start now (on the current tokio runtime; they
    /// end when the runtime is dropped); Redis need not be up yet: requests that need it are
    /// answered 503 until it is.
    ///
    /// # Errors
    ///
    /// [`StartError::Catalog`] when a required upstream is unreachable or the catalog is
    /// inconsistent; [`StartError::State`] for a state URL the Redis client cannot use.
    pub async fn start(catalog: &CatalogConfig, config: RuntimeConfig) -> Result<Self, StartError> {
        let sessions = Arc::new(Sessions::new(config.max_sessions_per_subject));
        let store = match &config.state.url {
            None => Store::Memory,
            Some(url) => {
                let r = Arc::new(crate::state::redis::RedisStore::new(
                    url,
                    config.state.command_timeout,
                    config.state.retention,
                )?);
                r.spawn_tasks(&sessions, config.session_idle_ttl);
                Store::Redis(r)
            }
        };
        let redis = match &store {
            Store::Redis(r) => Some(Arc::clone(r)),
            Store::Memory => None,
        };
        let subscriptions = Arc::new(crate::subscribe::Subscriptions::new(redis.clone()));
        let listening = tokio_util::sync::CancellationToken::new();
        let catalog = LiveCatalog::start(
            catalog,
            config.max_message_bytes,
            &sessions,
            &subscriptions,
            listening.clone(),
            redis.clone(),
        )
        .await?;
        if let Some(r) = &redis {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            r.set_peers(tx);
            tokio::spawn(listening.clone().run_until_cancelled_owned(from_peers(
                rx,
                Arc::downgrade(&catalog),
                Arc::downgrade(&subscriptions),
            )));
        }
        Ok(Self {
            subscriptions,
            _listening: listening.clone().drop_guard(),
            listening,
            catalog,
            sessions,
            store,
            quotas: Arc::new(Quotas::new(config.quotas)),
            config,
            draining: AtomicBool::new(false),
            not_ready: tokio::sync::watch::Sender::new(false),
            initialize_results: PROTOCOL_VERSIONS
                .iter()
                .map(|v| initialize_result(v))
                .collect(),
            inflight_upstream: Arc::new(AtomicUsize::new(0)),
            tasks: TaskTracker::new(),
            hooks: None,
            watches_end: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// The runtime with `hooks` asked at the points they registered ([`crate::hooks`]).
    #[must_use]
    pub fn with_hooks(mut self, hooks: Arc<dyn crate::hooks::Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Health as reported by `GET /health` and the `HealthCheck` RPC.
    #[must_use]
    pub fn health(&self) -> Health {
        Health {
            serving: !self.draining.load(Ordering::Relaxed),
            runtime_version: env!("CARGO_PKG_VERSION"),
            contract_version: self.config.contract_version.clone(),
            features: self.config.features.clone(),
            open_sessions: self.sessions.len(),
            protocol_versions: PROTOCOL_VERSIONS.to_vec(),
            state: self.store.health(),
            upstreams_down: self.catalog.load().upstreams_down(),
            not_ready: *self.not_ready.borrow(),
        }
    }

    /// Marks the runtime not ready (shutdown's first step, before the drain period): `/ready`
    /// answers 503 and gRPC health `NOT_SERVING` while requests are still served.
    pub fn set_not_ready(&self) {
        self.watches_end.cancel();
        self.not_ready.send_replace(true);
    }

    /// A receiver that sees `true` once the runtime is not ready ([`Runtime::set_not_ready`]).
    #[must_use]
    pub fn watch_not_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.not_ready.subscribe()
    }

    /// Marks the runtime as draining (health reports not serving) and ends the standalone
    /// GET streams, which would otherwise never finish; requests still in flight finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.watches_end.cancel();
        self.sessions.close_streams();
    }

    /// Stops every upstream call still running (shutdown, after the grace period): each caller
    /// gets a JSON-RPC error and each upstream a `notifications/cancelled`. Waits until the
    /// calls have ended and their notifications were sent (the tracker of the runtime's tasks
    /// is closed and empty), for at most `within`; returns the number of calls cancelled.
    pub async fn cancel_calls(&self, within: Duration) -> usize {
        let n = self.sessions.cancel_calls();
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "calls or notifications still running after the cancel wait"
            );
        }
        if n > 0 {
            tracing::info!(
                cancelled = n,
                "calls still running after the grace period cancelled upstream"
            );
        }
        n
    }

    /// Stops the upstreams' child processes (stdio upstreams) and waits until each exited:
    /// the last step of shutdown.
    pub async fn stop_upstreams(&self) {
        self.listening.cancel();
        self.catalog.load().stop_upstreams().await;
    }

    /// Replaces the catalog by `config` (the sidecar calls it on `SIGHUP`): upstreams whose
    /// entry is unchanged keep their sessions and calls; new and changed ones are started and
    /// discovered; removed and changed ones are stopped. Sessions whose view of a list
    /// changed get `notifications/*/list_changed` on their standalone stream; watchers get the
    /// change. Returns the change, `None` when the new catalog is the old one.
    ///
    /// # Errors
    ///
    /// The new catalog's [`CatalogError`] (a name exposed twice, a required upstream
    /// unreachable, a credential that cannot be read, a virtual server naming an unknown
    /// tool): nothing changed, the old catalog is still served.
    pub async fn reload(
        &self,
        config: &CatalogConfig,
    ) -> Result<Option<CatalogChange>, CatalogError> {
        self.catalog.reload(&self.sessions, config).await
    }

    /// The current catalog version (1 at start, one more per change) and a receiver of every
    /// later [`CatalogChange`]. A receiver that falls more than 64 changes behind gets
    /// `Lagged` from it (then the watcher should list again).
    #[must_use]
    pub fn watch_catalog(&self) -> (u64, tokio::sync::broadcast::Receiver<CatalogChange>) {
        self.catalog.watch()
    }

    /// A watch of the catalog as a stream (the `WatchCatalog` RPC and `GET /catalog/watch`):
    /// the current version first, then one event per change, an event with `lagged` set when
    /// the watcher fell more than 64 changes behind. Ends when shutdown starts
    /// ([`Runtime::set_not_ready`] or [`Runtime::start_draining`]).
    #[must_use]
    pub fn catalog_events(&self) -> futures::stream::BoxStream<'static, crate::live::CatalogEvent> {
        let (version, rx) = self.catalog.watch();
        crate::live::events(version, rx, self.watches_end.clone())
    }

    /// Ends sessions idle for longer than the configured TTL; returns how many. The binary
    /// calls this periodically: the core runs no timer of its own.
    pub fn reap_idle_sessions(&self) -> usize {
        let n = self.sessions.reap_idle(self.config.session_idle_ttl);
        if n > 0 {
            tracing::info!(reaped = n, "idle sessions ended");
        }
        n
    }

    /// The configured idle TTL of sessions.
    #[must_use]
    pub fn session_idle_ttl(&self) -> Duration {
        self.config.session_idle_ttl
    }

    /// Upstream calls under way right now.
    #[must_use]
    pub fn inflight_upstream_calls(&self) -> usize {
        self.inflight_upstream.load(Ordering::Relaxed)
    }

    /// Holds `bytes` of `subject`'s and the process's bytes in flight for a request body an
    /// adapter is about to read (its declared length), until the reservation is dropped or,
    /// handed to [`Runtime::handle_reserved`], the request is answered.
    ///
    /// # Errors
    ///
    /// [`crate::RequestError::SubjectQuota`] or [`crate::RequestError::ProcessBusy`]: the body
    /// does not fit; answer it without reading it.
    pub fn reserve_body(
        &self,
        subject: &str,
        bytes: usize,
    ) -> Result<crate::quota::BodyReservation, crate::RequestError> {
        self.quotas.reserve_body(subject, bytes)
    }

    /// Bytes of request bodies and results in flight right now, in the whole process.
    #[must_use]
    pub fn bytes_in_flight(&self) -> usize {
        self.quotas.bytes_in_flight()
    }

    /// The largest request body accepted and result returned, in bytes.
    #[must_use]
    pub fn max_message_bytes(&self) -> usize {
        self.config.max_message_bytes
    }

    /// Handles one MCP request. Never fails: every fault is an HTTP status and JSON-RPC error
    /// inside the [`Outcome`]. Dropping the returned future (or the event receiver of a
    /// streaming outcome) cancels the upstream call behind it.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Outcome {
        self.handle_reserved(req, None).await
    }

    /// [`Runtime::handle`] with the bytes an adapter reserved for the body before reading it
    /// ([`Runtime::reserve_body`]); the core keeps them until the request is answered instead
    /// of counting the body a second time.
    pub async fn handle_reserved(
        self: &Arc<Self>,
        req: Request,
        reserved: Option<crate::quota::BodyReservation>,
    ) -> Outcome {
        self.handle_observed(req, reserved, Instant::now()).await
    }

    /// [`Runtime::handle_reserved`] for a request whose head arrived at `started`: the
    /// request is counted in the metrics (`crate::metrics`, when on) and logged in one line
    /// at `info` on the target `mcp_runtime::access` (request id, trace id, span id with
    /// tracing on, session id,
    /// surface, MCP method, HTTP status, JSON-RPC code class, outcome, duration in ms; never
    /// the caller's credentials or the AuthContext). An SSE answer holds the in-flight and
    /// open-stream gauges until its stream ends.
    pub async fn handle_observed(
        self: &Arc<Self>,
        req: Request,
        reserved: Option<crate::quota::BodyReservation>,
        started: Instant,
    ) -> Outcome {
        use crate::metrics::{self, Mode, RpcCode};
        // A debug-level span: at the default `info` filter it is disabled and costs nothing;
        // an enabled span costs 8-13 µs per request with the fmt layer (measured with
        // mcp-bench and perf), a quarter of the runtime's CPU for a `ping`.
        let span = tracing::debug_span!(
            "mcp_request",
            transport = req.transport.as_str(),
            http_method = ?req.method,
            method = tracing::field::Empty,
            session = req.headers.session_id.as_deref().unwrap_or(""),
            request_id = req.request_id.as_deref().unwrap_or(""),
        );
        let mode = Mode::from(req.transport);
        let m = metrics::get();
        let in_flight = m.map(|m| m.in_flight(mode));
        // What the request line needs, taken only when the line is wanted.
        let log =
            tracing::enabled!(target: "mcp_runtime::access", tracing::Level::INFO).then(|| {
                let tp = &req.auth.traceparent;
                let trace_id = trace_id_of(tp);
                // With tracing on the adapter made the context the request span's own.
                let span_id = (crate::trace::is_on() && trace_id.is_some())
                    .then(|| tp.get(36..52).map(str::to_owned))
                    .flatten();
                (
                    req.request_id.clone(),
                    req.headers.session_id.clone(),
                    trace_id.map(str::to_owned),
                    span_id,
                )
            });
        let mut outcome = async move {
            let outcome = self.dispatch(req, reserved).await;
            tracing::debug!(status = outcome.head.status, "answered");
            outcome
        }
        .instrument(span)
        .await;
        if m.is_none() && log.is_none() {
            return outcome;
        }
        let seconds = started.elapsed().as_secs_f64();
        let rpc = RpcCode::of_outcome(&outcome);
        let status = outcome.head.status;
        if let Some(m) = m {
            m.record_request(mode, outcome.mcp_method, status, rpc, seconds);
            if let (crate::request::Body::Events(ev), Some(f)) = (&mut outcome.body, in_flight) {
                ev._gauges = Some((f, m.stream(mode)));
            }
        }
        if let Some((request_id, session_id, trace_id, span_id)) = log {
            let ok = status < 400 && matches!(rpc, RpcCode::Ok | RpcCode::Stream | RpcCode::None);
            let session_id = session_id
                .as_deref()
                .or(outcome.head.header("mcp-session-id"));
            tracing::info!(
                target: "mcp_runtime::access",
                request_id = request_id.as_deref(),
                trace_id = trace_id.as_deref(),
                span_id = span_id.as_deref(),
                session_id,
                mode = mode.as_str(),
                mcp_method = outcome.mcp_method.as_str(),
                http_status = status,
                rpc_code = rpc.as_str(),
                outcome = if ok { "ok" } else { "error" },
                duration_ms = (seconds * 1e6).round() / 1e3,
                "request"
            );
        }
        outcome
    }
}

/// The trace id (32 lower-case hex digits) of a W3C `traceparent`
/// (`00-<trace id>-<parent id>-<flags>`), or `None` when the value is not one.
#[must_use]
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace, parent) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(trace, 32) && hex(parent, 16) && trace.bytes().any(|b| b != b'0')).then_some(trace)
}

/// The `initialize` result for `version`, built with rmcp's model types: tools, resources,
/// prompts (each with `listChanged`: [`crate::live`]), logging, completions and resource
/// subscriptions.
fn initialize_result(version: &str) -> String {
    use rmcp::model::{
        Implementation, InitializeResult, PromptsCapability, ProtocolVersion, ResourcesCapability,
        ServerCapabilities, ToolsCapability,
    };
    let mut capabilities = ServerCapabilities::default();
    let mut tools = ToolsCapability::default();
    tools.list_changed = Some(true);
    capabilities.tools = Some(tools);
    // `resources/subscribe` is routed like `resources/read` (crate::subscribe).
    let mut resources = ResourcesCapability::default();
    resources.subscribe = Some(true);
    resources.list_changed = Some(true);
    capabilities.resources = Some(resources);
    let mut prompts = PromptsCapability::default();
    prompts.list_changed = Some(true);
    capabilities.prompts = Some(prompts);
    capabilities.logging = Some(serde_json::Map::new());
    // `completion/complete` is routed to the upstream owning the prompt or template.
    capabilities.completions = Some(serde_json::Map::new());
    let mut result = InitializeResult::new(capabilities);
    result.protocol_version =
        serde_json::from_value::<ProtocolVersion>(json!(version)).unwrap_or_default();
    result.server_info = Implementation::new("mcp-runtime", env!("CARGO_PKG_VERSION"));
    serde_json::to_string(&result).unwrap_or_else(|_| "{}".to_owned())
}

/// What other replicas ask of this one (Redis store): an upstream's `list_changed` they
/// heard goes to the refresher as if heard here; a session's unsubscription made there ends
/// the subscription this replica's upstream session holds for it.
async fn from_peers(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<crate::state::redis::Peer>,
    live: std::sync::Weak<LiveCatalog>,
    subscriptions: std::sync::Weak<crate::subscribe::Subscriptions>,
) {
    while let Some(peer) = rx.recv().await {
        let (Some(live), Some(subs)) = (live.upgrade(), subscriptions.upgrade()) else {
            return;
        };
        match peer {
            crate::state::redis::Peer::Notice { upstream, kind } => {
                live.notices.send_from_peer(upstream, kind);
            }
            crate::state::redis::Peer::Unsubscribe { sid, upstream, uri } => {
                subs.remove(&upstream, &uri, &sid);
                let cat = live.load();
                if let Some(up) = cat.upstreams.iter().find(|u| u.config.id == upstream)
                    && let Err(e) = subs.sync(up, &uri).await
                {
                    tracing::debug!(upstream, uri, error = %e, "unsubscribe failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthContext, Body, CatalogConfig, McpHeaders, Method, Request, Transport};
    use bytes::Bytes;
    use serde_json::Value;

    fn post(sid: Option<&str>, body: &Value) -> Request {
        Request {
            method: Method::Post,
            headers: McpHeaders {
                session_id: sid.map(str::to_owned),
                accept: Some("application/json, text/event-stream".to_owned()),
                ..McpHeaders::default()
            },
            server_id: None,
            request_id: None,
            auth: AuthContext::anonymous(),
            body: Bytes::from(body.to_string()),
            transport: Transport::InProcess,
            live_events: true,
        }
    }

    async fn initialize(rt: &Arc<Runtime>) -> String {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}}});
        let out = rt.handle(post(None, &init)).await;
        out.head.header("mcp-session-id").unwrap().to_owned()
    }

    /// The body of a whole (non-SSE) answer, as JSON.
    async fn answer(rt: &Arc<Runtime>, sid: &str, body: &Value) -> Value {
        let out = rt.handle(post(Some(sid), body)).await;
        assert!(matches!(out.body, Body::Full(_)), "not a whole body");
        serde_json::from_slice(&out.collect().await.1).unwrap()
    }

    /// The fixture upstream's count of `sleep` calls running, through `rt`.
    async fn upstream_inflight(rt: &Arc<Runtime>, sid: &str) -> u64 {
        let call = json!({"jsonrpc": "2.0", "id": 900, "method": "tools/call",
            "params": {"name": "inflight", "arguments": {}}});
        let v = answer(rt, sid, &call).await;
        let text = v.pointer("/result/content/0/text").and_then(Value::as_str);
        text.and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("inflight: {v}"))
    }

    /// Polls the upstream until `n` calls run there; panics after 10 s.
    async fn until_upstream_inflight(rt: &Arc<Runtime>, sid: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while upstream_inflight(rt, sid).await != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the upstream never had {n} calls running"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Shutdown's guarantee: once `cancel_calls` returns, the upstream has been sent the
    /// `notifications/cancelled` of every cancelled call. The runtime under test lives on a
    /// tokio runtime dropped right after `cancel_calls` (as the process exits), so a
    /// notification still pending then is lost and the upstream's 60 s call keeps running.
    /// The upstream and an observer runtime (which counts the calls running upstream) run on a
    /// tokio runtime of their own, as other processes would; the runtime under test makes no
    /// other call, so its notification needs a new connection (its only one, the call's, is
    /// closed with the call) and cannot be written in the same poll that spawned it.
    #[test]
    fn cancel_calls_returns_after_the_upstream_was_told() {
        let upstream = tokio::runtime::Runtime::new().unwrap();
        let listener = upstream
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = mcp_fixture_server::mcp_url(listener.local_addr().unwrap());
        upstream.spawn(mcp_fixture_server::serve(
            listener,
            0,
            std::future::pending(),
        ));
        let catalog =
            CatalogConfig::parse(&format!("[[upstreams]]\nid = \"fx\"\nurl = \"{url}\"\n"))
                .unwrap();
        let (observer, observer_sid) = upstream.block_on(async {
            let rt = Arc::new(
                Runtime::start(&catalog, RuntimeConfig::default())
                    .await
                    .unwrap(),
            );
            let sid = initialize(&rt).await;
            (rt, sid)
        });
        let until = |n| {
            let (rt, sid) = (Arc::clone(&observer), observer_sid.clone());
            upstream.spawn(async move { until_upstream_inflight(&rt, &sid, n).await })
        };
        let exiting = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (cancelled, answer) = exiting.block_on(async {
            let rt = Arc::new(
                Runtime::start(&catalog, RuntimeConfig::default())
                    .await
                    .unwrap(),
            );
            let sid = initialize(&rt).await;
            let sleep = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                "params": {"name": "sleep", "arguments": {"ms": 60_000}}});
            let call = tokio::spawn({
                let rt = Arc::clone(&rt);
                async move { rt.handle(post(Some(&sid), &sleep)).await.collect().await.1 }
            });
            until(1).await.unwrap();
            assert_eq!(rt.inflight_upstream_calls(), 1);
            let cancelled = rt.cancel_calls(Duration::from_secs(5)).await;
            (cancelled, call.await.unwrap())
        });
        drop(exiting);
        assert_eq!(cancelled, 1);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["error"]["message"], "Request cancelled", "{answer}");
        upstream.block_on(until(0)).unwrap();
    }
}
