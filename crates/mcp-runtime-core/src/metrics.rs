//! The runtime's Prometheus metrics (`docs/operations.md`, "Metrics"): one process-wide
//! registry, off until [`enable`] is called (the binary does so for `--metrics-listen`).
//!
//! Library: `prometheus-client`, the Prometheus project's own Rust client. Its label sets are
//! typed (the enums below encode themselves), so the hot path allocates no label string; the
//! handles a request needs every time (its latency histogram and in-flight gauge per surface
//! and MCP method) are resolved once at [`enable`]. While metrics are off every recording
//! function is one relaxed load of a `OnceLock` and a branch.
//!
//! The registry is encoded by the sidecar's metrics listener (`mcp-runtime`, module
//! `metrics`) with [`encode`].

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::request::{Body, Outcome, Transport};

/// The buckets of every latency histogram, in seconds (the conventions' list).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The `mode` label: the surface that took the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The HTTP/JSON Unix socket.
    Http,
    /// The gRPC Unix socket.
    Grpc,
    /// The public endpoint of edge mode.
    Public,
    /// In-process callers (tests, benchmarks).
    InProcess,
}

impl Mode {
    const ALL: [Self; 4] = [Self::Http, Self::Grpc, Self::Public, Self::InProcess];

    /// The label value: `http`, `grpc`, `public`, `in_process`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Public => "public",
            Self::InProcess => "in_process",
        }
    }
}

impl From<Transport> for Mode {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Http => Self::Http,
            Transport::Grpc => Self::Grpc,
            Transport::Public => Self::Public,
            Transport::InProcess => Self::InProcess,
        }
    }
}

impl EncodeLabelValue for Mode {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        e.write_str(self.as_str())
    }
}

/// The MCP methods of the spec that get a label value of their own; any other is `other`.
const METHODS: [&str; 17] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// The `mcp_method` label: an index into the bounded set of values (a `Copy` byte, so a
/// label set is hashed and compared without touching a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct McpMethod(u8);

impl McpMethod {
    const OTHER: u8 = METHODS.len() as u8;
    /// A POST carrying a client's JSON-RPC response.
    pub const RESPONSE: Self = Self(Self::OTHER + 1);
    /// A POST whose body was not read as JSON-RPC (the default until the body is parsed).
    pub const UNKNOWN: Self = Self(0xff);
    /// A GET (the session's SSE stream).
    pub const GET: Self = Self(Self::OTHER + 2);
    /// A DELETE (the end of a session).
    pub const DELETE: Self = Self(Self::OTHER + 3);
    /// How many values there are (the size of per-method handle tables).
    const COUNT: usize = METHODS.len() + 5;

    /// The label of a JSON-RPC method name: its own value for an MCP method of the spec,
    /// `other` for anything else.
    #[must_use]
    pub fn of(name: &str) -> Self {
        METHODS
            .iter()
            .position(|m| *m == name)
            .map_or(Self(Self::OTHER), |i| Self(i as u8))
    }

    /// The label value (`tools/call`, `other`, `response`, `unknown`, `GET`, `DELETE`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self.0 {
            i if (i as usize) < METHODS.len() => METHODS[i as usize],
            Self::OTHER => "other",
            i if i == Self::RESPONSE.0 => "response",
            i if i == Self::GET.0 => "GET",
            i if i == Self::DELETE.0 => "DELETE",
            _ => "unknown",
        }
    }

    fn index(self) -> usize {
        if self == Self::UNKNOWN {
            Self::COUNT - 1
        } else {
            self.0 as usize
        }
    }
}

impl EncodeLabelValue for McpMethod {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        e.write_str(self.as_str())
    }
}

/// The `rpc_code` label: the class of the JSON-RPC answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcCode {
    /// A result.
    Ok,
    /// -32700.
    ParseError,
    /// -32600.
    InvalidRequest,
    /// -32601.
    MethodNotFound,
    /// -32602.
    InvalidParams,
    /// -32603.
    InternalError,
    /// -32000 to -32099.
    ServerError,
    /// Any other code, or an error whose code was not found.
    Other,
    /// The answer is an SSE stream, whose events are not inspected.
    Stream,
    /// No JSON-RPC body (202, DELETE, an HTTP error without one).
    None,
}

impl RpcCode {
    /// The label value (`ok`, `parse_error`, ... `none`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ParseError => "parse_error",
            Self::InvalidRequest => "invalid_request",
            Self::MethodNotFound => "method_not_found",
            Self::InvalidParams => "invalid_params",
            Self::InternalError => "internal_error",
            Self::ServerError => "server_error",
            Self::Other => "other",
            Self::Stream => "stream",
            Self::None => "none",
        }
    }

    /// The class of a JSON-RPC error code.
    #[must_use]
    pub fn of_code(code: i64) -> Self {
        match code {
            -32700 => Self::ParseError,
            -32600 => Self::InvalidRequest,
            -32601 => Self::MethodNotFound,
            -32602 => Self::InvalidParams,
            -32603 => Self::InternalError,
            -32099..=-32000 => Self::ServerError,
            _ => Self::Other,
        }
    }

    /// The class of an answer's body. The runtime writes every JSON-RPC answer as
    /// `{"jsonrpc":"2.0","id":ID,"result"|"error":...}` (`crate::jsonrpc`), so only the bytes
    /// up to the member after the id are read (and, for an error, up to its `code`), never a
    /// whole result.
    #[must_use]
    pub fn of_outcome(outcome: &Outcome) -> Self {
        match &outcome.body {
            Body::Events(_) => Self::Stream,
            Body::Full(b) if b.is_empty() => Self::None,
            Body::Full(b) => Self::of_body(b),
        }
    }

    fn of_body(b: &[u8]) -> Self {
        const HEAD: &[u8] = br#"{"jsonrpc":"2.0","id":"#;
        let Some(rest) = b.strip_prefix(HEAD) else {
            return Self::None;
        };
        // Skip the id: a string (with escapes), or a number or null up to the comma.
        let mut i = 0;
        if rest.first() == Some(&b'"') {
            i = 1;
            while i < rest.len() && rest[i] != b'"' {
                i += if rest[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            while i < rest.len() && rest[i] != b',' {
                i += 1;
            }
        }
        let Some(member) = rest.get(i..) else {
            return Self::Other;
        };
        if member.starts_with(br#","result":"#) {
            return Self::Ok;
        }
        let Some(error) = member.strip_prefix(br#","error":"#) else {
            return Self::Other;
        };
        // The code: first in the runtime's own errors; an upstream's relayed error object may
        // order its members otherwise, so look a little further.
        let window = &error[..error.len().min(256)];
        let Some(at) = window.windows(7).position(|w| w == br#""code":"#) else {
            return Self::Other;
        };
        let digits = &window[at + 7..];
        let end = digits
            .iter()
            .position(|c| !(c.is_ascii_digit() || *c == b'-' || *c == b' '))
            .unwrap_or(digits.len());
        std::str::from_utf8(&digits[..end])
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map_or(Self::Other, Self::of_code)
    }
}

impl EncodeLabelValue for RpcCode {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        e.write_str(self.as_str())
    }
}

/// An upstream's id as a label value (shared, so a label set is made without allocating).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamLabel(pub Arc<str>);

impl EncodeLabelValue for UpstreamLabel {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        e.write_str(&self.0)
    }
}

/// The `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome2 {
    /// Answered (a JSON-RPC error answer included).
    Ok,
    /// A transport failure or timeout.
    Error,
}

impl EncodeLabelValue for Outcome2 {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        e.write_str(match self {
            Self::Ok => "ok",
            Self::Error => "error",
        })
    }
}

/// Labels of `mcp_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The surface.
    pub mode: Mode,
    /// The MCP method.
    pub mcp_method: McpMethod,
    /// The HTTP status sent.
    pub http_status: u16,
    /// The JSON-RPC answer's class.
    pub rpc_code: RpcCode,
}

/// Labels of `mcp_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MethodLabels {
    /// The surface.
    pub mode: Mode,
    /// The MCP method.
    pub mcp_method: McpMethod,
}

/// A `mode` label alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModeLabel {
    /// The surface.
    pub mode: Mode,
}

/// Labels of `mcp_upstream_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream's catalog id.
    pub upstream: UpstreamLabel,
    /// The MCP method called.
    pub mcp_method: McpMethod,
    /// `ok` or `error` (transport failure or timeout).
    pub outcome: Outcome2,
}

/// Labels of `mcp_upstream_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamMethodLabels {
    /// The upstream's catalog id.
    pub upstream: UpstreamLabel,
    /// The MCP method called.
    pub mcp_method: McpMethod,
}

/// Labels of `mcp_connections_refused_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusedLabels {
    /// The socket.
    pub mode: Mode,
    /// Why: `max_connections`, `peer_uid`, `header_timeout`.
    pub reason: &'static str,
}

/// Labels of `mcp_policy_revocations_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    /// `token`, `subject` or `all`.
    pub kind: &'static str,
}

/// Labels of `mcp_state_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabel {
    /// The state-store operation that failed.
    pub operation: &'static str,
}

/// Labels of `mcp_boundary_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BoundaryLabels {
    /// The surface.
    pub mode: Mode,
    /// The canonical gRPC status name, upper case.
    pub grpc_status: &'static str,
}

/// Labels of `mcp_core_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CoreLabels {
    /// The Core SPI's transport: `grpc` or `http`.
    pub mode: Mode,
    /// The RPC of `core.proto` (`ResolveCaller`, `InvokeHook`, `RecordCalls`, `WatchPolicy`).
    pub operation: &'static str,
    /// `ok`, or `error`: no answer, a non-OK gRPC status, an HTTP status other than the
    /// route's success, an answer that breaks the Core SPI, or the deadline passed.
    pub outcome: Outcome2,
}

/// Labels of `mcp_core_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CoreOperationLabels {
    /// The Core SPI's transport: `grpc` or `http`.
    pub mode: Mode,
    /// The RPC of `core.proto`.
    pub operation: &'static str,
}

/// Labels of `mcp_build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Every metric of the runtime, registered in [`Metrics::registry`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration_family: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight_family: Family<ModeLabel, Gauge>,
    streams_family: Family<ModeLabel, Gauge>,
    /// `[mode][method]`: each resolved from its family at first use, then one atomic load
    /// (a series appears in the output once it was used).
    durations: Vec<Vec<OnceLock<Histogram>>>,
    in_flight: Vec<OnceLock<Gauge>>,
    streams: Vec<OnceLock<Gauge>>,
    /// `mcp_sessions_open`, set at each scrape.
    pub sessions_open: Gauge,
    /// `mcp_boundary_errors_total`.
    pub boundary_errors: Family<BoundaryLabels, Counter>,
    /// `mcp_connections_admitted_total`.
    pub connections_admitted: Family<ModeLabel, Counter>,
    /// `mcp_connections_refused_total`.
    pub connections_refused: Family<RefusedLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_durations: Family<UpstreamMethodLabels, Histogram, fn() -> Histogram>,
    /// `mcp_policy_cache_hits_total`.
    pub policy_cache_hits: Counter,
    /// `mcp_policy_cache_misses_total`.
    pub policy_cache_misses: Counter,
    /// `mcp_policy_revocations_total`.
    pub policy_revocations: Family<KindLabel, Counter>,
    /// `mcp_state_errors_total`.
    pub state_errors: Family<OperationLabel, Counter>,
    core_requests: Family<CoreLabels, Counter>,
    core_durations: Family<CoreOperationLabels, Histogram, fn() -> Histogram>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metrics, when [`enable`] was called.
#[must_use]
#[inline]
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Switches metrics on for the rest of the process (idempotent) and returns them.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "mcp_requests",
            "MCP requests answered (counted when the answer's head is sent)",
            requests.clone(),
        );
        let duration_family =
            Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "mcp_request_duration_seconds",
            "From the request's arrival to its answer's head (an SSE stream: to its head)",
            duration_family.clone(),
        );
        let in_flight_family = Family::<ModeLabel, Gauge>::default();
        registry.register(
            "mcp_requests_in_flight",
            "Requests whose answer is not complete (an open SSE stream counts)",
            in_flight_family.clone(),
        );
        let streams_family = Family::<ModeLabel, Gauge>::default();
        registry.register(
            "mcp_streams_open",
            "SSE answers being sent (POST and GET streams)",
            streams_family.clone(),
        );
        let durations = Mode::ALL
            .iter()
            .map(|_| (0..McpMethod::COUNT).map(|_| OnceLock::new()).collect())
            .collect();
        let in_flight = Mode::ALL.iter().map(|_| OnceLock::new()).collect();
        let streams = Mode::ALL.iter().map(|_| OnceLock::new()).collect();
        let sessions_open = Gauge::default();
        registry.register(
            "mcp_sessions_open",
            "MCP sessions this process holds",
            sessions_open.clone(),
        );
        let boundary_errors = Family::default();
        registry.register(
            "mcp_boundary_errors",
            "Calls over the gateway-runtime boundary answered with a non-OK gRPC status",
            boundary_errors.clone(),
        );
        let connections_admitted = Family::default();
        registry.register(
            "mcp_connections_admitted",
            "Connections admitted on each socket of the runtime",
            connections_admitted.clone(),
        );
        let connections_refused = Family::default();
        registry.register(
            "mcp_connections_refused",
            "Connections closed by a socket's admission rules",
            connections_refused.clone(),
        );
        let upstream_requests = Family::default();
        registry.register(
            "mcp_upstream_requests",
            "Calls to upstream MCP servers (error: transport failure or timeout)",
            upstream_requests.clone(),
        );
        let upstream_durations =
            Family::<UpstreamMethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                histogram,
            );
        registry.register(
            "mcp_upstream_request_duration_seconds",
            "Latency of calls to upstream MCP servers",
            upstream_durations.clone(),
        );
        let policy_cache_hits = Counter::default();
        registry.register(
            "mcp_policy_cache_hits",
            "Edge mode: caller resolutions answered from the runtime's cache",
            policy_cache_hits.clone(),
        );
        let policy_cache_misses = Counter::default();
        registry.register(
            "mcp_policy_cache_misses",
            "Edge mode: caller resolutions asked of the core",
            policy_cache_misses.clone(),
        );
        let policy_revocations = Family::default();
        registry.register(
            "mcp_policy_revocations",
            "Edge mode: revocations applied to the caller cache",
            policy_revocations.clone(),
        );
        let state_errors = Family::default();
        registry.register(
            "mcp_state_errors",
            "Shared-state store (Redis) operations that failed",
            state_errors.clone(),
        );
        let core_requests = Family::default();
        registry.register(
            "mcp_core_requests",
            "Edge mode: Core SPI calls made to the policy core (a watch stream: when it ends)",
            core_requests.clone(),
        );
        let core_durations =
            Family::<CoreOperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                histogram,
            );
        registry.register(
            "mcp_core_request_duration_seconds",
            "Edge mode: latency of Core SPI calls to the policy core (a watch stream: its life)",
            core_durations.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("mcp_build_info", "The runtime's version", build_info);
        Self {
            registry,
            requests,
            duration_family,
            in_flight_family,
            streams_family,
            durations,
            in_flight,
            streams,
            sessions_open,
            boundary_errors,
            connections_admitted,
            connections_refused,
            upstream_requests,
            upstream_durations,
            policy_cache_hits,
            policy_cache_misses,
            policy_revocations,
            state_errors,
            core_requests,
            core_durations,
        }
    }

    /// The registry (for the listener's encoding).
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one answered request.
    pub fn record_request(
        &self,
        mode: Mode,
        mcp_method: McpMethod,
        http_status: u16,
        rpc_code: RpcCode,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                mode,
                mcp_method,
                http_status,
                rpc_code,
            })
            .inc();
        self.durations[mode as usize][mcp_method.index()]
            .get_or_init(|| {
                self.duration_family
                    .get_or_create_owned(&MethodLabels { mode, mcp_method })
            })
            .observe(seconds);
    }

    /// Records one upstream call.
    pub fn record_upstream(
        &self,
        upstream: &Arc<str>,
        mcp_method: McpMethod,
        ok: bool,
        seconds: f64,
    ) {
        let upstream = UpstreamLabel(Arc::clone(upstream));
        self.upstream_durations
            .get_or_create(&UpstreamMethodLabels {
                upstream: upstream.clone(),
                mcp_method,
            })
            .observe(seconds);
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                upstream,
                mcp_method,
                outcome: if ok { Outcome2::Ok } else { Outcome2::Error },
            })
            .inc();
    }

    /// Records one Core SPI call made to the policy core (edge mode): `mode` is its transport
    /// (`Grpc` or `Http`), `operation` the RPC's name in `core.proto`, `seconds` its latency.
    pub fn record_core(&self, mode: Mode, operation: &'static str, ok: bool, seconds: f64) {
        self.core_durations
            .get_or_create(&CoreOperationLabels { mode, operation })
            .observe(seconds);
        self.core_requests
            .get_or_create(&CoreLabels {
                mode,
                operation,
                outcome: if ok { Outcome2::Ok } else { Outcome2::Error },
            })
            .inc();
    }

    /// A guard counting one request in flight on `mode` until dropped.
    #[must_use]
    pub fn in_flight(&self, mode: Mode) -> GaugeGuard {
        GaugeGuard::new(self.in_flight[mode as usize].get_or_init(|| {
            self.in_flight_family
                .get_or_create_owned(&ModeLabel { mode })
        }))
    }

    /// A guard counting one SSE answer open on `mode` until dropped.
    #[must_use]
    pub fn stream(&self, mode: Mode) -> GaugeGuard {
        GaugeGuard::new(
            self.streams[mode as usize]
                .get_or_init(|| self.streams_family.get_or_create_owned(&ModeLabel { mode })),
        )
    }
}

/// Counts one in a gauge while it lives.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(g: &Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a failed state-store operation, when metrics are on.
pub fn state_error(operation: &'static str) {
    if let Some(m) = get() {
        m.state_errors
            .get_or_create(&OperationLabel { operation })
            .inc();
    }
}

/// The registry in the Prometheus text format 0.0.4 (served with
/// [`CONTENT_TYPE`]).
///
/// # Errors
///
/// Only a formatting error of the writer (never for a `String`).
pub fn encode(m: &Metrics, out: &mut String) -> std::fmt::Result {
    prometheus_client::encoding::prometheus_text::encode(out, &m.registry)
}

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Counts a connection admitted on `mode`'s socket, when metrics are on.
pub fn connection_admitted(mode: Mode) {
    if let Some(m) = get() {
        m.connections_admitted
            .get_or_create(&ModeLabel { mode })
            .inc();
    }
}

/// Counts a connection refused on `mode`'s socket for `reason`, when metrics are on.
pub fn connection_refused(mode: Mode, reason: &'static str) {
    if let Some(m) = get() {
        m.connections_refused
            .get_or_create(&RefusedLabels { mode, reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_code_reads_only_the_head_of_the_runtime_answers() {
        use crate::jsonrpc;
        let id = serde_json::value::RawValue::from_string("\"a,\\\"b\"".to_owned()).unwrap();
        assert_eq!(
            RpcCode::of_body(&jsonrpc::result_body(&id, "{}")),
            RpcCode::Ok
        );
        assert_eq!(
            RpcCode::of_body(&jsonrpc::error_body(Some(&id), -32601, "x")),
            RpcCode::MethodNotFound
        );
        assert_eq!(
            RpcCode::of_body(&jsonrpc::error_body(None, -32001, "x")),
            RpcCode::ServerError
        );
        assert_eq!(
            RpcCode::of_body(&jsonrpc::raw_error_body(&id, r#"{"message":"m","code":7}"#)),
            RpcCode::Other
        );
        assert_eq!(RpcCode::of_body(b"not json"), RpcCode::None);
    }

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(McpMethod::of("tools/call").as_str(), "tools/call");
        assert_eq!(McpMethod::of("x/y").as_str(), "other");
        assert_eq!(McpMethod::UNKNOWN.as_str(), "unknown");
        assert_eq!(McpMethod::GET.as_str(), "GET");
        assert_eq!(McpMethod::RESPONSE.as_str(), "response");
        assert_eq!(McpMethod::UNKNOWN.index(), McpMethod::COUNT - 1);
    }
}
