//! Traces (`docs/operations.md`, "Traces"): one OpenTelemetry SERVER span per MCP request,
//! child of the W3C `traceparent` received, and under it one CLIENT span per outgoing call
//! (to an upstream: made by the core crate, `mcp_runtime_core::trace`; to the policy core in
//! edge mode: [`core_span`]), exported over OTLP/HTTP (protobuf) by `opentelemetry-otlp`
//! through `tracing-opentelemetry`. Built with the `otel` feature only; off at run time unless
//! the standard variables switch it on ([`wanted`]).
//!
//! Propagation: the request's `traceparent` is read from the HTTP header (HTTP/JSON socket,
//! public endpoint) or gRPC metadata first, else from the AuthContext's `traceparent`. With
//! tracing on, the AuthContext handed to the core carries the runtime span's own context, and
//! each outgoing call sends its CLIENT span's context as `traceparent` (so the receiver's span
//! is that span's child); with tracing off the context received is passed on unchanged.
//!
//! Spans are `tracing` spans on the target [`TARGET`], which the log filter never enables (so
//! an `MCP_RUNTIME_LOG` of `trace` does not make every request pay for a span); only the
//! OpenTelemetry layer does, and only when it is installed.

use mcp_runtime_core::metrics::Mode;
use mcp_runtime_core::request::Outcome;

/// The `tracing` target of every span meant for OpenTelemetry.
pub use mcp_runtime_core::trace::TARGET;

/// Whether the standard variables switch the OTLP trace exporter on: `OTEL_SDK_DISABLED=true`
/// or `OTEL_TRACES_EXPORTER=none` keep it off; `OTEL_TRACES_EXPORTER` including `otlp` switches
/// it on; unset, `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` does.
///
/// # Errors
///
/// A one-line message for a setting this runtime cannot honour: an `OTEL_EXPORTER_OTLP_PROTOCOL`
/// (or `..._TRACES_PROTOCOL`) other than `http/protobuf`. A binary built without the `otel`
/// feature prints one warning line and runs without traces (variables set for every process of
/// a deployment must not stop it).
pub fn wanted() -> Result<bool, String> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    let on = match var("OTEL_TRACES_EXPORTER") {
        Some(e) => e.split(',').any(|x| x.trim() == "otlp"),
        None => {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        }
    };
    if !on {
        return Ok(false);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = var(name) {
            if p != "http/protobuf" {
                return Err(format!(
                    "{name}={p}: this runtime exports traces over http/protobuf only"
                ));
            }
            break;
        }
    }
    if !cfg!(feature = "otel") {
        eprintln!(
            "mcp-runtime: warning: OTEL_* variables switch OTLP tracing on, but this binary was built without the `otel` feature: no traces (rebuild with `cargo build -p mcp-runtime --features otel`)"
        );
    }
    Ok(cfg!(feature = "otel"))
}

/// The request span of one MCP request on `mode`, child of the trace context received
/// (`header`, else `auth.traceparent`), when tracing is on; `None` when off. Either way
/// `auth.traceparent` is left as what the core passes on: the span's context when on, the
/// context received when off.
#[must_use]
pub fn request_span(
    mode: Mode,
    header: Option<&[u8]>,
    request: &mut mcp_runtime_core::Request,
) -> Option<tracing::Span> {
    let auth = &mut request.auth;
    if let Some(h) = header.and_then(|h| std::str::from_utf8(h).ok())
        && mcp_runtime_core::runtime::trace_id_of(h).is_some()
        && auth.traceparent != h
    {
        h.clone_into(&mut auth.traceparent);
    }
    if !imp::on() {
        return None;
    }
    let span = imp::server_span(
        mode,
        span_name(request),
        request.request_id.as_deref(),
        &request.auth.traceparent,
    )?;
    adopt(&span, &mut request.auth);
    Some(span)
}

/// The request span of a public request (edge mode), started when the request arrives, before
/// its caller is resolved (so that the ResolveCaller call is its child) and before its body is
/// read (named `unknown` until [`finish`] names it by its `mcp_method`); child of `traceparent`
/// (the header received; `None`: a new trace). `None` when tracing is off.
#[must_use]
pub fn public_span(request_id: &str, traceparent: Option<&str>) -> Option<tracing::Span> {
    imp::server_span(
        Mode::Public,
        mcp_runtime_core::metrics::McpMethod::UNKNOWN.as_str(),
        Some(request_id),
        traceparent.unwrap_or_default(),
    )
}

/// Makes `span` the trace context the request's calls pass on: `auth.traceparent` becomes the
/// span's own context (unchanged when the span has none).
pub fn adopt(span: &tracing::Span, auth: &mut mcp_runtime_core::AuthContext) {
    if let Some(tp) = mcp_runtime_core::trace::traceparent_of(span) {
        auth.traceparent = tp;
    }
}

/// The CLIENT span of one Core SPI call (edge mode), named `mcp.core.v1.Core/{operation}`
/// with `rpc.system` (`grpc` or `http`) and `rpc.method` (`operation`); the child of the
/// current span (the request's), a new trace for a call made outside a request (RecordCalls).
/// Disabled (nothing created) when tracing is off.
#[must_use]
pub fn core_span(operation: &'static str, system: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "core call",
        otel.name = format_args!("mcp.core.v1.Core/{operation}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = system,
        rpc.method = operation,
        error.type = tracing::field::Empty,
    )
}

/// Marks a CLIENT span failed: status ERROR and `error.type` (`unavailable`, `timeout`).
pub fn failed(span: &tracing::Span, error_type: &'static str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type);
}

/// The span's name: the `mcp_method` label of the request, the JSON-RPC method read from the
/// body (only when tracing is on: the span is named when it starts, before the core parses).
fn span_name(request: &mcp_runtime_core::Request) -> &'static str {
    use mcp_runtime_core::Method;
    use mcp_runtime_core::metrics::McpMethod;
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        id: Option<serde::de::IgnoredAny>,
    }
    match request.method {
        Method::Get => McpMethod::GET.as_str(),
        Method::Delete => McpMethod::DELETE.as_str(),
        Method::Post => match serde_json::from_slice::<Head<'_>>(&request.body) {
            Ok(Head {
                method: Some(m), ..
            }) => McpMethod::of(&m).as_str(),
            Ok(Head { method: None, id }) if id.is_some() => McpMethod::RESPONSE.as_str(),
            _ => McpMethod::UNKNOWN.as_str(),
        },
    }
}

/// Records the answer on a request span: its name (the `mcp_method` label), the HTTP status,
/// the session (the request's `session`, else the one an `initialize` created), and an ERROR
/// status for a 5xx.
pub fn finish(span: &tracing::Span, outcome: &Outcome, session: Option<&str>) {
    imp::rename(span, outcome.mcp_method.as_str());
    span.record("mcp.method.name", outcome.mcp_method.as_str());
    finish_status(span, outcome.head.status);
    if let Some(sid) = session.or_else(|| outcome.head.header("mcp-session-id")) {
        span.record("mcp.session.id", sid);
    }
}

/// Records an HTTP status on a request span (ERROR for a 5xx): for a public request refused
/// before the core saw it (401, 403, 503), through [`finish`] for the others.
pub fn finish_status(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The installed exporter; [`Guard::shutdown`] flushes the spans not yet sent.
#[derive(Debug, Default)]
pub struct Guard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Guard {
    /// Flushes and stops the exporter (at exit, outside the async runtime).
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider {
            let _ = p.shutdown();
        }
    }
}

#[cfg(feature = "otel")]
pub use imp::layer;

#[cfg(feature = "otel")]
mod imp {
    use std::sync::atomic::{AtomicBool, Ordering};

    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::Targets;

    use super::{Guard, TARGET};
    use mcp_runtime_core::metrics::Mode;

    static ON: AtomicBool = AtomicBool::new(false);

    /// The OpenTelemetry layer (filtered to [`TARGET`]) and its guard. Call outside an async
    /// runtime (the exporter's blocking client builds one of its own).
    ///
    /// # Errors
    ///
    /// The exporter's build error, as text.
    pub fn layer<S>() -> Result<(impl Layer<S>, Guard), String>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "mcp-runtime".to_owned());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("mcp-runtime");
        ON.store(true, Ordering::Relaxed);
        mcp_runtime_core::trace::install(traceparent);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO));
        Ok((
            layer,
            Guard {
                provider: Some(provider),
            },
        ))
    }

    pub(super) fn on() -> bool {
        ON.load(Ordering::Relaxed)
    }

    pub(super) fn server_span(
        mode: Mode,
        name: &'static str,
        request_id: Option<&str>,
        parent: &str,
    ) -> Option<tracing::Span> {
        if !on() {
            return None;
        }
        let span = tracing::info_span!(
            target: TARGET,
            "mcp request",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            mcp.runtime.surface = mode.as_str(),
            mcp.method.name = tracing::field::Empty,
            mcp.session.id = tracing::field::Empty,
            mcp.request.id = request_id,
            http.response.status_code = tracing::field::Empty,
        );
        if !parent.is_empty() {
            let carrier: std::collections::HashMap<String, String> =
                [("traceparent".to_owned(), parent.to_owned())].into();
            let cx = TraceContextPropagator::new().extract(&carrier);
            let _ = span.set_parent(cx);
        }
        Some(span)
    }

    /// Names the span `name` (a span whose context was read is started already: recording
    /// `otel.name` no longer renames it).
    pub(super) fn rename(span: &tracing::Span, name: &'static str) {
        if !span.is_disabled() {
            span.context().span().update_name(name);
        }
    }

    /// The W3C `traceparent` of a span's OpenTelemetry context; `None` when it has none.
    fn traceparent(span: &tracing::Span) -> Option<String> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }
}

#[cfg(not(feature = "otel"))]
mod imp {
    use mcp_runtime_core::metrics::Mode;

    pub(super) fn on() -> bool {
        false
    }

    pub(super) fn rename(_span: &tracing::Span, _name: &'static str) {}

    pub(super) fn server_span(
        _mode: Mode,
        _name: &'static str,
        _request_id: Option<&str>,
        _parent: &str,
    ) -> Option<tracing::Span> {
        None
    }
}
