//! The runtime: one entry point, [`Runtime::handle`], that implements the MCP streamable-HTTP
//! semantics (spec revisions 2025-03-26, 2025-06-18, 2025-11-25, section "Transports") on top
//! of the session table, the catalog and the upstream pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::AuthContext;
use crate::catalog::{Catalog, CatalogConfig, CatalogError, Kind};
use crate::jsonrpc::{self, Incoming};
use crate::request::{Method, Outcome, Request, SseEvent};
use crate::session::{Lookup, Session, Sessions};
use crate::upstream::{MessageStream, Upstream, UpstreamError};

/// MCP protocol versions the runtime speaks, newest first (MCP spec revisions).
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The version assumed when a request carries no `MCP-Protocol-Version` header (MCP spec
/// 2025-06-18, transports: "the server SHOULD assume protocol version 2025-03-26").
pub const DEFAULT_PROTOCOL_VERSION: &str = "2025-03-26";

/// Default limit of one message in either direction: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

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
    /// The contract version `MAJOR.MINOR` reported by health: [`crate::CONTRACT_VERSION`].
    /// Only tests of the version handshake set another (the binary allows that in debug
    /// builds only, through `MCP_RUNTIME_TEST_CONTRACT_VERSION`).
    pub contract_version: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            upstream_timeout: Duration::from_secs(60),
            features: Vec::new(),
            session_idle_ttl: Duration::from_secs(3600),
            contract_version: crate::CONTRACT_VERSION.to_owned(),
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
}

/// The transport-agnostic MCP runtime. Cheap to share: adapters hold an `Arc<Runtime>`.
#[derive(Debug)]
pub struct Runtime {
    catalog: Catalog,
    sessions: Sessions,
    config: RuntimeConfig,
    draining: AtomicBool,
    /// The `initialize` result for each of [`PROTOCOL_VERSIONS`], encoded once at start.
    initialize_results: Vec<String>,
    /// Upstream calls under way (a guard increments, its drop decrements); tests read it to
    /// prove that cancelled and timed-out calls really end.
    inflight_upstream: Arc<AtomicUsize>,
}

impl Runtime {
    /// Discovers the catalog and builds the runtime.
    ///
    /// # Errors
    ///
    /// [`CatalogError`] when a required upstream is unreachable or the catalog is inconsistent.
    pub async fn start(
        catalog: &CatalogConfig,
        config: RuntimeConfig,
    ) -> Result<Self, CatalogError> {
        let catalog = Catalog::discover(catalog, config.max_message_bytes).await?;
        Ok(Self {
            catalog,
            sessions: Sessions::default(),
            config,
            draining: AtomicBool::new(false),
            initialize_results: PROTOCOL_VERSIONS
                .iter()
                .map(|v| initialize_result(v))
                .collect(),
            inflight_upstream: Arc::new(AtomicUsize::new(0)),
        })
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
        }
    }

    /// Marks the runtime as draining (health reports not serving) and ends the standalone
    /// GET streams, which would otherwise never finish; requests still in flight finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.sessions.close_streams();
    }

    /// Stops every upstream call still running (shutdown, after the grace period): each caller
    /// gets a JSON-RPC error and each upstream a `notifications/cancelled`. Waits until the
    /// calls have ended and their notifications were sent, for at most `within`; returns the
    /// number of calls cancelled.
    pub async fn cancel_calls(&self, within: Duration) -> usize {
        let n = self.sessions.cancel_calls();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline
            && (self.inflight_upstream_calls() > 0
                || self
                    .catalog
                    .upstreams
                    .iter()
                    .any(|u| u.pending_notifications() > 0))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if n > 0 {
            tracing::info!(
                cancelled = n,
                "calls still running after the grace period cancelled upstream"
            );
        }
        n
    }

    /// Ends sessions idle for longer than the configured TTL; returns how many. The binary
    /// calls this periodically; the core starts no background task of its own.
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

    /// The largest request body accepted and result returned, in bytes.
    #[must_use]
    pub fn max_message_bytes(&self) -> usize {
        self.config.max_message_bytes
    }

    /// Handles one MCP request. Never fails: every fault is an HTTP status and JSON-RPC error
    /// inside the [`Outcome`]. Dropping the returned future (or the event receiver of a
    /// streaming outcome) cancels the upstream call behind it.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Outcome {
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
        async move {
            let outcome = self.route(req).await;
            tracing::debug!(status = outcome.head.status, "answered");
            outcome
        }
        .instrument(span)
        .await
    }

    async fn route(self: &Arc<Self>, req: Request) -> Outcome {
        let scope = req.server_id.as_deref();
        if let Some(id) = scope
            && !self.catalog.has_server(id)
        {
            return error(
                404,
                None,
                jsonrpc::NOT_FOUND,
                &format!("Server not found: {}", shown(id)),
            );
        }
        if let Some(v) = req.headers.protocol_version.as_deref()
            && !PROTOCOL_VERSIONS.contains(&v)
        {
            return error(
                400,
                None,
                jsonrpc::BAD_REQUEST,
                &format!(
                    "Bad Request: Unsupported protocol version: {v} (supported versions: {})",
                    PROTOCOL_VERSIONS.join(", ")
                ),
            );
        }
        match req.method {
            Method::Post => self.post(req).await,
            Method::Get => self.get(&req),
            Method::Delete => self.delete(&req),
        }
    }

    fn delete(&self, req: &Request) -> Outcome {
        let sid = req.headers.session_id.as_deref();
        match self
            .sessions
            .remove(sid, &req.auth.subject_email, req.server_id.as_deref())
        {
            Ok(()) => Outcome::empty(200),
            Err(l) => lookup_error(&l),
        }
    }

    fn get(&self, req: &Request) -> Outcome {
        let accepts_sse = req
            .headers
            .accept
            .as_deref()
            .is_some_and(|a| a.contains("text/event-stream"));
        if !accepts_sse {
            return Outcome::empty(405).with_header("allow", "POST, DELETE".to_owned());
        }
        let session = match self.sessions.get(
            req.headers.session_id.as_deref(),
            &req.auth.subject_email,
            req.server_id.as_deref(),
        ) {
            Ok(s) => s,
            Err(l) => return lookup_error(&l),
        };
        // The runtime has no server-initiated messages of its own yet; the stream stays open
        // until the session ends (its sender is dropped) or the client goes away.
        let (tx, rx) = mpsc::channel(16);
        *session
            .standalone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        Outcome::events(rx)
    }

    async fn post(self: &Arc<Self>, req: Request) -> Outcome {
        if req.body.len() > self.config.max_message_bytes {
            return error(
                413,
                None,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "Request body of {} bytes exceeds the limit of {} bytes",
                    req.body.len(),
                    self.config.max_message_bytes
                ),
            );
        }
        let msg = match jsonrpc::parse(&req.body) {
            Ok(m) => m,
            Err(e) => return error(400, None, e.code(), &e.to_string()),
        };
        let scope = req.server_id.as_deref();
        let (id, method, params) = match msg {
            Incoming::Request { id, method, params } => (id, method, params),
            Incoming::Notification { method, params } => {
                tracing::Span::current().record("method", method.as_str());
                return self.notification(&req, &method, params.as_deref());
            }
            Incoming::Response => {
                return match self.session(&req) {
                    Ok(_) => Outcome::empty(202),
                    Err(o) => o,
                };
            }
        };
        tracing::Span::current().record("method", method.as_str());
        if method == "initialize" {
            return self.initialize(&id, params.as_deref(), &req.auth, scope);
        }
        if method == "server/discover" {
            // Clients of the 2026-07-28 revision probe with this first; a correlated
            // "method not found" tells them this server is legacy, so they fall back to
            // `initialize` (rmcp `discover_startup`, MCP 2026-07-28 backward compatibility).
            return error(
                200,
                Some(&id),
                jsonrpc::METHOD_NOT_FOUND,
                "Method not found: server/discover",
            );
        }
        let session = match self.session(&req) {
            Ok(s) => s,
            Err(o) => return o,
        };
        let accepts_sse = req
            .headers
            .accept
            .as_deref()
            .is_none_or(|a| a.contains("text/event-stream") || a.contains("*/*"));
        self.request(&session, id, &method, params, &req.auth, scope, accepts_sse)
            .await
    }

    fn session(&self, req: &Request) -> Result<Arc<Session>, Outcome> {
        self.sessions
            .get(
                req.headers.session_id.as_deref(),
                &req.auth.subject_email,
                req.server_id.as_deref(),
            )
            .map_err(|l| lookup_error(&l))
    }

    fn notification(&self, req: &Request, method: &str, params: Option<&RawValue>) -> Outcome {
        let session = match self.session(req) {
            Ok(s) => s,
            Err(o) => return o,
        };
        if method == "notifications/cancelled"
            && let Some(p) = params
            && let Ok(p) = serde_json::from_str::<Map<String, Value>>(p.get())
            && let Some(rid) = p.get("requestId")
        {
            let key = rid.to_string();
            let token = session
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&key)
                .cloned();
            if let Some(t) = token {
                t.cancel();
            }
        }
        Outcome::empty(202)
    }

    fn initialize(
        &self,
        id: &RawValue,
        params: Option<&RawValue>,
        auth: &AuthContext,
        scope: Option<&str>,
    ) -> Outcome {
        let requested = params
            .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
            .and_then(|p| {
                p.get("protocolVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        // Echo a version we speak, else offer our newest (MCP spec, lifecycle: version
        // negotiation).
        let index = requested
            .as_deref()
            .and_then(|v| PROTOCOL_VERSIONS.iter().position(|p| *p == v))
            .unwrap_or(0);
        let version = PROTOCOL_VERSIONS[index];
        let sid = self.sessions.create(&auth.subject_email, scope);
        tracing::info!(session = %sid, version, "session created");
        Outcome::json(
            200,
            jsonrpc::result_body(id, &self.initialize_results[index]),
        )
        .with_header("mcp-session-id", sid)
    }

    #[allow(clippy::too_many_arguments)]
    async fn request(
        self: &Arc<Self>,
        session: &Arc<Session>,
        id: Box<RawValue>,
        method: &str,
        params: Option<Box<RawValue>>,
        auth: &AuthContext,
        scope: Option<&str>,
        accepts_sse: bool,
    ) -> Outcome {
        let cat = &self.catalog;
        let ok = |result: &str| Outcome::json(200, jsonrpc::result_body(&id, result));
        match method {
            "ping" | "logging/setLevel" => ok("{}"),
            "tools/list" => ok(&cat.list_json(Kind::Tool, auth, scope)),
            "prompts/list" => ok(&cat.list_json(Kind::Prompt, auth, scope)),
            "resources/list" => ok(&cat.list_json(Kind::Resource, auth, scope)),
            "resources/templates/list" => ok(&cat.templates_json(auth, scope)),
            "tools/call" | "prompts/get" | "resources/read" => {
                let mut p: Map<String, Value> = match params
                    .as_deref()
                    .map(|p| serde_json::from_str(p.get()))
                    .transpose()
                {
                    Ok(p) => p.unwrap_or_default(),
                    Err(e) => {
                        return error(
                            200,
                            Some(&id),
                            jsonrpc::INVALID_PARAMS,
                            &format!("Invalid params: {e}"),
                        );
                    }
                };
                // Checked here so that a malformed call never reaches the upstream.
                for field in ["arguments", "_meta"] {
                    if p.get(field).is_some_and(|v| !v.is_object()) {
                        return error(
                            200,
                            Some(&id),
                            jsonrpc::INVALID_PARAMS,
                            &format!("Invalid params: `{field}` must be an object"),
                        );
                    }
                }
                let (kind, key) = match method {
                    "tools/call" => (Kind::Tool, "name"),
                    "prompts/get" => (Kind::Prompt, "name"),
                    _ => (Kind::Resource, "uri"),
                };
                let Some(name) = p.get(key).and_then(Value::as_str).map(str::to_owned) else {
                    return error(
                        200,
                        Some(&id),
                        jsonrpc::INVALID_PARAMS,
                        &format!("Invalid params: `{key}` is required"),
                    );
                };
                let route = match kind {
                    Kind::Resource => cat
                        .resource_route(&name, auth, scope)
                        .map(|u| (u, name.clone())),
                    Kind::Tool | Kind::Prompt => {
                        let entries = if matches!(kind, Kind::Tool) {
                            &cat.tools
                        } else {
                            &cat.prompts
                        };
                        entries
                            .get(&name)
                            .filter(|e| cat.allowed(kind, &name, e, auth, scope))
                            .map(|e| (e.upstream, e.upstream_name.clone()))
                    }
                };
                let Some((upstream, upstream_name)) = route else {
                    // Not visible is answered exactly like not existing.
                    return match kind {
                        Kind::Tool => error(
                            200,
                            Some(&id),
                            jsonrpc::INVALID_PARAMS,
                            &format!("Unknown tool: {}", shown(&name)),
                        ),
                        Kind::Prompt => error(
                            200,
                            Some(&id),
                            jsonrpc::INVALID_PARAMS,
                            &format!("Unknown prompt: {}", shown(&name)),
                        ),
                        Kind::Resource => error(
                            200,
                            Some(&id),
                            jsonrpc::RESOURCE_NOT_FOUND,
                            &format!("Resource not found: {}", shown(&name)),
                        ),
                    };
                };
                p.insert(key.to_owned(), Value::String(upstream_name));
                let up = Arc::clone(&cat.upstreams[upstream]);
                self.forward(session, id, up, method, p, accepts_sse).await
            }
            _ => error(
                200,
                Some(&id),
                jsonrpc::METHOD_NOT_FOUND,
                &format!("Method not found: {}", shown(method)),
            ),
        }
    }

    /// Calls an upstream and relays its answer: JSON when the response comes first, an SSE
    /// stream when notifications (progress, logging) precede it.
    async fn forward(
        self: &Arc<Self>,
        session: &Arc<Session>,
        id: Box<RawValue>,
        up: Arc<Upstream>,
        method: &str,
        mut params: Map<String, Value>,
        accepts_sse: bool,
    ) -> Outcome {
        // MCP (basic, progress): "The progress token MUST be a string or integer value".
        if let Some(t) = params
            .get("_meta")
            .and_then(Value::as_object)
            .and_then(|m| m.get("progressToken"))
            && !(t.is_string() || t.is_i64() || t.is_u64())
        {
            return error(
                200,
                Some(&id),
                jsonrpc::INVALID_PARAMS,
                "Invalid params: _meta.progressToken must be a string or an integer",
            );
        }
        let uid = up.next_id();
        // Progress tokens must be unique within the shared upstream session: use ours, and
        // give the caller's back on the way out.
        let caller_token = params
            .get_mut("_meta")
            .and_then(Value::as_object_mut)
            .and_then(|m| m.insert("progressToken".to_owned(), json!(uid)));
        if caller_token.is_none()
            && let Some(m) = params.get_mut("_meta").and_then(Value::as_object_mut)
        {
            m.remove("progressToken");
        }
        // Cancelled by the caller's notifications/cancelled or by the end of the session.
        let cancel = session.ended.child_token();
        // MCP (basic, requests): an id "MUST NOT have been previously used by the requestor
        // within the same session". A second call with the id of one still in flight would
        // make that one uncancellable, so it is refused and nothing is sent upstream.
        {
            let mut inflight = session
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match inflight.entry(id.get().to_owned()) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    drop(inflight);
                    return error(
                        200,
                        Some(&id),
                        jsonrpc::INVALID_REQUEST,
                        "Invalid Request: a request with this id is already in flight in this session",
                    );
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(cancel.clone());
                }
            }
        }
        let mut call = Call {
            up: Arc::clone(&up),
            uid,
            done: false,
            session: Arc::clone(session),
            key: id.get().to_owned(),
            counter: Arc::clone(&self.inflight_upstream),
        };
        self.inflight_upstream.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.config.upstream_timeout;
        let limit = self.config.max_message_bytes;
        let params = Value::Object(params);
        let mut stream = tokio::select! {
            r = tokio::time::timeout_at(deadline, up.request(uid, method, &params)) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => { call.done = true; return upstream_error(&id, &e) }
                Err(_) => return timeout_error(&id, self.config.upstream_timeout),
            },
            () = cancel.cancelled() => return error(200, Some(&id), jsonrpc::INTERNAL_ERROR, "Request cancelled"),
        };
        let relay = Relay {
            id,
            caller_token,
            limit,
        };
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout_at(deadline, stream.next()) => match r {
                    Ok(n) => n,
                    Err(_) => return timeout_error(&relay.id, self.config.upstream_timeout),
                },
                () = cancel.cancelled() => return error(200, Some(&relay.id), jsonrpc::INTERNAL_ERROR, "Request cancelled"),
            };
            match relay.classify(next) {
                Step::Final(body) => {
                    call.done = true;
                    return Outcome::json(200, body);
                }
                Step::Skip => {}
                Step::Notification(_) if !accepts_sse => {}
                Step::Notification(ev) => {
                    let (tx, rx) = mpsc::channel(64);
                    let _ = tx.try_send(ev);
                    let timeout = self.config.upstream_timeout;
                    tokio::spawn(
                        pump(stream, tx, call, relay, deadline, cancel, timeout)
                            .instrument(tracing::Span::current()),
                    );
                    return Outcome::events(rx);
                }
            }
        }
    }
}

/// Longest caller-supplied name echoed in an error message, in bytes: a 1 MiB method name
/// must not come back as a 1 MiB error (nor fill the logs).
const SHOWN_NAME_BYTES: usize = 128;

/// `name` cut to [`SHOWN_NAME_BYTES`] on a character boundary, with `...` when cut.
fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= SHOWN_NAME_BYTES {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut end = SHOWN_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}...", &name[..end]))
}

/// The `initialize` result for `version`, built with rmcp's model types: tools, resources,
/// prompts and logging, no list-changed notifications, no subscriptions.
fn initialize_result(version: &str) -> String {
    use rmcp::model::{
        Implementation, InitializeResult, PromptsCapability, ProtocolVersion, ResourcesCapability,
        ServerCapabilities, ToolsCapability,
    };
    let mut capabilities = ServerCapabilities::default();
    capabilities.tools = Some(ToolsCapability::default());
    capabilities.resources = Some(ResourcesCapability::default());
    capabilities.prompts = Some(PromptsCapability::default());
    capabilities.logging = Some(serde_json::Map::new());
    let mut result = InitializeResult::new(capabilities);
    result.protocol_version =
        serde_json::from_value::<ProtocolVersion>(json!(version)).unwrap_or_default();
    result.server_info = Implementation::new("mcp-runtime", env!("CARGO_PKG_VERSION"));
    serde_json::to_string(&result).unwrap_or_else(|_| "{}".to_owned())
}

/// One in-flight upstream call. Dropped before `done` (caller gone, deadline, cancel), it
/// sends `notifications/cancelled` upstream so the upstream stops working.
struct Call {
    up: Arc<Upstream>,
    uid: u64,
    done: bool,
    session: Arc<Session>,
    key: String,
    counter: Arc<AtomicUsize>,
}

impl Drop for Call {
    fn drop(&mut self) {
        self.session
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        if !self.done {
            tracing::debug!(upstream = %self.up.config.id, request = self.uid, "cancelling upstream call");
            self.up.notify(
                "notifications/cancelled",
                json!({"requestId": self.uid, "reason": "caller cancelled or timed out"}),
            );
        }
        // Last: the notification is counted as pending before the call stops counting as in
        // flight, so `Runtime::cancel_calls` never sees both at zero in between and lets the
        // process exit before the notification is sent.
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Restores the caller's id and progress token on messages coming back from upstream.
struct Relay {
    id: Box<RawValue>,
    caller_token: Option<Value>,
    limit: usize,
}

enum Step {
    Final(Vec<u8>),
    Notification(SseEvent),
    Skip,
}

#[derive(Deserialize)]
struct UpMessage<'a> {
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

impl Relay {
    fn classify(&self, next: Option<Result<String, UpstreamError>>) -> Step {
        let raw = match next {
            None => {
                return Step::Final(jsonrpc::error_body(
                    Some(&self.id),
                    jsonrpc::INTERNAL_ERROR,
                    "Upstream stream ended without a response",
                ));
            }
            Some(Err(e)) => return Step::Final(upstream_body(&self.id, &e)),
            Some(Ok(raw)) => raw,
        };
        let Ok(m) = serde_json::from_str::<UpMessage<'_>>(&raw) else {
            return Step::Final(jsonrpc::error_body(
                Some(&self.id),
                jsonrpc::INTERNAL_ERROR,
                "Upstream sent invalid JSON-RPC",
            ));
        };
        match (m.method, m.id) {
            (Some(method), None) => {
                let mut params: Value = m
                    .params
                    .and_then(|p| serde_json::from_str(p.get()).ok())
                    .unwrap_or(Value::Null);
                if method == "notifications/progress" {
                    match (&self.caller_token, params.as_object_mut()) {
                        (Some(t), Some(p)) => {
                            p.insert("progressToken".to_owned(), t.clone());
                        }
                        _ => return Step::Skip,
                    }
                }
                Step::Notification(SseEvent::message(jsonrpc::notification_body(
                    &method, &params,
                )))
            }
            // A server-to-client request (sampling, elicitation, roots): not relayed yet.
            (Some(_), Some(_)) => Step::Skip,
            (None, _) => {
                if let Some(result) = m.result {
                    if result.get().len() > self.limit {
                        return Step::Final(jsonrpc::error_body(
                            Some(&self.id),
                            jsonrpc::INTERNAL_ERROR,
                            &format!(
                                "Result of {} bytes exceeds the message size limit of {} bytes",
                                result.get().len(),
                                self.limit
                            ),
                        ));
                    }
                    Step::Final(jsonrpc::result_body(&self.id, result.get()))
                } else if let Some(err) = m.error {
                    let mut out = Vec::with_capacity(err.get().len() + 64);
                    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
                    out.extend_from_slice(self.id.get().as_bytes());
                    out.extend_from_slice(br#","error":"#);
                    out.extend_from_slice(err.get().as_bytes());
                    out.push(b'}');
                    Step::Final(out)
                } else {
                    Step::Skip
                }
            }
        }
    }
}

/// Relays the rest of a streamed upstream call into an SSE response.
async fn pump(
    mut stream: MessageStream,
    tx: mpsc::Sender<SseEvent>,
    mut call: Call,
    relay: Relay,
    deadline: Instant,
    cancel: CancellationToken,
    timeout: Duration,
) {
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.next()) => match r {
                Ok(n) => n,
                Err(_) => {
                    let _ = tx.send(event(timeout_body(&relay.id, timeout))).await;
                    return;
                }
            },
            () = cancel.cancelled() => {
                // Cancelled by the client or by the end of the session: the stream still ends
                // with an answer to its request.
                let body = jsonrpc::error_body(Some(&relay.id), jsonrpc::INTERNAL_ERROR, "Request cancelled");
                let _ = tx.try_send(event(body));
                return;
            }
            () = tx.closed() => return,
        };
        match relay.classify(next) {
            Step::Skip => {}
            Step::Notification(ev) => {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            Step::Final(body) => {
                call.done = true;
                let _ = tx.send(event(body)).await;
                return;
            }
        }
    }
}

fn event(body: Vec<u8>) -> SseEvent {
    SseEvent::message(String::from_utf8(body).unwrap_or_default())
}

fn error(status: u16, id: Option<&RawValue>, code: i64, message: &str) -> Outcome {
    Outcome::json(status, Bytes::from(jsonrpc::error_body(id, code, message)))
}

fn lookup_error(l: &Lookup) -> Outcome {
    match l {
        Lookup::Missing => error(
            400,
            None,
            jsonrpc::BAD_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        ),
        Lookup::NotFound => error(404, None, jsonrpc::NOT_FOUND, "Session not found"),
    }
}

/// The caller sees what kind of upstream fault happened, never the upstream's address or id
/// (those are in the runtime's log).
fn upstream_body(id: &RawValue, e: &UpstreamError) -> Vec<u8> {
    tracing::warn!(error = %e, "upstream call failed");
    let message = match e {
        UpstreamError::Unavailable { .. } => "Upstream server unavailable".to_owned(),
        UpstreamError::Protocol { .. } => "Upstream server sent an invalid answer".to_owned(),
        UpstreamError::TooLarge { .. } => e.to_string(),
    };
    jsonrpc::error_body(Some(id), jsonrpc::INTERNAL_ERROR, &message)
}

fn upstream_error(id: &RawValue, e: &UpstreamError) -> Outcome {
    Outcome::json(200, upstream_body(id, e))
}

fn timeout_body(id: &RawValue, timeout: Duration) -> Vec<u8> {
    jsonrpc::error_body(
        Some(id),
        jsonrpc::NOT_FOUND,
        &format!("Request timed out after {} ms", timeout.as_millis()),
    )
}

fn timeout_error(id: &RawValue, timeout: Duration) -> Outcome {
    Outcome::json(200, timeout_body(id, timeout))
}
