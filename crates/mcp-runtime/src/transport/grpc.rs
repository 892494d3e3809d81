//! The gRPC adapter (tonic), built only with the `grpc-uds` feature: the four `McpRuntime`
//! RPCs translate the protobuf envelope into one core [`Request`] and the core's [`Outcome`]
//! back. It calls the same [`Runtime::handle`] the HTTP adapter calls; it never re-encodes a
//! request as HTTP.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use mcp_runtime_core::{
    AuthContext, Body, McpHeaders, Method, Outcome, Request, ResponseHead, Runtime, TeamScope,
    Transport,
};
use mcp_runtime_proto::v1 as pb;
use mcp_runtime_proto::v1::mcp_runtime_server::{McpRuntime, McpRuntimeServer};
use tonic::{Status, async_trait};

use crate::listener::{Admission, Conn};

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Largest body chunk of one `InvokeStreamResponse` (non-SSE bodies are split into these).
const BODY_CHUNK_BYTES: usize = 1 << 20;

/// Room for the envelope around a body of the maximum size (headers, ids, AuthContext).
pub(crate) const ENVELOPE_SLACK_BYTES: usize = 64 * 1024;

/// The HTTP/2 and tonic settings the gRPC adapter is served with (`mcp-runtime --grpc-*`).
/// `Default` leaves every one to tonic 0.14 and the HTTP/2 server under it (1 MiB stream and
/// connection windows without adaptive sizing, 16 KiB frames, no stream cap, no per-connection
/// concurrency limit, no server-side timeout beyond the client's `grpc-timeout`: the defaults of
/// the HTTP/2 server's `proto/h2/server.rs`), which is what the adapter has always used. They exist so `make bench-grpc-settings` can measure each one's effect on
/// the boundary's cost (issue 19); docs/grpc-settings.md gives the results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcSettings {
    /// HTTP/2 `SETTINGS_INITIAL_WINDOW_SIZE` (per stream), in bytes.
    pub initial_stream_window_size: Option<u32>,
    /// The connection-level flow-control window, in bytes.
    pub initial_connection_window_size: Option<u32>,
    /// The HTTP/2 server's adaptive window (BDP estimation); overrides both windows when on.
    pub adaptive_window: bool,
    /// HTTP/2 `SETTINGS_MAX_FRAME_SIZE`, in bytes (16,384 to 16,777,215).
    pub max_frame_size: Option<u32>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection.
    pub max_concurrent_streams: Option<u32>,
    /// Requests served at once per connection (tower's concurrency limit); more wait.
    pub concurrency_limit_per_connection: Option<usize>,
    /// A server-side deadline for calls without a `grpc-timeout` (tonic's timeout layer; the
    /// shorter of the two applies otherwise); a call past it ends with `CANCELLED`.
    pub timeout: Option<std::time::Duration>,
}

/// The `McpRuntime` service over a shared core.
#[derive(Debug, Clone)]
pub(crate) struct GrpcRuntime {
    runtime: Arc<Runtime>,
}

/// The tonic service with message limits derived from `max_message_bytes` (tonic's default
/// is 4 MiB).
///
/// Responses may be `max_message_bytes` plus envelope slack. Requests are decoded up to twice
/// the limit so that a body over the limit gets a clear `RESOURCE_EXHAUSTED` from
/// [`check_size`]; only a message over twice the limit is refused by tonic's decoder itself
/// (`OUT_OF_RANGE`), before it is buffered.
pub(crate) fn service(runtime: Arc<Runtime>) -> McpRuntimeServer<GrpcRuntime> {
    let limit = runtime.max_message_bytes();
    McpRuntimeServer::new(GrpcRuntime { runtime })
        .max_decoding_message_size(limit.saturating_mul(2) + ENVELOPE_SLACK_BYTES)
        .max_encoding_message_size(limit + ENVELOPE_SLACK_BYTES)
}

/// Wraps the `McpRuntime` service so that a request message that is not valid protobuf is
/// `INVALID_ARGUMENT`, as the contract says of malformed envelopes: tonic's prost codec reports
/// a decode failure as `INTERNAL` ("failed to decode Protobuf message"), which clients treat as
/// a server fault. Only the status code of that one answer changes; its message stays.
#[derive(Debug, Clone)]
pub(crate) struct DecodeErrorIsInvalidArgument<S>(S);

impl<S: tonic::server::NamedService> tonic::server::NamedService
    for DecodeErrorIsInvalidArgument<S>
{
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tonic::codegen::Service<tonic::codegen::http::Request<B>>
    for DecodeErrorIsInvalidArgument<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<R>,
        >,
    S::Future: Send + 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let h = resp.headers_mut();
            if is_decode_failure(h) {
                h.insert(
                    "grpc-status",
                    tonic::codegen::http::HeaderValue::from_static("3"),
                );
            }
            // A non-OK status answered at once (Trailers-Only, every refusal of a call):
            // `mcp_boundary_errors_total{mode="grpc",grpc_status}`.
            if let Some(m) = mcp_runtime_core::metrics::get()
                && let Some(code) = h.get("grpc-status")
                && code != "0"
            {
                let code = code
                    .to_str()
                    .ok()
                    .and_then(|c| c.parse::<i32>().ok())
                    .unwrap_or(2);
                m.boundary_errors
                    .get_or_create(&mcp_runtime_core::metrics::BoundaryLabels {
                        mode: mcp_runtime_core::metrics::Mode::Grpc,
                        grpc_status: status_name(code),
                    })
                    .inc();
            }
            Ok(resp)
        })
    }
}

/// The canonical name of a gRPC status code, upper case (`UNAVAILABLE`).
fn status_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Whether a (Trailers-Only) response is tonic's answer to a request message that is not valid
/// protobuf: `INTERNAL` with prost's `DecodeError` text. tonic-prost has no other sign of it
/// (its codec turns the typed `prost::DecodeError` into `Status::internal(text)`), so the text
/// is matched here and nowhere else; `tests::a_request_that_is_not_protobuf_is_invalid_argument`
/// pins it against tonic and prost themselves.
fn is_decode_failure(headers: &tonic::codegen::http::HeaderMap) -> bool {
    headers.get("grpc-status").is_some_and(|v| v == "13")
        && headers.get("grpc-message").is_some_and(|m| {
            m.as_bytes().starts_with(b"failed%20to%20decode")
                || m.as_bytes().starts_with(b"failed to decode")
        })
}

/// `RESOURCE_EXHAUSTED` for a body over the runtime's message size limit (gRPC status codes:
/// "a resource has been exhausted ... message size").
fn check_size(req: &Request, limit: usize) -> Result<(), Status> {
    if req.body.len() > limit {
        return Err(Status::resource_exhausted(format!(
            "request body of {} bytes exceeds the limit of {limit} bytes",
            req.body.len()
        )));
    }
    Ok(())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Translates the protobuf AuthContext; `None` is a malformed envelope.
fn auth(a: Option<pb::AuthContext>) -> Result<AuthContext, Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("envelope.auth is required"))?;
    auth_from_proto(a).map_err(|v| {
        Status::invalid_argument(format!("envelope.auth.team_scope: unknown value {v}"))
    })
}

/// The core's [`AuthContext`] from the contract's (`mcp.runtime.v1.AuthContext`, also what the
/// Core SPI's ResolveCaller answers). `UNSPECIFIED` is read as public only (least privilege).
///
/// # Errors
///
/// The `team_scope` number when it names no `TeamScope`.
pub(crate) fn auth_from_proto(a: pb::AuthContext) -> Result<AuthContext, i32> {
    let team_scope = match pb::TeamScope::try_from(a.team_scope) {
        Ok(pb::TeamScope::Unrestricted) => TeamScope::Unrestricted,
        Ok(pb::TeamScope::Teams) => TeamScope::Teams(a.teams),
        Ok(pb::TeamScope::PublicOnly | pb::TeamScope::Unspecified) => TeamScope::PublicOnly,
        Err(_) => return Err(a.team_scope),
    };
    Ok(AuthContext {
        subject_email: a.subject_email,
        is_admin: a.is_admin,
        team_scope,
        scopes: a.scopes,
        token_expires_at_unix_s: a.token_expires_at_unix_s,
        traceparent: a.traceparent,
        trace_id: a.trace_id,
    })
}

/// Translates an envelope into a core request.
///
/// # Errors
///
/// `INVALID_ARGUMENT` for a missing envelope or AuthContext, or an unknown or unset method.
fn request(env: Option<pb::RequestEnvelope>, forced: Option<Method>) -> Result<Request, Status> {
    let env = env.ok_or_else(|| Status::invalid_argument("envelope is required"))?;
    let method = match (forced, pb::HttpMethod::try_from(env.method)) {
        (Some(m), _) => m,
        (None, Ok(pb::HttpMethod::Post)) => Method::Post,
        (None, Ok(pb::HttpMethod::Get)) => Method::Get,
        (None, Ok(pb::HttpMethod::Delete)) => Method::Delete,
        (None, Ok(pb::HttpMethod::Unspecified)) => {
            return Err(Status::invalid_argument("envelope.method is required"));
        }
        (None, Err(_)) => {
            return Err(Status::invalid_argument(format!(
                "envelope.method: unknown value {}",
                env.method
            )));
        }
    };
    Ok(Request {
        method,
        headers: mcp_headers(env.headers.unwrap_or_default()),
        server_id: non_empty(env.server_id),
        request_id: non_empty(env.request_id),
        auth: auth(env.auth)?,
        body: env.body,
        transport: Transport::Grpc,
        live_events: true,
    })
}

/// The MCP headers of an envelope: an empty field is a header not sent, unless
/// `empty_headers` names it (contract 1.1): then it was sent empty.
fn mcp_headers(h: pb::McpHeaders) -> McpHeaders {
    let pb::McpHeaders {
        session_id,
        protocol_version,
        accept,
        last_event_id,
        empty_headers,
        params,
        params_forwarded,
        ..
    } = h;
    let field = |value: String, name: &str| {
        (!value.is_empty() || empty_headers.iter().any(|n| n == name)).then_some(value)
    };
    McpHeaders {
        session_id: field(session_id, "mcp-session-id"),
        protocol_version: field(protocol_version, "mcp-protocol-version"),
        accept: field(accept, "accept"),
        last_event_id: field(last_event_id, "last-event-id"),
        // The envelope has no `Mcp-Method` / `Mcp-Name` fields: the gateway checked them at
        // its public endpoint (docs/http-boundary.md, MCP 2026-07-28).
        mcp_method: None,
        mcp_name: None,
        standard_headers_checked: true,
        // The `Mcp-Param-*` headers, when the gateway forwards them (contract 1.4), keyed as
        // the HTTP adapter keys them: the `<name>` after the prefix, in lower case.
        params: params_forwarded.then(|| {
            params
                .into_iter()
                .filter_map(|h| {
                    let name = h.name.to_ascii_lowercase();
                    let param = name.strip_prefix("mcp-param-")?.to_owned();
                    Some((param, h.value))
                })
                .collect()
        }),
    }
}

fn head(h: ResponseHead) -> pb::ResponseHead {
    pb::ResponseHead {
        http_status: u32::from(h.status),
        headers: h
            .headers
            .into_iter()
            .map(|(name, value)| pb::Header {
                name: name.to_owned(),
                value,
            })
            .collect(),
    }
}

type PartStream = Pin<Box<dyn Stream<Item = Result<pb::InvokeStreamResponse, Status>> + Send>>;

fn part(p: pb::invoke_stream_response::Part) -> Result<pb::InvokeStreamResponse, Status> {
    Ok(pb::InvokeStreamResponse { part: Some(p) })
}

/// The head, then each SSE event as it is produced, or the body in chunks.
fn stream(outcome: Outcome) -> PartStream {
    use pb::invoke_stream_response::Part;
    let first = futures::stream::once(futures::future::ready(part(Part::Head(head(outcome.head)))));
    match outcome.body {
        Body::Full(b) => {
            let chunks: Vec<Bytes> = (0..b.len())
                .step_by(BODY_CHUNK_BYTES)
                .map(|i| b.slice(i..(i + BODY_CHUNK_BYTES).min(b.len())))
                .collect();
            first
                .chain(futures::stream::iter(chunks).map(|c| part(Part::BodyChunk(c))))
                .boxed()
        }
        Body::Events(events) => first
            .chain(events.map(|ev| {
                part(Part::Event(pb::SseEvent {
                    id: ev.id.unwrap_or_default(),
                    event: ev.event.unwrap_or_default(),
                    data: ev.data,
                }))
            }))
            .boxed(),
    }
}

/// One `WatchCatalog` message of a catalog event.
fn watch_message(e: mcp_runtime_core::CatalogEvent) -> pb::WatchCatalogResponse {
    use mcp_runtime_core::ChangeCause;
    let mut m = pb::WatchCatalogResponse {
        version: e.version,
        lagged: e.lagged,
        ..Default::default()
    };
    if let Some(c) = e.change {
        m.cause = match c.cause {
            ChangeCause::ListChanged => pb::CatalogChangeCause::ListChanged,
            ChangeCause::Reload => pb::CatalogChangeCause::Reload,
        }
        .into();
        m.upstreams_added = c.upstreams_added;
        m.upstreams_removed = c.upstreams_removed;
        m.upstreams_changed = c.upstreams_changed;
        m.lists = c.lists.iter().map(|k| k.as_str().to_owned()).collect();
    }
    m
}

/// The `traceparent` metadata of a call, if any.
fn traceparent<T>(req: &tonic::Request<T>) -> Option<Vec<u8>> {
    req.metadata()
        .get("traceparent")
        .map(|v| v.as_bytes().to_vec())
}

impl GrpcRuntime {
    /// Hands `req` to the core inside its request span (tracing on), the trace context taken
    /// from the `traceparent` metadata, else from the AuthContext.
    async fn observed(
        &self,
        mut req: Request,
        header: Option<Vec<u8>>,
        started: std::time::Instant,
    ) -> Outcome {
        use tracing::Instrument as _;
        let span = crate::otel::request_span(
            mcp_runtime_core::metrics::Mode::Grpc,
            header.as_deref(),
            &mut req,
        );
        let Some(span) = span else {
            return self.runtime.handle_observed(req, None, started).await;
        };
        let session = req.headers.session_id.clone();
        let outcome = self
            .runtime
            .handle_observed(req, None, started)
            .instrument(span.clone())
            .await;
        crate::otel::finish(&span, &outcome, session.as_deref());
        outcome
    }
}

#[async_trait]
impl McpRuntime for GrpcRuntime {
    async fn invoke(
        &self,
        req: tonic::Request<pb::InvokeRequest>,
    ) -> Result<tonic::Response<pb::InvokeResponse>, Status> {
        let started = std::time::Instant::now();
        let header = traceparent(&req);
        let mut req = request(req.into_inner().envelope, None)?;
        // The answer goes back whole: nothing relayed during the call can be answered.
        req.live_events = false;
        check_size(&req, self.runtime.max_message_bytes())?;
        if req.method == Method::Get {
            // A GET opens a standalone stream that lasts as long as the session: it has no
            // whole body to return.
            return Err(Status::invalid_argument(
                "a GET opens a stream: use InvokeStream",
            ));
        }
        let outcome = self.observed(req, header, started).await;
        let (h, body) = outcome.collect().await;
        Ok(tonic::Response::new(pb::InvokeResponse {
            head: Some(head(h)),
            body,
        }))
    }

    type InvokeStreamStream = PartStream;

    async fn invoke_stream(
        &self,
        req: tonic::Request<pb::InvokeStreamRequest>,
    ) -> Result<tonic::Response<Self::InvokeStreamStream>, Status> {
        let started = std::time::Instant::now();
        let header = traceparent(&req);
        let req = request(req.into_inner().envelope, None)?;
        check_size(&req, self.runtime.max_message_bytes())?;
        Ok(tonic::Response::new(stream(
            self.observed(req, header, started).await,
        )))
    }

    async fn close_session(
        &self,
        req: tonic::Request<pb::CloseSessionRequest>,
    ) -> Result<tonic::Response<pb::CloseSessionResponse>, Status> {
        let env = req.into_inner().envelope;
        if let Some(m) = env.as_ref().map(|e| e.method)
            && m != pb::HttpMethod::Delete as i32
            && m != pb::HttpMethod::Unspecified as i32
        {
            return Err(Status::invalid_argument(
                "CloseSession takes a DELETE (or unset) envelope.method",
            ));
        }
        let req = request(env, Some(Method::Delete))?;
        let (h, body) = self.runtime.handle(req).await.collect().await;
        Ok(tonic::Response::new(pb::CloseSessionResponse {
            head: Some(head(h)),
            body,
        }))
    }

    type WatchCatalogStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchCatalogResponse, Status>> + Send>>;

    async fn watch_catalog(
        &self,
        _req: tonic::Request<pb::WatchCatalogRequest>,
    ) -> Result<tonic::Response<Self::WatchCatalogStream>, Status> {
        let events = self.runtime.catalog_events().map(|e| Ok(watch_message(e)));
        Ok(tonic::Response::new(Box::pin(events)))
    }

    async fn health_check(
        &self,
        _req: tonic::Request<pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<pb::HealthCheckResponse>, Status> {
        let h = self.runtime.health();
        let status = if h.serving {
            pb::ServingStatus::Serving
        } else {
            pb::ServingStatus::NotServing
        };
        Ok(tonic::Response::new(pb::HealthCheckResponse {
            status: status.into(),
            runtime_version: h.runtime_version.to_owned(),
            contract_version: h.contract_version,
            features: h.features,
            open_sessions: h.open_sessions as u64,
            protocol_versions: h
                .protocol_versions
                .iter()
                .map(|v| (*v).to_owned())
                .collect(),
            state_store: Some(pb::StateStoreHealth {
                kind: h.state.kind.to_owned(),
                reachable: h.state.reachable,
            }),
        }))
    }
}

/// Serves `McpRuntime`, `grpc.health.v1` and server reflection on `listener` until `shutdown`
/// completes, then lets in-flight calls finish.
///
/// # Errors
///
/// The tonic transport error if serving fails.
/// Each connection is admitted by `admission` (peer uid, connection cap, first-byte timeout)
/// before tonic reads a byte of it.
pub(crate) async fn serve(
    runtime: Arc<Runtime>,
    listener: tokio::net::UnixListener,
    admission: Admission,
    settings: GrpcSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<McpRuntimeServer<GrpcRuntime>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mcp_runtime_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let runtime_not_ready = runtime.watch_not_ready();
    let incoming = futures::stream::unfold((listener, admission), |(l, a)| async move {
        let conn = a.accept(&l).await;
        Some((Ok::<_, std::io::Error>(conn), (l, a)))
    });
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(settings.initial_stream_window_size)
        .initial_connection_window_size(settings.initial_connection_window_size)
        .http2_adaptive_window(Some(settings.adaptive_window))
        .max_frame_size(settings.max_frame_size)
        .max_concurrent_streams(settings.max_concurrent_streams);
    if let Some(limit) = settings.concurrency_limit_per_connection {
        builder = builder.concurrency_limit_per_connection(limit);
    }
    if let Some(timeout) = settings.timeout {
        builder = builder.timeout(timeout);
    }
    let mut router = builder
        .add_service(health_service)
        .add_service(DecodeErrorIsInvalidArgument(service(runtime)));
    if let Some(r) = reflection {
        router = router.add_service(r);
    }
    // Draining: the standard health service says what `HealthCheck` and `/health` say, for
    // the server as a whole ("") and for `McpRuntime`; it was set serving above.
    // Not ready (shutdown's first step, before the drain period): NOT_SERVING while the
    // socket still serves.
    let mut not_ready = runtime_not_ready;
    let reporter = health_reporter.clone();
    let watcher = tokio::spawn(async move {
        if not_ready.wait_for(|n| *n).await.is_ok() {
            reporter
                .set_not_serving::<McpRuntimeServer<GrpcRuntime>>()
                .await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    });
    let shutdown = async move {
        shutdown.await;
        watcher.abort();
        health_reporter
            .set_not_serving::<McpRuntimeServer<GrpcRuntime>>()
            .await;
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_runtime_core::{CatalogConfig, RuntimeConfig};
    use tonic::codegen::Service as _;

    /// A gRPC request frame (uncompressed) around `message`.
    fn frame(message: &[u8]) -> Bytes {
        let mut out = vec![0u8];
        out.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        out.extend_from_slice(message);
        Bytes::from(out)
    }

    #[tokio::test]
    async fn a_request_that_is_not_protobuf_is_invalid_argument() {
        let catalog = CatalogConfig::parse("").unwrap();
        let runtime = Arc::new(
            Runtime::start(&catalog, RuntimeConfig::default())
                .await
                .unwrap(),
        );
        let mut svc = DecodeErrorIsInvalidArgument(service(runtime));
        // A field tag whose varint never ends: prost's DecodeError.
        let body = http_body_util::Full::new(frame(&[0xff, 0xff, 0xff]));
        let req = tonic::codegen::http::Request::builder()
            .method("POST")
            .uri("/mcp.runtime.v1.McpRuntime/Invoke")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(body))
            .unwrap();
        let resp = svc.call(req).await.unwrap();
        assert_eq!(resp.headers()["grpc-status"], "3", "{:?}", resp.headers());
        assert!(
            resp.headers()["grpc-message"]
                .as_bytes()
                .starts_with(b"failed%20to%20decode"),
            "{:?}",
            resp.headers()
        );
    }
}
