//! The HTTP/JSON adapter (axum): translates an HTTP request on the Unix socket into one core
//! [`Request`] and the core's [`Outcome`] back into an HTTP response. Documented in
//! `docs/http-boundary.md`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use mcp_runtime_core::{
    AuthContext, Body, McpHeaders, Method, Outcome, Request, RequestError, Runtime, TeamScope,
    Transport,
};
use tracing::Instrument as _;

/// Header carrying the caller's AuthContext: base64url of its JSON form.
pub(crate) const AUTH_CONTEXT_HEADER: &str = "x-contextforge-auth-context";
/// Header carrying the virtual server scope.
pub(crate) const SERVER_ID_HEADER: &str = "x-contextforge-server-id";

/// base64url with or without padding (RFC 4648 section 5).
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Serves the router on `listener` until `shutdown` completes, then waits for open
/// connections to finish their requests (the caller bounds that wait by the grace period).
///
/// Each connection is admitted by `admission` (peer uid, connection cap, first-byte timeout)
/// and served by hyper's HTTP/1.1 server with `header_read_timeout` for every request head
/// (which also closes keep-alive connections idle for that long).
pub(crate) async fn serve(
    runtime: Arc<Runtime>,
    listener: tokio::net::UnixListener,
    admission: crate::listener::Admission,
    header_read_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let app = router(runtime);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = admission.accept(&listener) => c,
            () = &mut shutdown => break,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let served =
            builder.serve_connection(TokioIo::new(conn), TowerToHyperService::new(app.clone()));
        let watched = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The router: `/mcp`, `/servers/{id}/mcp` and `/health`.
pub(crate) fn router(runtime: Arc<Runtime>) -> Router {
    Router::new()
        .route("/mcp", any(mcp))
        .route("/servers/{id}/mcp", any(scoped_mcp))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/catalog/watch", get(watch_catalog))
        .fallback(not_found)
        .with_state(runtime)
}

/// `GET /catalog/watch`: the HTTP/JSON twin of the `WatchCatalog` RPC (contract 1.3), a
/// `text/event-stream` of `event: catalog` events whose data is
/// [`mcp_runtime_core::CatalogEvent::to_json`]: the current version first, then one event per
/// change; the stream ends when shutdown starts.
async fn watch_catalog(State(rt): State<Arc<Runtime>>) -> Response {
    use futures::StreamExt as _;
    let events = rt.catalog_events().map(|e| {
        Ok::<_, std::convert::Infallible>(
            axum::response::sse::Event::default()
                .event("catalog")
                .data(e.to_json().to_string()),
        )
    });
    axum::response::sse::Sse::new(events).into_response()
}

async fn health(State(rt): State<Arc<Runtime>>) -> Response {
    health_response(&rt)
}

async fn ready(State(rt): State<Arc<Runtime>>) -> Response {
    ready_response(&rt)
}

/// `GET /ready`: readiness. 200 `{"status": "ready"}` when the runtime can serve (catalog
/// discovered and sockets bound, as it is from the moment it answers; the state store
/// reachable; shutdown not started), else 503 `{"status": "not_ready", "reason": ...}` with
/// `reason` `draining` or `state_unavailable`.
pub(crate) fn ready_response(rt: &Runtime) -> Response {
    let (status, body) = match rt.health().not_ready_reason() {
        None => (StatusCode::OK, serde_json::json!({"status": "ready"})),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reason": reason}),
        ),
    };
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /health`: the runtime's health as JSON, 200 while serving, 503 while draining.
/// `health` is `"ok"`, or `"degraded"` while a required upstream is unreachable;
/// `upstreams_down` names every upstream whose last attempt failed at the transport.
pub(crate) fn health_response(rt: &Runtime) -> Response {
    let h = rt.health();
    let down: Vec<serde_json::Value> = h
        .upstreams_down
        .iter()
        .map(|(id, required)| serde_json::json!({"id": id, "required": required}))
        .collect();
    let body = serde_json::json!({
        "status": if h.serving { "serving" } else { "not_serving" },
        "health": h.condition(),
        "upstreams_down": down,
        "runtime_version": h.runtime_version,
        "contract_version": h.contract_version,
        "features": h.features,
        "open_sessions": h.open_sessions,
        "protocol_versions": h.protocol_versions,
        "state_store": {"kind": h.state.kind, "reachable": h.state.reachable},
    });
    let status = if h.serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn scoped_mcp(
    State(rt): State<Arc<Runtime>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    request: axum::extract::Request,
) -> Response {
    let Ok(Path(id)) = id else {
        return rpc_error(RequestError::BadServerIdInPath);
    };
    // The whole request, not `HeaderMap` and `Method` extractors: those clone the header map.
    let (parts, body) = request.into_parts();
    handle(rt, Some(id), parts.method, parts.headers, body).await
}

async fn mcp(State(rt): State<Arc<Runtime>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let scope = match header(&parts.headers, SERVER_ID_HEADER) {
        Ok(s) => s,
        Err(bad) => return rpc_error(bad),
    };
    handle(rt, scope, parts.method, parts.headers, body).await
}

/// Any other path: 404 with a JSON-RPC error body.
async fn not_found() -> Response {
    rpc_error(RequestError::UnknownPath)
}

/// A header's value; a value that is present but not visible ASCII is a 400, never treated as
/// absent (an unreadable scope must not widen to the federated endpoint).
pub(crate) fn header(
    headers: &HeaderMap,
    name: &'static str,
) -> Result<Option<String>, RequestError> {
    match headers.get(name).map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v.to_owned())),
        Some(Err(_)) => Err(RequestError::BadHeader(name)),
    }
}

/// A header a request carries once (the session, the version, `Last-Event-ID`, and what MCP
/// 2026-07-28 routes on, `Mcp-Method` and `Mcp-Name`): sent more than once it is refused
/// (400, -32020), since a proxy that read another of its values would route or resume the
/// request elsewhere than it is served.
fn single_header(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, RequestError> {
    if headers.get_all(name).iter().nth(1).is_some() {
        return Err(RequestError::HeaderMismatch(format!(
            "duplicate {name} header"
        )));
    }
    header(headers, name)
}

/// The `Mcp-Param-<Name>` headers (MCP 2026-07-28, SEP-2243), as (`<name>` in lower case,
/// value), in order; a repeated one is refused as `single_header` refuses one.
fn param_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>, RequestError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let Some(param) = name.as_str().strip_prefix("mcp-param-") else {
            continue;
        };
        if params.iter().any(|(p, _)| p == param) {
            return Err(RequestError::HeaderMismatch(format!(
                "duplicate {name} header"
            )));
        }
        let value = value.to_str().map_err(|_| {
            RequestError::HeaderMismatch(format!("{name} header is not visible ASCII"))
        })?;
        params.push((param.to_owned(), value.to_owned()));
    }
    Ok(params)
}

/// The MCP headers and the request id.
fn mcp_headers(headers: &HeaderMap) -> Result<(McpHeaders, Option<String>), RequestError> {
    Ok((
        McpHeaders {
            session_id: single_header(headers, "mcp-session-id")?,
            protocol_version: single_header(headers, "mcp-protocol-version")?,
            accept: header(headers, "accept")?,
            last_event_id: single_header(headers, "last-event-id")?,
            mcp_method: single_header(headers, "mcp-method")?,
            mcp_name: single_header(headers, "mcp-name")?,
            standard_headers_checked: false,
            params: Some(param_headers(headers)?),
        },
        header(headers, "x-request-id")?,
    ))
}

/// A fault of the HTTP request itself: the core's answer for it, with id `null`.
pub(crate) fn rpc_error(e: RequestError) -> Response {
    into_response(e.into_outcome(None))
}

/// Why `x-contextforge-auth-context` was refused (401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthHeaderError {
    /// The header is absent.
    #[error("missing x-contextforge-auth-context")]
    Missing,
    /// The value is not base64url.
    #[error("x-contextforge-auth-context is not base64url")]
    NotBase64,
    /// The decoded bytes are not an AuthContext JSON object.
    #[error("x-contextforge-auth-context is not an AuthContext JSON object")]
    NotAuthContext,
}

/// The JSON form of the AuthContext on this boundary: `{"email": .., "is_admin": ..,
/// "teams": null | [..], ..}` (`docs/http-boundary.md`); same fields as the proto's.
#[derive(serde::Deserialize)]
pub(crate) struct AuthContextJson {
    email: String,
    #[serde(default)]
    is_admin: bool,
    #[serde(default)]
    teams: Option<Vec<String>>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    token_exp: Option<i64>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
}

impl From<AuthContextJson> for AuthContext {
    fn from(w: AuthContextJson) -> Self {
        Self {
            subject_email: w.email,
            is_admin: w.is_admin,
            team_scope: match w.teams {
                None => TeamScope::Unrestricted,
                Some(t) if t.is_empty() => TeamScope::PublicOnly,
                Some(t) => TeamScope::Teams(t),
            },
            scopes: w.scopes,
            token_expires_at_unix_s: w.token_exp.unwrap_or(0),
            traceparent: w.traceparent.unwrap_or_default(),
            trace_id: w.trace_id.unwrap_or_default(),
        }
    }
}

/// The JSON form of `auth` on this boundary (the inverse of [`AuthContextJson`]): also the
/// `caller` of the Core SPI's HTTP/JSON routes.
pub(crate) fn auth_context_wire(auth: &AuthContext) -> serde_json::Value {
    let teams = match &auth.team_scope {
        TeamScope::Unrestricted => serde_json::Value::Null,
        TeamScope::PublicOnly => serde_json::json!([]),
        TeamScope::Teams(t) => serde_json::json!(t),
    };
    serde_json::json!({
        "email": auth.subject_email,
        "is_admin": auth.is_admin,
        "teams": teams,
        "scopes": auth.scopes,
        "token_exp": (auth.token_expires_at_unix_s != 0).then_some(auth.token_expires_at_unix_s),
        "traceparent": auth.traceparent,
        "trace_id": auth.trace_id,
    })
}

/// Decodes `x-contextforge-auth-context`.
fn auth_context(headers: &HeaderMap) -> Result<AuthContext, AuthHeaderError> {
    let value = headers
        .get(AUTH_CONTEXT_HEADER)
        .ok_or(AuthHeaderError::Missing)?;
    decode_auth_context(value.as_bytes())
}

/// Decodes the value of `x-contextforge-auth-context`: base64url (padding optional) of the
/// AuthContext JSON. The whole wire decoding of the header; a fuzz target's entry point.
pub fn decode_auth_context(value: &[u8]) -> Result<AuthContext, AuthHeaderError> {
    let raw = B64.decode(value).map_err(|_| AuthHeaderError::NotBase64)?;
    auth_context_json(&raw)
}

/// Decodes the AuthContext JSON (after base64url decoding).
fn auth_context_json(bytes: &[u8]) -> Result<AuthContext, AuthHeaderError> {
    serde_json::from_slice::<AuthContextJson>(bytes)
        .map(AuthContext::from)
        .map_err(|_| AuthHeaderError::NotAuthContext)
}

async fn handle(
    rt: Arc<Runtime>,
    server_id: Option<String>,
    method: HttpMethod,
    headers: HeaderMap,
    body: HttpBody,
) -> Response {
    let Some(method) = mcp_method(&method) else {
        return method_not_allowed();
    };
    let auth = match auth_context(&headers) {
        Ok(a) => a,
        Err(why) => return rpc_error(RequestError::Unauthorized(why.to_string())),
    };
    serve_mcp(
        rt,
        server_id,
        method,
        &headers,
        body,
        auth,
        None,
        Transport::Http,
        None,
        None,
    )
    .await
}

/// The MCP method of an HTTP method; `None` for any other (answer [`method_not_allowed`]).
pub(crate) fn mcp_method(method: &HttpMethod) -> Option<Method> {
    match *method {
        HttpMethod::POST => Some(Method::Post),
        HttpMethod::GET => Some(Method::Get),
        HttpMethod::DELETE => Some(Method::Delete),
        _ => None,
    }
}

/// The 405 of a method that is not GET, POST or DELETE, with `Allow`.
pub(crate) fn method_not_allowed() -> Response {
    let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
    r.headers_mut()
        .insert("allow", HeaderValue::from_static("GET, POST, DELETE"));
    r
}

/// Reads the body of an authenticated MCP request (held against the byte budgets from its
/// declared length, 413 over the message limit), hands the request to the core and encodes its
/// outcome. Shared by this adapter and the public listener (edge mode); `request_id` replaces
/// the `x-request-id` header when given; `span` is the request span the public listener
/// started before resolving the caller (`None`: one is started here when tracing is on), and
/// `arrived` when its head arrived (the request's duration in the metrics and the log line
/// counts from there; `None`: now).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_mcp(
    rt: Arc<Runtime>,
    server_id: Option<String>,
    method: Method,
    headers: &HeaderMap,
    body: HttpBody,
    auth: AuthContext,
    request_id: Option<String>,
    transport: Transport,
    span: Option<tracing::Span>,
    arrived: Option<std::time::Instant>,
) -> Response {
    let started = arrived.unwrap_or_else(std::time::Instant::now);
    let limit = rt.max_message_bytes();
    // A declared length (Content-Length) is held against the byte budgets while the body is
    // read, so a body without room is refused unread; over the limit it is the 413 below.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let reservation = if declared > 0 && declared <= limit {
        match rt.reserve_body(&auth.subject_email, declared) {
            Ok(r) => Some(r),
            Err(refused) => {
                discard_body(body.into_data_stream(), limit).await;
                return rpc_error(refused);
            }
        }
    } else {
        None
    };
    let body = match read_body(body, limit).await {
        Ok(b) => b,
        Err(BodyFault::TooLarge | BodyFault::Broken) => {
            return rpc_error(RequestError::PayloadTooLarge { size: None, limit });
        }
        Err(BodyFault::Stalled(after)) => {
            let mut r = rpc_error(RequestError::BodyStalled(after));
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
            return r;
        }
    };

    let (mcp_headers, header_request_id) = match mcp_headers(headers) {
        Ok(h) => h,
        Err(bad) => return rpc_error(bad),
    };
    let mut req = Request {
        method,
        headers: mcp_headers,
        server_id,
        request_id: request_id.or(header_request_id),
        auth,
        body,
        transport,
        live_events: true,
    };
    let span = match span {
        Some(span) => {
            crate::otel::adopt(&span, &mut req.auth);
            Some(span)
        }
        None => crate::otel::request_span(
            transport.into(),
            headers.get("traceparent").map(HeaderValue::as_bytes),
            &mut req,
        ),
    };
    // The core keeps the reservation until the request is answered.
    let Some(span) = span else {
        return into_response(rt.handle_observed(req, reservation, started).await);
    };
    let session = req.headers.session_id.clone();
    let outcome = rt
        .handle_observed(req, reservation, started)
        .instrument(span.clone())
        .await;
    crate::otel::finish(&span, &outcome, session.as_deref());
    into_response(outcome)
}

/// Encodes a core outcome as an HTTP response; SSE events are written as they arrive.
pub(crate) fn into_response(outcome: Outcome) -> Response {
    let status =
        StatusCode::from_u16(outcome.head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match outcome.body {
        Body::Full(b) => HttpBody::from(b),
        Body::Events(events) => HttpBody::from_stream(events.map(|ev| {
            let mut out = Vec::with_capacity(ev.data.len() + 32);
            ev.encode_into(&mut out);
            Ok::<_, std::convert::Infallible>(Bytes::from(out))
        })),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in outcome.head.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(name, v);
        }
    }
    response
}

/// How long an oversized request body is still read (and dropped) before the 413 is sent.
const OVERSIZE_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what the client still sends of a body that is refused (at most `limit`
/// bytes, for at most [`OVERSIZE_DRAIN_TIMEOUT`]), so that a client that writes its whole body
/// before reading sees the answer instead of a closed connection.
pub(crate) async fn discard_body(
    mut stream: impl futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    limit: usize,
) {
    let drain = async {
        let mut left = limit;
        while let Some(Ok(c)) = stream.next().await {
            if c.len() >= left {
                break;
            }
            left -= c.len();
        }
    };
    let _ = tokio::time::timeout(OVERSIZE_DRAIN_TIMEOUT, drain).await;
}

/// Why a request body was not read.
#[derive(Debug)]
enum BodyFault {
    /// Longer than the limit.
    TooLarge,
    /// It broke off (the client went away, a malformed chunk).
    Broken,
    /// No byte of it arrived for this long ([`Stalled`], the public endpoint only).
    Stalled(std::time::Duration),
}

/// The error a body stream of the public endpoint yields when its client stopped sending
/// (`transport/public.rs`); [`read_body`] answers it with 408.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled for {0:?}")]
pub(crate) struct Stalled(pub(crate) std::time::Duration);

/// The request body, or why not: longer than `limit` bytes, broken off, or stalled.
///
/// Over the limit, what the client still sends is read and dropped (at most another `limit`
/// bytes, for at most [`OVERSIZE_DRAIN_TIMEOUT`]) before the caller answers 413: a client that
/// writes its whole body before reading (hyper's, httpx's) otherwise fails on a closed
/// connection and never sees the answer. Larger or slower bodies get the 413 and the close.
async fn read_body(body: HttpBody, limit: usize) -> Result<Bytes, BodyFault> {
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                // The stall may be wrapped in more than one layer of the body's error type.
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(c) = cause {
                    if let Some(s) = c.downcast_ref::<Stalled>() {
                        return Err(BodyFault::Stalled(s.0));
                    }
                    cause = c.source();
                }
                return Err(BodyFault::Broken);
            }
        };
        len += chunk.len();
        if len > limit {
            discard_body(stream, limit).await;
            return Err(BodyFault::TooLarge);
        }
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = bytes::BytesMut::with_capacity(len);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            all.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_context_json_makes_team_scope_explicit() {
        let scope = |j: &[u8]| auth_context_json(j).map(|a| a.team_scope);
        assert_eq!(
            scope(br#"{"email":"a@x","teams":null}"#),
            Ok(TeamScope::Unrestricted)
        );
        assert_eq!(
            scope(br#"{"email":"a@x","teams":[]}"#),
            Ok(TeamScope::PublicOnly)
        );
        assert_eq!(
            scope(br#"{"email":"a@x","teams":["t"]}"#),
            Ok(TeamScope::Teams(vec!["t".into()]))
        );
        assert_eq!(scope(b"{}"), Err(AuthHeaderError::NotAuthContext));
        assert_eq!(scope(b"[1]"), Err(AuthHeaderError::NotAuthContext));
        let email = decode_auth_context(b"eyJlbWFpbCI6ImFAeCJ9").map(|a| a.subject_email);
        assert_eq!(email, Ok("a@x".to_owned()));
        assert_eq!(
            decode_auth_context(b"not base64!").map(|a| a.subject_email),
            Err(AuthHeaderError::NotBase64)
        );
    }
}
