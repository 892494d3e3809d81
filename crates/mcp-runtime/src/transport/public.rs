//! The public endpoint of edge mode: streamable HTTP on TCP (`--public-listen`), `/mcp` and
//! `/servers/{id}/mcp` with GET, POST and DELETE, with the gateway's public semantics, the
//! caller resolved by the policy core ([`crate::policy`]).
//!
//! Order of the checks, as the gateway's: the path (404), the method (405), `Host` (421) and
//! `Origin` (403) against the allow-lists, the caller (ResolveCaller: 401 with the core's
//! `WWW-Authenticate`, 403, or 503 when the core cannot answer or too many resolutions are in
//! progress, `crate::policy::flood`), then the body and the MCP
//! request through the same path as the HTTP/JSON adapter ([`super::http::serve_mcp`]). An
//! `x-contextforge-auth-context` or `x-contextforge-server-id` header from a public client is
//! never read: the caller is the core's answer and the scope is the path.
//!
//! Connections: the admission's cap and first-byte timeout, hyper's header read timeout and a
//! cap on the request head's size (a longer head is answered 431 by hyper).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::http::{HeaderMap, HeaderValue, Request as HttpRequest};
use axum::response::Response;
use mcp_runtime_core::{RequestError, Runtime, Transport};

use super::http::{
    Stalled, discard_body, health_response, mcp_method, method_not_allowed, ready_response,
    rpc_error, serve_mcp,
};
use crate::host_origin::{AllowLists, Refusal};
use crate::listener::Admission;
use crate::policy::flood::Busy;
use crate::policy::{CallerQuery, Policy, Resolution, ResolveError};

/// The challenge of a 401 when the core gave none (the gateway's realm).
const DEFAULT_CHALLENGE: &str = "Bearer realm=\"mcp-gateway\"";

/// What the public endpoint serves with.
#[derive(Debug)]
pub(crate) struct Edge {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) allow: AllowLists,
    /// [`crate::PublicEndpoint::sse_keep_alive`].
    sse_keep_alive: Option<Duration>,
    /// Request ids: a per-process prefix and a counter.
    prefix: String,
    next_id: AtomicU64,
}

impl Edge {
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        policy: Arc<Policy>,
        allow: AllowLists,
        sse_keep_alive: Option<Duration>,
    ) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        Self {
            runtime,
            policy,
            allow,
            sse_keep_alive,
            prefix: format!("{:x}-{started:x}", std::process::id()),
            next_id: AtomicU64::new(1),
        }
    }

    fn request_id(&self) -> String {
        format!(
            "{}-{:x}",
            self.prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Serves the public endpoint on `listener` until `shutdown` completes, then waits for open
/// connections to finish their requests (the caller bounds that wait by the grace period).
pub(crate) async fn serve(
    edge: Arc<Edge>,
    listener: tokio::net::TcpListener,
    admission: Admission,
    max_header_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let header_read_timeout: Duration = admission.header_read_timeout();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let idle = Arc::new(IdleConnections::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let evict = || idle.evict_oldest();
        let (conn, peer) = tokio::select! {
            c = admission.accept_tcp(&listener, &evict) => c,
            () = &mut shutdown => break,
        };
        let (conn_id, close) = idle.open();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            // The service below refuses a complete head over the limit (431, JSON-RPC error);
            // hyper stops reading one at twice the limit (its 431 has no body), so a head never
            // holds more than about that much memory.
            .max_header_size(max_header_bytes.saturating_mul(2));
        let edge = Arc::clone(&edge);
        let conns = Arc::clone(&idle);
        let service = hyper::service::service_fn(move |req: HttpRequest<hyper::body::Incoming>| {
            let edge = Arc::clone(&edge);
            // Busy from the complete head until the answer's body is written (or dropped).
            let busy = conns.busy(conn_id);
            async move {
                let (parts, body) = req.into_parts();
                let head = head_bytes(&parts.method, &parts.uri, &parts.headers);
                if head > max_header_bytes {
                    let mut r = rpc_error(RequestError::HeadTooLarge {
                        limit: max_header_bytes,
                    });
                    r.headers_mut()
                        .insert("connection", HeaderValue::from_static("close"));
                    return Ok(r.map(|b| Guarded {
                        body: b,
                        _busy: busy,
                    }));
                }
                let r = route(
                    edge,
                    peer,
                    parts.uri.path(),
                    &parts.method,
                    &parts.headers,
                    stall_bounded(HttpBody::new(body), header_read_timeout),
                )
                .await;
                Ok::<_, Infallible>(r.map(|b| Guarded {
                    body: b,
                    _busy: busy,
                }))
            }
        });
        let served = builder.serve_connection(TokioIo::new(conn), service);
        let watched = graceful.watch(served);
        let conns = Arc::clone(&idle);
        tokio::spawn(async move {
            tokio::select! {
                r = watched => if let Err(e) = r {
                    tracing::debug!(error = %e, "public connection ended with an error");
                },
                () = close.cancelled() => {
                    tracing::debug!(%peer, "idle public connection closed for a new one at the cap");
                }
            }
            conns.closed(conn_id);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The open public connections and which of them wait for a request head (idle: before the
/// first request, and between an answer written and the next head), so that a new connection
/// at `--max-connections` can close the one idle longest instead of being refused, as the
/// gateway's listener does. A connection with a request in progress (its head read, its answer
/// not yet written) is never chosen.
#[derive(Debug, Default)]
struct IdleConnections {
    conns: std::sync::Mutex<std::collections::HashMap<u64, ConnState>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct ConnState {
    /// Since when it waits for a request head; `None` while requests are in progress.
    idle_since: Option<std::time::Instant>,
    /// Requests in progress (more than one only with pipelining).
    in_progress: usize,
    /// Cancelled to close it.
    close: tokio_util::sync::CancellationToken,
}

/// A request in progress on one connection; dropped with the answer's body.
#[derive(Debug)]
struct InProgress {
    conns: Arc<IdleConnections>,
    id: u64,
}

impl IdleConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, ConnState>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new connection, idle from now; returns its id and what closes it.
    fn open(&self) -> (u64, tokio_util::sync::CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = tokio_util::sync::CancellationToken::new();
        self.lock().insert(
            id,
            ConnState {
                idle_since: Some(std::time::Instant::now()),
                in_progress: 0,
                close: close.clone(),
            },
        );
        (id, close)
    }

    /// A request of connection `id` is in progress until the guard is dropped.
    fn busy(self: &Arc<Self>, id: u64) -> InProgress {
        if let Some(c) = self.lock().get_mut(&id) {
            c.in_progress += 1;
            c.idle_since = None;
        }
        InProgress {
            conns: Arc::clone(self),
            id,
        }
    }

    /// Connection `id` ended.
    fn closed(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection idle longest; `false` when none is idle.
    fn evict_oldest(&self) -> bool {
        let mut conns = self.lock();
        let oldest = conns
            .iter()
            .filter_map(|(id, c)| c.idle_since.map(|t| (t, *id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(c) = conns.remove(&id) {
            c.close.cancel();
        }
        true
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if let Some(c) = self.conns.lock().get_mut(&self.id) {
            c.in_progress = c.in_progress.saturating_sub(1);
            if c.in_progress == 0 {
                c.idle_since = Some(std::time::Instant::now());
            }
        }
    }
}

/// An answer's body holding its request's [`InProgress`] until written or dropped; frames, end and
/// size hint are the body's own (a `content-length` stays).
struct Guarded {
    body: HttpBody,
    _busy: InProgress,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// `body`, failing with [`Stalled`] when no byte of it arrives for `after` (the header read
/// timeout): a client that stops sending its body is answered 408 instead of holding the
/// request open.
fn stall_bounded(body: HttpBody, after: Duration) -> HttpBody {
    use futures::StreamExt as _;
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let chunks = body.into_data_stream();
    HttpBody::from_stream(futures::stream::unfold(
        Some(chunks),
        move |chunks| async move {
            let mut chunks = chunks?;
            match tokio::time::timeout(after, chunks.next()).await {
                Ok(Some(Ok(c))) => Some((Ok(c), Some(chunks))),
                Ok(Some(Err(e))) => Some((Err(BoxError::from(e)), None)),
                Ok(None) => None,
                Err(_) => Some((Err(BoxError::from(Stalled(after))), None)),
            }
        },
    ))
}

/// The size of a request head as sent: request line, headers with `: ` and CRLF, final CRLF.
fn head_bytes(method: &axum::http::Method, uri: &axum::http::Uri, headers: &HeaderMap) -> usize {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = method.as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum::<usize>()
        + line
        + 2
}

/// A header value's bytes as Latin-1 text, as the gateway (Starlette) reads every header: a
/// credential that is not visible ASCII still goes to the core, which refuses it with its own
/// 401 and challenge, as in the proxied modes (not the 400 of a malformed MCP header).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Percent-decodes one path segment; `None` when the result is not UTF-8 or an escape is
/// broken.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Which endpoint a path names: `Some(None)` for `/mcp`, `Some(Some(id))` for
/// `/servers/{id}/mcp`, `None` for any other path.
fn endpoint(path: &str) -> Option<Option<&str>> {
    if path == "/mcp" {
        return Some(None);
    }
    let id = path.strip_prefix("/servers/")?.strip_suffix("/mcp")?;
    (!id.is_empty() && !id.contains('/')).then_some(Some(id))
}

/// How much of the body of a request refused before it was read (path, method, Host, Origin,
/// caller) is still read and dropped, so that the connection stays usable for the next request
/// (hyper closes a connection whose request body was left unread); a longer body gets the
/// answer and the close.
const REFUSED_BODY_DRAIN: usize = 64 * 1024;

async fn route(
    edge: Arc<Edge>,
    peer: SocketAddr,
    path: &str,
    method: &axum::http::Method,
    headers: &HeaderMap,
    body: HttpBody,
) -> Response {
    let mut body = Some(body);
    let keep_alive = edge.sse_keep_alive;
    let response = answer(edge, peer, path, method, headers, &mut body).await;
    if let Some(unread) = body {
        discard_body(unread.into_data_stream(), REFUSED_BODY_DRAIN).await;
    }
    match keep_alive {
        Some(period) => with_keep_alive(response, period),
        None => response,
    }
}

/// What a silent `text/event-stream` answer gets: a comment line and the blank line that ends
/// it, which clients ignore (WHATWG HTML, server-sent events: a line starting with a colon).
/// Byte-for-byte the gateway's (`_app.KEEP_ALIVE_COMMENT`).
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// `response` with [`KEEP_ALIVE_COMMENT`] written after each `period` in which its body sent
/// nothing, when it is a `text/event-stream` (anything else as it is). Each frame of such a
/// body is one whole event (`into_response`), so the comment never lands inside one.
fn with_keep_alive(response: Response, period: Duration) -> Response {
    use futures::StreamExt as _;
    let sse = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !sse {
        return response;
    }
    let (parts, body) = response.into_parts();
    let frames = body.into_data_stream();
    let kept = futures::stream::unfold(frames, move |mut frames| async move {
        // `next` is cancel-safe: no frame is lost to the timeout.
        match tokio::time::timeout(period, frames.next()).await {
            Ok(Some(frame)) => Some((frame, frames)),
            Ok(None) => None,
            Err(_) => Some((Ok(bytes::Bytes::from_static(KEEP_ALIVE_COMMENT)), frames)),
        }
    });
    Response::from_parts(parts, HttpBody::from_stream(kept))
}

/// The answer to a `Host` (421) or `Origin` (403) outside the allow-lists.
fn refusal(refused: Refusal) -> RequestError {
    match refused {
        Refusal::Host(h) => RequestError::HostNotAllowed(h),
        Refusal::Origin(o) => RequestError::Forbidden(format!("Origin {o} is not allowed")),
    }
}

/// Answers one request; `body` is taken only when the request is served (left in place by a
/// refusal, for [`route`] to drain).
async fn answer(
    edge: Arc<Edge>,
    peer: SocketAddr,
    path: &str,
    method: &axum::http::Method,
    headers: &HeaderMap,
    body: &mut Option<HttpBody>,
) -> Response {
    let arrived = std::time::Instant::now();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if path == "/health" && method == axum::http::Method::GET {
        // As the gateway's `/health`: behind the allow-lists too.
        if let Err(refused) = edge.allow.check(text("host"), text("origin")) {
            return rpc_error(refusal(refused));
        }
        return health_response(&edge.runtime);
    }
    if path == "/ready" && method == axum::http::Method::GET {
        if let Err(refused) = edge.allow.check(text("host"), text("origin")) {
            return rpc_error(refusal(refused));
        }
        return ready_response(&edge.runtime);
    }
    let Some(endpoint) = endpoint(path) else {
        return rpc_error(RequestError::UnknownPath);
    };
    let server_id = match endpoint.map(percent_decode) {
        None => None,
        Some(Some(id)) => Some(id),
        Some(None) => return rpc_error(RequestError::BadServerIdInPath),
    };
    let Some(method) = mcp_method(method) else {
        return method_not_allowed();
    };
    if let Err(refused) = edge.allow.check(text("host"), text("origin")) {
        let e = refusal(refused);
        tracing::info!(status = e.status(), %path, "{e}");
        return rpc_error(e);
    }
    let authorization = headers
        .get("authorization")
        .map(|v| latin1(v.as_bytes()))
        .unwrap_or_default();
    let request_id = edge.request_id();
    // The request span starts before the caller is resolved: the ResolveCaller call is its
    // child (tracing on).
    let span = crate::otel::public_span(&request_id, text("traceparent"));
    let query = CallerQuery {
        authorization,
        client_address: peer.to_string(),
        server_id: server_id.clone().unwrap_or_default(),
        request_id: request_id.clone(),
        traceparent: text("traceparent").unwrap_or_default().to_owned(),
    };
    let resolved = match &span {
        Some(span) => {
            use tracing::Instrument as _;
            edge.policy.resolve(&query).instrument(span.clone()).await
        }
        None => edge.policy.resolve(&query).await,
    };
    let refused = |r: Response| {
        if let Some(span) = &span {
            crate::otel::finish_status(span, r.status().as_u16());
        }
        r
    };
    let caller = match resolved {
        Ok(Resolution::Allowed(caller)) => caller,
        Ok(Resolution::Denied(d)) => {
            let status = if d.http_status == 403 { 403 } else { 401 };
            let mut r = rpc_error(RequestError::CallerDenied {
                status,
                message: d.reason,
            });
            if status == 401 {
                let value = HeaderValue::from_str(&d.www_authenticate)
                    .ok()
                    .filter(|_| !d.www_authenticate.is_empty())
                    .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_CHALLENGE));
                r.headers_mut().insert("www-authenticate", value);
            }
            return refused(r);
        }
        Err(ResolveError::Unavailable(e)) => {
            tracing::warn!(error = %e, %request_id, "request refused: no policy");
            return refused(rpc_error(RequestError::PolicyUnavailable));
        }
        Err(ResolveError::Busy(busy)) => {
            tracing::debug!(%busy, %peer, %request_id, "request refused: resolutions at the cap");
            let (limit, per_client) = match busy {
                Busy::Client { limit } => (limit, true),
                Busy::Total { limit } => (limit, false),
            };
            return refused(rpc_error(RequestError::ResolveBusy { limit, per_client }));
        }
    };
    let mut auth = (*caller).clone();
    // The trace context is the public request's, not the one of the answer that was cached.
    if let Some(tp) = text("traceparent") {
        tp.clone_into(&mut auth.traceparent);
    }
    auth.trace_id.clone_from(&request_id);
    serve_mcp(
        Arc::clone(&edge.runtime),
        server_id,
        method,
        headers,
        body.take().unwrap_or_default(),
        auth,
        Some(request_id),
        Transport::Public,
        span,
        Some(arrived),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SSE answer gets the comment after each silent period, between its events and never
    /// in their place; another answer is left as it is. (Time is paused: each period passes
    /// when every task waits.)
    #[tokio::test(start_paused = true)]
    async fn a_silent_event_stream_gets_keep_alive_comments_between_its_events() {
        use futures::StreamExt as _;
        use http_body_util::BodyExt as _;
        const PERIOD: Duration = Duration::from_secs(15);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, Infallible>>(4);
        let events = tokio_stream::wrappers::ReceiverStream::new(rx);
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(HttpBody::from_stream(events))
            .unwrap();
        let mut body = with_keep_alive(response, PERIOD)
            .into_body()
            .into_data_stream();
        let event = bytes::Bytes::from_static(b"data: {}\n\n");
        tx.send(Ok(event.clone())).await.unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), event);
        let start = tokio::time::Instant::now();
        assert_eq!(body.next().await.unwrap().unwrap(), KEEP_ALIVE_COMMENT);
        assert_eq!(start.elapsed(), PERIOD);
        assert_eq!(body.next().await.unwrap().unwrap(), KEEP_ALIVE_COMMENT);
        tx.send(Ok(event.clone())).await.unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), event);
        drop(tx);
        assert!(body.next().await.is_none(), "ends with its events");

        let json = Response::builder()
            .header("content-type", "application/json")
            .body(HttpBody::from("{}"))
            .unwrap();
        let whole = with_keep_alive(json, PERIOD)
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(whole.to_bytes(), "{}");
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("/mcp"), Some(None));
        assert_eq!(endpoint("/servers/a%20b/mcp"), Some(Some("a%20b")));
        assert_eq!(endpoint("/servers//mcp"), None);
        assert_eq!(endpoint("/servers/a/b/mcp"), None);
        assert_eq!(endpoint("/mcp/"), None);
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%2"), None);
    }

    #[tokio::test]
    async fn the_connection_idle_longest_is_evicted_never_a_busy_one() {
        let conns = Arc::new(IdleConnections::default());
        let (a, close_a) = conns.open();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (b, close_b) = conns.open();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (_c, close_c) = conns.open();
        // `a` is busy: `b` has waited longest for a head.
        let busy_a = conns.busy(a);
        assert!(conns.evict_oldest());
        assert!(close_b.is_cancelled());
        assert!(!close_a.is_cancelled() && !close_c.is_cancelled());
        conns.closed(b);
        // `a` answered: idle again, since now, so `c` goes first.
        drop(busy_a);
        assert!(conns.evict_oldest());
        assert!(close_c.is_cancelled());
        assert!(conns.evict_oldest());
        assert!(close_a.is_cancelled());
        assert!(!conns.evict_oldest(), "none left");
        // Nothing idle: a busy connection is never chosen.
        let (d, close_d) = conns.open();
        let _busy = conns.busy(d);
        assert!(!conns.evict_oldest());
        assert!(!close_d.is_cancelled());
    }

    #[test]
    fn a_credential_is_read_as_latin1() {
        assert_eq!(latin1(b"Bearer abc"), "Bearer abc");
        assert_eq!(latin1(b"Bearer t\xc3\xa9st"), "Bearer t\u{c3}\u{a9}st");
        assert_eq!(latin1(b"Bearer \xff"), "Bearer \u{ff}");
    }
}
