//! The upstream pool: one reusable MCP client session per upstream server, shared by every
//! runtime session, over streamable HTTP or stdio.
//!
//! Built on rmcp's streamable-HTTP client at the transport level ([`StreamableHttpClient`] on a
//! `reqwest::Client`) rather than on its service layer: a POST's own response stream is what
//! carries the progress and logging notifications of that call, and keeping it per call is what
//! lets the runtime forward them to the right caller on a session shared by many callers.
//!
//! What reaches the runtime as text: an answer streamed as SSE yields each event's data as the
//! upstream sent it, so a large result is not parsed into a tree and serialised again. An
//! answer sent as one `application/json` body is parsed by rmcp into its typed
//! `ServerJsonRpcMessage` (that is all its client API returns) and serialised again here: its
//! text is rmcp's encoding of that message (field order and number formatting may differ from
//! the upstream's bytes, and what rmcp's model does not keep is lost).
//!
//! Request ids and progress tokens are rewritten to be unique within the shared upstream
//! session; the caller's own values are restored on the way back (see [`crate::forward`]).
//! An HTTP upstream spawns no task of its own (reqwest's connection pool runs its
//! connections): [`Upstream::notify`] returns the future of a notification for the caller to
//! spawn on the runtime's tracker. A stdio upstream (module `stdio`) is a child process with a
//! supervisor task of its own, stopped by [`Upstream::stop`].
//!
//! Credentials: the upstream's `headers` and `bearer` (read at start, marked sensitive) are
//! default headers of its `reqwest::Client`, sent with every request.
//!
//! Proxies: reqwest honours `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (and their
//! lower-case forms). An upstream on a loopback address (`127.0.0.0/8`, `::1`, `localhost`)
//! is on this host and never goes through a proxy, whatever the environment says; any other
//! upstream follows the environment, and when it is unreachable the error names the proxy
//! variable in effect ([`proxy_variable`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rmcp::model::{ClientJsonRpcMessage, ProtocolVersion};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::catalog::{TransportKind, UpstreamConfig};

mod child;
mod sse;
mod stdio;

/// Why a call to an upstream failed. Each becomes a JSON-RPC error for the caller.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached or broke the connection.
    #[error("upstream {upstream} unavailable: {detail}")]
    Unavailable {
        /// Upstream id from the catalog.
        upstream: String,
        /// What failed.
        detail: String,
    },
    /// A message from the upstream is larger than the runtime's message size limit.
    #[error("Result exceeds the message size limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The upstream closed a call's SSE stream before its answer, after an event with an id:
    /// it means to be polled (MCP 2025-11-25, transports, SEP-1699: the client reconnects
    /// with `Last-Event-ID` after `retry`). The last item of such a stream; the caller resumes
    /// the call with [`Upstream::resume`].
    #[error("upstream closed the call's stream after event {last_event_id}: to be resumed")]
    Polled {
        /// The id of the last event received.
        last_event_id: String,
        /// The `retry` the upstream asked for, in milliseconds, if it sent one.
        retry_ms: Option<u64>,
    },
    /// The upstream answered something that is not MCP.
    #[error("upstream {upstream} protocol error: {detail}")]
    Protocol {
        /// Upstream id from the catalog.
        upstream: String,
        /// What was wrong.
        detail: String,
    },
}

/// Room for the JSON-RPC envelope around a result of the maximum size.
const ENVELOPE_SLACK_BYTES: usize = 1 << 20;

/// A message stream of one upstream call: JSON-RPC messages as text (notifications, then the
/// response), in arrival order.
pub(crate) type MessageStream = BoxStream<'static, Result<String, UpstreamError>>;

#[derive(Clone)]
struct Connection {
    session_id: Option<Arc<str>>,
    headers: HashMap<reqwest::header::HeaderName, reqwest::header::HeaderValue>,
    generation: u64,
}

/// One upstream server and its shared client session.
pub(crate) struct Upstream {
    /// The catalog entry.
    pub(crate) config: UpstreamConfig,
    client: reqwest::Client,
    uri: Arc<str>,
    /// The live session, `None` until first use or after a failure. A `tokio` mutex because
    /// (re)connecting awaits and concurrent callers must wait for one handshake, not race.
    connection: Mutex<Option<Connection>>,
    /// Source of request ids and progress tokens unique within the upstream session.
    next_id: Arc<AtomicU64>,
    generation: AtomicU64,
    limits: StreamableHttpResponseLimits,
    max_message_bytes: usize,
    /// The environment variable whose proxy requests to this upstream go through, if any.
    proxy: Option<&'static str>,
    /// A stdio upstream's child process and session (then the HTTP fields are unused).
    stdio: Option<stdio::Stdio>,
    /// The catalog id as the `upstream` label of the metrics (shared, not copied per call).
    pub(crate) label: Arc<str>,
    /// Set when the last attempt to reach the upstream failed at the transport (unreachable,
    /// handshake refused), cleared by the next request it answers: what `/health` reports as
    /// a degraded runtime.
    down: AtomicBool,
    /// Set by a handshake whose server declared `resources.subscribe` or any `listChanged`:
    /// the runtime then keeps this upstream's standalone GET stream open
    /// ([`crate::subscribe::listen`]).
    pub(crate) notifies: AtomicBool,
    /// Unique in the process: tells this upstream from one a reload put in its place.
    pub(crate) instance: u64,
    /// Where its `list_changed` notifications go ([`crate::live`]).
    pub(crate) notices: crate::live::Notices,
    /// Cancelled when a reload removed or replaced it: stops its listener.
    pub(crate) retired: tokio_util::sync::CancellationToken,
    /// Its credentials and a stdio server's environment as read when it was created: a reload
    /// that reads other values replaces the upstream ([`crate::live`]).
    pub(crate) resolved: (reqwest::header::HeaderMap, Vec<(String, String)>),
    /// The URIs the current upstream session has been told to subscribe to. Held across the
    /// `resources/subscribe` / `resources/unsubscribe` it sends, so that what one session's
    /// end unsubscribes and what another session subscribes reach the upstream in the order
    /// the runtime decided them ([`crate::subscribe::Subscriptions::sync`]).
    pub(crate) subscribed: Mutex<std::collections::HashSet<String>>,
    /// Which era the upstream serves for a sessionless client's calls ([`Era`] as a number),
    /// learned once with `server/discover` ([`Upstream::speaks_sessionless`]).
    era: AtomicU8,
    /// Held while `server/discover` is asked, so concurrent first calls ask once.
    era_probe: Mutex<()>,
}

/// What an upstream serves, as far as a client of the sessionless era (MCP 2026-07-28) is
/// concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Era {
    /// Not asked yet.
    Unknown = 0,
    /// Only the session era (2025-11-25 and earlier): a 2026 client's calls go through the
    /// runtime's session with it.
    Session = 1,
    /// The sessionless era too: a 2026 client's `tools/call`, `prompts/get` and
    /// `resources/read` go to it as 2026-07-28 requests, so it may answer `input_required`.
    Sessionless = 2,
}

/// The protocol version of the requests sent to an upstream in the sessionless era.
const SESSIONLESS_VERSION: &str = crate::runtime::SESSIONLESS_PROTOCOL_VERSIONS[0];

/// `detail` followed by each of `cause` and its sources that it does not already say, joined
/// with `: ` (reqwest's "error sending request" hides the reason two or three levels down).
pub(crate) fn with_causes(
    mut detail: String,
    mut cause: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    while let Some(c) = cause {
        let text = c.to_string();
        if !detail.contains(&text) {
            detail = format!("{detail}: {text}");
        }
        cause = c.source();
    }
    detail
}

impl Upstream {
    /// Creates the pool entry; nothing is connected (or started) until [`Upstream::connect`]
    /// or a call. `headers` go with every HTTP request (the upstream's credentials); `roots`,
    /// when not empty, are the only certificate authorities an `https://` upstream may chain
    /// to (its `ca_file`), else the system's roots are; its `list_changed` notifications go
    /// to `notices`.
    pub(crate) fn new(
        config: UpstreamConfig,
        max_message_bytes: usize,
        headers: reqwest::header::HeaderMap,
        roots: Vec<reqwest::Certificate>,
        notices: crate::live::Notices,
    ) -> Self {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let loopback = is_loopback(&config.url);
        let resolved = (headers.clone(), config.process_env().unwrap_or_default());
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if loopback {
            builder = builder.no_proxy();
        }
        if !roots.is_empty() {
            builder = builder.tls_certs_only(roots);
        }
        let client = builder.build().unwrap_or_default();
        let https = config
            .url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let proxy = if loopback {
            None
        } else {
            proxy_variable(https, |name| std::env::var(name).ok())
        };
        let mut limits = StreamableHttpResponseLimits::default();
        // An upstream event carries one JSON-RPC message: allow the runtime's limit plus room
        // for the envelope, so that a result just over the limit reaches the runtime's own
        // check and anything larger is cut by rmcp before it is buffered whole.
        limits.max_sse_event_size = max_message_bytes.saturating_add(ENVELOPE_SLACK_BYTES);
        limits.max_json_response_size = max_message_bytes.saturating_add(ENVELOPE_SLACK_BYTES);
        let next_id = Arc::new(AtomicU64::new(1));
        let stdio =
            matches!(config.transport, TransportKind::Stdio | TransportKind::Sse).then(|| {
                let ids = Arc::clone(&next_id);
                stdio::Stdio::new(
                    config.clone(),
                    Arc::new(move || ids.fetch_add(1, Ordering::Relaxed)),
                    (instance, notices.clone()),
                    max_message_bytes.saturating_add(ENVELOPE_SLACK_BYTES),
                    (config.transport == TransportKind::Sse).then(|| client.clone()),
                )
            });
        Self {
            uri: Arc::from(config.url.as_str()),
            label: Arc::from(config.id.as_str()),
            down: AtomicBool::new(false),
            notifies: AtomicBool::new(false),
            instance,
            notices,
            retired: tokio_util::sync::CancellationToken::new(),
            resolved,
            config,
            client,
            connection: Mutex::new(None),
            subscribed: Mutex::default(),
            next_id,
            stdio,
            generation: AtomicU64::new(0),
            limits,
            max_message_bytes,
            proxy,
            era: AtomicU8::new(Era::Unknown as u8),
            era_probe: Mutex::new(()),
        }
    }

    /// Whether a sessionless client's call should reach this upstream as a request of the
    /// sessionless era (MCP 2026-07-28, SEP-2575): true when the upstream's `server/discover`
    /// lists that version in `supportedVersions`. Asked once per upstream, on the first call
    /// that needs it; an upstream that answers anything else (an error, HTTP 400/404, no
    /// such version) is served through the runtime's session with it from then on. Stdio and
    /// legacy SSE upstreams are always spoken to in their session. An unreachable upstream is
    /// not remembered as either (the call then fails as any call to it does).
    pub(crate) async fn speaks_sessionless(&self) -> bool {
        if self.stdio.is_some() {
            return false;
        }
        match self.era.load(Ordering::Relaxed) {
            x if x == Era::Session as u8 => return false,
            x if x == Era::Sessionless as u8 => return true,
            _ => {}
        }
        let _probe = self.era_probe.lock().await;
        if self.era.load(Ordering::Relaxed) != Era::Unknown as u8 {
            return self.era.load(Ordering::Relaxed) == Era::Sessionless as u8;
        }
        let params = json!({"_meta": {
            crate::era::META_PROTOCOL_VERSION: SESSIONLESS_VERSION,
            crate::era::META_CLIENT_CAPABILITIES: {},
        }});
        let era = match self.discover(params).await {
            Ok(result) => {
                let speaks = result
                    .get("supportedVersions")
                    .and_then(Value::as_array)
                    .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(SESSIONLESS_VERSION)));
                if speaks {
                    Era::Sessionless
                } else {
                    Era::Session
                }
            }
            // Not reached: nothing learned, the call goes the way every call went.
            Err(UpstreamError::Unavailable { .. }) => return false,
            // Answered, but not as a server of that era: an HTTP status or a JSON-RPC error.
            Err(_) => Era::Session,
        };
        tracing::info!(upstream = %self.config.id, ?era, "upstream era for sessionless clients");
        self.era.store(era as u8, Ordering::Relaxed);
        era == Era::Sessionless
    }

    /// `server/discover` as a request of the sessionless era; its result.
    async fn discover(&self, params: Value) -> Result<Value, UpstreamError> {
        self.call_in("server/discover", &params, true).await
    }

    /// Resumes a call whose SSE stream the upstream closed ([`UpstreamError::Polled`]): a GET
    /// in the current session with `Last-Event-ID` (MCP 2025-11-25, transports: resumability
    /// and redelivery), whose stream carries the rest of the call's messages.
    ///
    /// # Errors
    ///
    /// [`UpstreamError`] when the upstream cannot be reached or refuses the GET (for example
    /// when the session it was in has ended).
    pub(crate) async fn resume(
        &self,
        last_event_id: String,
    ) -> Result<MessageStream, UpstreamError> {
        if self.stdio.is_some() {
            return Err(self.protocol("a stdio upstream's call cannot be resumed"));
        }
        let conn = self.current().await?;
        let r = self
            .client
            .get_stream_with_max_sse_event_size(
                self.uri.clone(),
                conn.session_id.clone(),
                Some(last_event_id),
                None,
                conn.headers.clone(),
                self.limits.max_sse_event_size,
            )
            .await;
        let r = match r {
            Ok(stream) => Ok(sse_messages(
                self.config.id.clone(),
                self.max_message_bytes,
                stream,
            )),
            Err(e @ StreamableHttpError::HttpStatus(_)) => Err(self.protocol(e)),
            Err(e) => Err(self.unavailable(e)),
        };
        self.mark(&r);
        r
    }

    /// Sends one request of the sessionless era (MCP 2026-07-28): no session id; the
    /// `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers the revision requires
    /// (`Mcp-Name`: the params' `name`, or `uri` for `resources/read`); `params` must carry
    /// the `_meta` protocol version and client capabilities. Never retried: a request of
    /// this era has no session to lose.
    async fn send_sessionless(
        &self,
        id: u64,
        method: &str,
        params: Value,
        (traceparent, param_headers): (Option<&str>, &[(String, String)]),
    ) -> Result<MessageStream, UpstreamError> {
        use reqwest::header::{HeaderName, HeaderValue};
        let mut headers = HashMap::new();
        headers.insert(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_static(SESSIONLESS_VERSION),
        );
        if let Ok(v) = HeaderValue::from_str(method) {
            headers.insert(HeaderName::from_static("mcp-method"), v);
        }
        let name = params
            .get(if method == "resources/read" {
                "uri"
            } else {
                "name"
            })
            .and_then(Value::as_str);
        // A name that is not plain visible ASCII goes base64-wrapped, as the revision says.
        if let Some(v) = name
            .map(crate::era::encode_header_value)
            .and_then(|n| HeaderValue::from_str(&n).ok())
        {
            headers.insert(HeaderName::from_static("mcp-name"), v);
        }
        if let Some(v) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert(HeaderName::from_static("traceparent"), v);
        }
        for (name, value) in param_headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let msg = message(&body).map_err(|e| self.protocol(e))?;
        match self
            .client
            .post_message_with_response_limits(
                self.uri.clone(),
                msg,
                None,
                None,
                headers,
                self.limits,
            )
            .await
        {
            Ok(response) => Ok(into_stream(self, response)),
            Err(StreamableHttpError::ResponseBodyTooLarge { .. }) => Err(UpstreamError::TooLarge {
                limit: self.max_message_bytes,
            }),
            // The upstream answered with an HTTP error status (400, 404, ...): reached, and
            // refusing the request.
            Err(e @ StreamableHttpError::HttpStatus(_)) => Err(self.protocol(e)),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    /// A fresh id, unique within this upstream's session.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The upstream could not be reached: `error` with its causes (a TLS certificate error is
    /// three levels under reqwest's "error sending request"), each said once, and the proxy
    /// variable in effect, if any, since an unreachable proxy looks like an unreachable
    /// upstream.
    fn unavailable(&self, error: impl std::error::Error + 'static) -> UpstreamError {
        let error: &(dyn std::error::Error + 'static) = &error;
        // rmcp's `Client(reqwest::Error)` shows the reqwest error but does not name it as its
        // source: follow the reqwest error's own causes.
        let causes = match error
            .downcast_ref::<rmcp::transport::streamable_http_client::StreamableHttpError<reqwest::Error>>()
        {
            Some(rmcp::transport::streamable_http_client::StreamableHttpError::Client(inner)) => {
                std::error::Error::source(inner)
            }
            _ => error.source(),
        };
        let detail = with_causes(error.to_string(), causes);
        let detail = match self.proxy {
            Some(var) => format!(
                "{detail} (requests to this upstream go through the proxy set by {var} unless \
                 NO_PROXY lists its host; loopback upstreams never use a proxy)"
            ),
            None => detail,
        };
        UpstreamError::Unavailable {
            upstream: self.config.id.clone(),
            detail,
        }
    }

    fn protocol(&self, detail: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.config.id.clone(),
            detail: detail.to_string(),
        }
    }

    /// Performs the MCP handshake (`initialize`, `notifications/initialized`) if there is no
    /// live session, and returns the upstream's `initialize` result when it connected now.
    ///
    /// # Errors
    ///
    /// [`UpstreamError`] when the upstream is unreachable or answers the handshake badly.
    pub(crate) async fn connect(&self) -> Result<Option<Value>, UpstreamError> {
        if let Some(s) = &self.stdio {
            return s.connect().await.map(Some);
        }
        let mut guard = self.connection.lock().await;
        if guard.is_some() {
            return Ok(None);
        }
        let (conn, result) = self.handshake().await?;
        *guard = Some(conn);
        Ok(Some(result))
    }

    async fn current(&self) -> Result<Connection, UpstreamError> {
        let mut guard = self.connection.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let (conn, _) = self.handshake().await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn invalidate(&self, generation: u64) {
        let mut guard = self.connection.lock().await;
        if guard.as_ref().is_some_and(|c| c.generation == generation) {
            *guard = None;
        }
    }

    /// The MCP handshake: `initialize`, then `notifications/initialized` on the new session.
    async fn handshake(&self) -> Result<(Connection, Value), UpstreamError> {
        let (session_id, result) = self.initialize().await?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("2025-03-26")
            .to_owned();
        let mut headers = HashMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&version) {
            headers.insert(
                reqwest::header::HeaderName::from_static("mcp-protocol-version"),
                value,
            );
        }
        let caps = result.get("capabilities");
        let declares = |kind: &str, flag: &str| {
            caps.and_then(|c| c.get(kind))
                .and_then(|k| k.get(flag))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let notifies = declares("resources", "subscribe")
            || ["tools", "prompts", "resources"]
                .iter()
                .any(|k| declares(k, "listChanged"));
        self.notifies.store(notifies, Ordering::Relaxed);
        let conn = Connection {
            session_id: session_id.map(Arc::from),
            headers,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let initialized = message(&json!({
            "jsonrpc": "2.0", "method": "notifications/initialized"
        }))
        .map_err(|e| self.protocol(e))?;
        self.client
            .post_message(
                self.uri.clone(),
                initialized,
                conn.session_id.clone(),
                None,
                conn.headers.clone(),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        tracing::info!(upstream = %self.config.id, version, "upstream session established");
        Ok((conn, result))
    }

    /// Sends `initialize`; returns the session id the upstream assigned and its result.
    async fn initialize(&self) -> Result<(Option<String>, Value), UpstreamError> {
        let id = self.next_id();
        let init = message(&json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": ProtocolVersion::LATEST_WITH_INITIALIZE.to_string(),
                // Everything the runtime can relay: the session is shared by every client,
                // so each request is checked against its own client's capabilities when it
                // arrives (`crate::server_requests`).
                "capabilities": crate::server_requests::upstream_capabilities(),
                "clientInfo": {"name": "mcp-runtime", "version": env!("CARGO_PKG_VERSION")},
            }
        }))
        .map_err(|e| self.protocol(e))?;
        let response = self
            .client
            .post_message_with_response_limits(
                self.uri.clone(),
                init,
                None,
                None,
                HashMap::new(),
                self.limits,
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        let session_id = match &response {
            StreamableHttpPostResponse::Json(_, s) | StreamableHttpPostResponse::Sse(_, s) => {
                s.clone()
            }
            _ => None,
        };
        let raw = first_response(self, response).await?;
        let v: Value = serde_json::from_str(&raw).map_err(|e| self.protocol(e))?;
        if let Some(err) = v.get("error") {
            return Err(self.protocol(format!("initialize failed: {err}")));
        }
        Ok((session_id, v.get("result").cloned().unwrap_or(Value::Null)))
    }

    /// Sends one request and returns its message stream. A session the upstream no longer
    /// knows (it restarted) and a connection that could not be opened are re-established and
    /// the request sent once more; a request that may have reached the upstream is never
    /// sent twice.
    ///
    /// # Errors
    ///
    /// [`UpstreamError`] when the upstream is unreachable or rejects the request at the HTTP
    /// level.
    ///
    /// `sessionless`: send it as a request of the sessionless era instead (no session; see
    /// [`Upstream::speaks_sessionless`]), with these `Mcp-Param-*` headers (name, value);
    /// `params` then carry its `_meta`.
    pub(crate) async fn request(
        &self,
        id: u64,
        method: &str,
        params: Value,
        traceparent: Option<&str>,
        sessionless: Option<&[(String, String)]>,
    ) -> Result<MessageStream, UpstreamError> {
        let r = if let Some(param_headers) = sessionless {
            self.send_sessionless(id, method, params, (traceparent, param_headers))
                .await
        } else {
            self.send_request(id, method, params, traceparent).await
        };
        self.mark(&r);
        r
    }

    /// Whether the last attempt to reach the upstream failed at the transport.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Records whether the upstream was reached: an [`UpstreamError::Unavailable`] marks it
    /// down, anything else (an answer, an answer refused for its size) marks it up.
    pub(crate) fn mark<T>(&self, r: &Result<T, UpstreamError>) {
        self.set_down(matches!(r, Err(UpstreamError::Unavailable { .. })));
    }

    /// Marks the upstream down (unreachable) or up, logging a change.
    pub(crate) fn set_down(&self, down: bool) {
        if self.down.load(Ordering::Relaxed) != down {
            self.down.store(down, Ordering::Relaxed);
            if down {
                tracing::warn!(upstream = %self.config.id, "upstream unreachable; health reports degraded");
            } else {
                tracing::info!(upstream = %self.config.id, "upstream reachable again");
            }
        }
    }

    async fn send_request(
        &self,
        id: u64,
        method: &str,
        params: Value,
        traceparent: Option<&str>,
    ) -> Result<MessageStream, UpstreamError> {
        if let Some(s) = &self.stdio {
            return s.request(id, method, params).await;
        }
        // `params` moves into `body`; the typed message is built from it once per attempt
        // (the retry after a lost session is rare), so a large argument is held twice (the
        // JSON value and the message being sent) rather than three times.
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut first = Some(message(&body).map_err(|e| self.protocol(e))?);
        let mut retried = false;
        loop {
            let conn = self.current().await?;
            let msg = match first.take() {
                Some(m) => m,
                None => message(&body).map_err(|e| self.protocol(e))?,
            };
            let mut headers = conn.headers.clone();
            if let Some(v) =
                traceparent.and_then(|t| reqwest::header::HeaderValue::from_str(t).ok())
            {
                headers.insert(reqwest::header::HeaderName::from_static("traceparent"), v);
            }
            let res = self
                .client
                .post_message_with_response_limits(
                    self.uri.clone(),
                    msg,
                    conn.session_id.clone(),
                    None,
                    headers,
                    self.limits,
                )
                .await;
            match res {
                Ok(response) => return Ok(into_stream(self, response)),
                Err(StreamableHttpError::ResponseBodyTooLarge { .. }) => {
                    return Err(UpstreamError::TooLarge {
                        limit: self.max_message_bytes,
                    });
                }
                Err(e) if !retried && is_retryable(&e) => {
                    tracing::info!(upstream = %self.config.id, error = %e, "upstream session lost; reconnecting");
                    self.invalidate(conn.generation).await;
                    retried = true;
                }
                Err(e) => {
                    if !matches!(e, StreamableHttpError::HttpStatus(_)) {
                        self.invalidate(conn.generation).await;
                    }
                    return Err(self.unavailable(e));
                }
            }
        }
    }

    /// Sends a notification, errors only logged: used for `notifications/cancelled` when a
    /// caller goes away or a call times out. The caller spawns the returned future (on the
    /// runtime's tracker, so that shutdown waits for it).
    pub(crate) async fn notify(self: Arc<Self>, method: &'static str, params: Value) {
        if let Some(s) = &self.stdio {
            return s.notify(method, params).await;
        }
        let Ok(conn) = self.current().await else {
            return;
        };
        let Ok(msg) = message(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
        else {
            return;
        };
        if let Err(e) = self
            .client
            .post_message(self.uri.clone(), msg, conn.session_id, None, conn.headers)
            .await
        {
            tracing::debug!(upstream = %self.config.id, error = %e, method, "notification not delivered");
        }
    }

    /// Sends a JSON-RPC response to a request the upstream sent (MCP streamable HTTP,
    /// "Sending Messages to the Server": a POST of the response, answered `202`), errors only
    /// logged. The caller spawns it or awaits it. A stdio upstream's requests are answered by
    /// its supervisor, never relayed, so there is nothing to send to one here.
    pub(crate) async fn respond(self: Arc<Self>, msg: ClientJsonRpcMessage) {
        if self.stdio.is_some() {
            tracing::debug!(upstream = %self.config.id, "response for a stdio upstream not sent");
            return;
        }
        let Ok(conn) = self.current().await else {
            return;
        };
        if let Err(e) = self
            .client
            .post_message(self.uri.clone(), msg, conn.session_id, None, conn.headers)
            .await
        {
            tracing::debug!(upstream = %self.config.id, error = %e, "response not delivered");
        }
    }

    /// Opens the upstream session's standalone GET stream (MCP streamable HTTP, "Listening
    /// for messages from the server"), establishing the session first if there is none.
    /// Returns the session's generation (it changes when the session is re-established) and
    /// the stream of JSON-RPC messages as text. A session the upstream no longer knows is
    /// dropped here, so the next call re-establishes it.
    ///
    /// # Errors
    ///
    /// [`UpstreamError::Unavailable`] when the upstream cannot be reached or lost the session;
    /// [`UpstreamError::Protocol`] when it does not offer a GET stream (HTTP 405) or is a
    /// stdio upstream (whose notifications are not read here).
    pub(crate) async fn open_stream(&self) -> Result<(u64, MessageStream), UpstreamError> {
        if self.stdio.is_some() {
            return Err(self.protocol("a stdio upstream has no GET stream"));
        }
        let conn = self.current().await?;
        let id = self.config.id.clone();
        let limit = self.max_message_bytes;
        match self
            .client
            .get_stream(
                self.uri.clone(),
                conn.session_id.clone(),
                None,
                None,
                conn.headers.clone(),
            )
            .await
        {
            Ok(events) => {
                let stream = events
                    .filter_map(move |ev| {
                        let id = id.clone();
                        async move {
                            match ev {
                                Ok(sse) => sse.data.filter(|d| !d.trim().is_empty()).map(Ok),
                                Err(e) if is_event_too_large(&e) => {
                                    Some(Err(UpstreamError::TooLarge { limit }))
                                }
                                Err(e) => Some(Err(UpstreamError::Unavailable {
                                    upstream: id,
                                    detail: format!("GET stream broke: {e}"),
                                })),
                            }
                        }
                    })
                    .boxed();
                Ok((conn.generation, stream))
            }
            Err(StreamableHttpError::ServerDoesNotSupportSse) => {
                Err(self.protocol("the upstream offers no GET stream"))
            }
            Err(e) => {
                self.invalidate(conn.generation).await;
                Err(self.unavailable(e))
            }
        }
    }

    /// Stops a stdio upstream's server and waits until it has exited (shutdown); nothing for
    /// an HTTP upstream.
    pub(crate) async fn stop(&self) {
        if let Some(s) = &self.stdio {
            s.stop().await;
        }
    }

    /// Sends a request and waits for its response message, ignoring notifications; used at
    /// discovery.
    pub(crate) async fn call(&self, method: &str, params: &Value) -> Result<Value, UpstreamError> {
        self.call_in(method, params, false).await
    }

    /// [`Upstream::call`] in the runtime's session, or as a request of the sessionless era.
    async fn call_in(
        &self,
        method: &str,
        params: &Value,
        sessionless: bool,
    ) -> Result<Value, UpstreamError> {
        let id = self.next_id();
        let mut stream = self
            .request(id, method, params.clone(), None, sessionless.then_some(&[]))
            .await?;
        while let Some(msg) = stream.next().await {
            let v: Value = serde_json::from_str(&msg?).map_err(|e| self.protocol(e))?;
            if v.get("id").is_some() && v.get("method").is_none() {
                if let Some(err) = v.get("error") {
                    return Err(self.protocol(format!("{method} failed: {err}")));
                }
                return Ok(v.get("result").cloned().unwrap_or(Value::Null));
            }
        }
        Err(self.protocol(format!("{method}: stream ended without a response")))
    }
}

fn is_retryable(e: &StreamableHttpError<reqwest::Error>) -> bool {
    match e {
        StreamableHttpError::SessionExpired => true,
        StreamableHttpError::Client(e) => e.is_connect(),
        _ => false,
    }
}

fn message(v: &Value) -> Result<ClientJsonRpcMessage, serde_json::Error> {
    ClientJsonRpcMessage::deserialize(v)
}

use serde::Deserialize as _;

fn into_stream(up: &Upstream, response: StreamableHttpPostResponse) -> MessageStream {
    let id = up.config.id.clone();
    let limit = up.max_message_bytes;
    match response {
        StreamableHttpPostResponse::Json(msg, _) => {
            let r = serde_json::to_string(&msg).map_err(|e| UpstreamError::Protocol {
                upstream: id,
                detail: e.to_string(),
            });
            futures::stream::once(async move { r }).boxed()
        }
        StreamableHttpPostResponse::Sse(stream, _) => sse_messages(id, limit, stream),
        _ => futures::stream::once(async move {
            Err(UpstreamError::Protocol {
                upstream: id,
                detail: "no response message for a request".into(),
            })
        })
        .boxed(),
    }
}

/// The messages of an upstream's SSE stream (a call's POST answer, or its resumption). When
/// the stream ends after an event with an id, a last [`UpstreamError::Polled`] follows: a
/// reader that has not had its answer by then resumes the call ([`Upstream::resume`]); a
/// reader that had it never asks for that item.
fn sse_messages(
    id: String,
    limit: usize,
    stream: BoxStream<'static, Result<sse_stream::Sse, sse_stream::Error>>,
) -> MessageStream {
    let last = Arc::new(std::sync::Mutex::new((None::<String>, None::<u64>)));
    let seen = Arc::clone(&last);
    let polled = futures::stream::once(async move {
        let (last_event_id, retry_ms) = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        last_event_id.map(|last_event_id| {
            Err(UpstreamError::Polled {
                last_event_id,
                retry_ms,
            })
        })
    })
    .filter_map(futures::future::ready);
    stream
        .filter_map(move |ev| {
            let id = id.clone();
            let last = Arc::clone(&last);
            async move {
                match ev {
                    Ok(sse) => {
                        if sse.id.is_some() || sse.retry.is_some() {
                            let mut last = last
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            if let Some(event_id) = sse.id {
                                last.0 = Some(event_id);
                            }
                            if let Some(retry) = sse.retry {
                                last.1 = Some(retry);
                            }
                        }
                        sse.data.filter(|d| !d.trim().is_empty()).map(Ok)
                    }
                    Err(e) if is_event_too_large(&e) => {
                        Some(Err(UpstreamError::TooLarge { limit }))
                    }
                    Err(e) => Some(Err(UpstreamError::Unavailable {
                        upstream: id,
                        detail: format!("event stream broke: {e}"),
                    })),
                }
            }
        })
        .chain(polled)
        .boxed()
}

/// Whether an error of an upstream's SSE stream is rmcp's cap on the size of one event
/// (`StreamableHttpResponseLimits::max_sse_event_size`). rmcp reports it only in the text of
/// a private error type boxed in `sse_stream::Error::Body`, so the text is matched here and
/// nowhere else; `tests::rmcp_event_size_error_is_recognised` pins it against rmcp itself.
fn is_event_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    e.to_string().contains("exceeded the maximum size")
}

async fn first_response(
    up: &Upstream,
    response: StreamableHttpPostResponse,
) -> Result<String, UpstreamError> {
    let mut stream = into_stream(up, response);
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        // Skip notifications that may precede the response on an SSE stream.
        let v: Value = serde_json::from_str(&msg).map_err(|e| up.protocol(e))?;
        if v.get("method").is_none() {
            return Ok(msg);
        }
    }
    Err(up.protocol("stream ended without a response"))
}

/// Whether `url` names a host on this machine: an address in `127.0.0.0/8` or `::1` (also as
/// an IPv4-mapped address), `localhost` or a name under `.localhost` (RFC 6761, section 6.3).
/// A URL that does not parse is not loopback.
fn is_loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

/// The environment variable whose proxy reqwest uses for a non-loopback upstream, read the
/// way reqwest (through hyper-util's matcher) reads them: for `https` the first of
/// `HTTPS_PROXY`, `https_proxy` that is set, for `http` the first of `HTTP_PROXY`,
/// `http_proxy`; if that is unset or empty, the first set of `ALL_PROXY`, `all_proxy`; none at
/// all in a CGI process (`REQUEST_METHOD` set). `NO_PROXY` is not evaluated here: the error
/// message says that it may exempt the host. `env` looks a variable up (the tests pass a map).
fn proxy_variable(https: bool, env: impl Fn(&str) -> Option<String>) -> Option<&'static str> {
    if env("REQUEST_METHOD").is_some() {
        return None;
    }
    let first_set = |names: [&'static str; 2]| {
        names
            .into_iter()
            .find_map(|n| env(n).map(|v| (n, v)))
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, _)| n)
    };
    let specific = if https {
        ["HTTPS_PROXY", "https_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy"]
    };
    first_set(specific).or_else(|| first_set(["ALL_PROXY", "all_proxy"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Answers one HTTP request on `listener` with `response`, after reading the request.
    async fn answer_once(listener: tokio::net::TcpListener, response: Vec<u8>) {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        conn.write_all(&response).await.unwrap();
        conn.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn rmcp_event_size_error_is_recognised() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Arc<str> = Arc::from(format!("http://{}/mcp", listener.local_addr().unwrap()));
        let mut response =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: "
                .to_vec();
        response.extend_from_slice(&[b'x'; 1000]);
        response.extend_from_slice(b"\n\n");
        let server = tokio::spawn(answer_once(listener, response));
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = 100;
        let ping = message(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).unwrap();
        let answer = reqwest::Client::new()
            .post_message_with_response_limits(uri, ping, None, None, HashMap::new(), limits)
            .await
            .unwrap();
        let StreamableHttpPostResponse::Sse(mut events, _) = answer else {
            panic!("not an SSE answer: {answer:?}");
        };
        let err = events.next().await.unwrap().unwrap_err();
        assert!(is_event_too_large(&err), "not recognised: {err}");
        assert!(!is_event_too_large(&UpstreamError::TooLarge { limit: 1 }));
        server.await.unwrap();
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for url in [
            "http://127.0.0.1:8080/mcp",
            "http://127.3.4.5/mcp",
            "http://[::1]:9000/mcp",
            "http://[::ffff:127.0.0.1]/mcp",
            "http://localhost:1/mcp",
            "http://LOCALHOST/mcp",
            "https://api.localhost/mcp",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1/mcp",
            "http://[2001:db8::1]/mcp",
            "https://example.com/mcp",
            "http://localhost.example.com/mcp",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn the_proxy_variable_in_effect_is_named_as_reqwest_reads_them() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(proxy_variable(false, env(&[])), None);
        assert_eq!(
            proxy_variable(false, env(&[("http_proxy", "http://p:1")])),
            Some("http_proxy")
        );
        assert_eq!(
            proxy_variable(
                false,
                env(&[("HTTP_PROXY", "http://p:1"), ("http_proxy", "http://q:1")])
            ),
            Some("HTTP_PROXY")
        );
        // An http proxy is not used for https; ALL_PROXY covers both.
        assert_eq!(
            proxy_variable(true, env(&[("http_proxy", "http://p:1")])),
            None
        );
        assert_eq!(
            proxy_variable(
                true,
                env(&[("http_proxy", "http://p:1"), ("all_proxy", "http://a:1")])
            ),
            Some("all_proxy")
        );
        // Set but empty falls back to ALL_PROXY, as in reqwest.
        assert_eq!(
            proxy_variable(
                false,
                env(&[("HTTP_PROXY", ""), ("ALL_PROXY", "socks5://a:1")])
            ),
            Some("ALL_PROXY")
        );
        assert_eq!(
            proxy_variable(
                false,
                env(&[("HTTP_PROXY", "http://p:1"), ("REQUEST_METHOD", "GET")])
            ),
            None
        );
    }
}
