//! `mcp-runtime`: the MCP runtime sidecar binary.
//!
//! Wiring only: parses the command line, sets up logging, binds the sockets, starts the
//! runtime, serves it with the library's [`Server`], reloads the catalog on SIGHUP and drains
//! it on SIGTERM or SIGINT. What
//! is served, and how, lives in the library (`lib.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
#[cfg(feature = "grpc-uds")]
use mcp_runtime::GrpcSettings;
use mcp_runtime::host_origin::{AllowLists, DEFAULT_ALLOWED_HOSTS, default_allowed_origins};
use mcp_runtime::policy::cache::{CacheLimits, DenialLimits};
use mcp_runtime::policy::flood::ResolveLimits;
use mcp_runtime::policy::{CoreTransport, Policy, PolicyConfig};
use mcp_runtime::{Admission, PublicEndpoint, Server, features, socket};
use mcp_runtime_core::quota::{self, QuotaConfig};
use mcp_runtime_core::{CatalogConfig, Retention, Runtime, RuntimeConfig, StateConfig};

/// The MCP runtime sidecar: sessions, catalog and upstream calls behind Unix sockets.
#[derive(Debug, Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Args {
    /// Catalog file (TOML): upstream MCP servers, virtual servers, visibility.
    #[arg(long, env = "MCP_RUNTIME_CATALOG")]
    catalog: PathBuf,

    /// Path of the HTTP/JSON Unix socket (a file path; abstract `@names` are refused). An empty
    /// value means not given.
    #[arg(long, env = "MCP_RUST_UDS", value_parser = optional_path())]
    http_uds: Option<PathBuf>,

    /// Path of the gRPC Unix socket (needs a build with the `grpc-uds` feature; a file path,
    /// abstract `@names` are refused). An empty value means not given.
    #[arg(long, env = "MCP_RUST_GRPC_UDS", value_parser = optional_path())]
    grpc_uds: Option<PathBuf>,

    /// Permission bits of the socket files, in octal (600: owner only; 660: also the group).
    #[arg(long, env = "MCP_RUNTIME_SOCKET_MODE", default_value = "600", value_parser = parse_mode)]
    socket_mode: u32,

    /// Largest request body and result, in bytes, on both adapters.
    #[arg(long, env = "MCP_RUNTIME_MAX_MESSAGE_BYTES", default_value_t = mcp_runtime_core::runtime::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,

    /// Timeout of one upstream call, in milliseconds.
    #[arg(
        long,
        env = "MCP_RUNTIME_UPSTREAM_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    upstream_timeout_ms: u64,

    /// Idle time after which a session (no request, call or open stream) is ended, in seconds.
    #[arg(long, env = "MCP_RUNTIME_SESSION_IDLE_TTL_S", default_value_t = 3600)]
    session_idle_ttl_s: u64,

    /// Most MCP sessions one subject (the AuthContext's email) may hold open at once; an
    /// `initialize` beyond it is answered 429 with a JSON-RPC error and `Retry-After`.
    #[arg(long, env = "MCP_RUNTIME_MAX_SESSIONS_PER_SUBJECT", default_value_t = mcp_runtime_core::runtime::DEFAULT_MAX_SESSIONS_PER_SUBJECT)]
    max_sessions_per_subject: usize,

    /// Most streams one subject may hold open at once: standalone GET (SSE) streams and MCP
    /// 2026-07-28 `subscriptions/listen` streams together; one beyond it is answered 429 with a
    /// JSON-RPC error and `Retry-After: 1`.
    #[arg(long, env = "MCP_RUNTIME_MAX_STREAMS_PER_SUBJECT", default_value_t = quota::DEFAULT_MAX_STREAMS_PER_SUBJECT)]
    max_streams_per_subject: usize,

    /// Most upstream calls (tools/call, prompts/get, resources/read) one subject may have in
    /// flight at once; a call beyond it is answered 429 with `Retry-After: 1`.
    #[arg(long, env = "MCP_RUNTIME_MAX_CALLS_PER_SUBJECT", default_value_t = quota::DEFAULT_MAX_CALLS_PER_SUBJECT)]
    max_calls_per_subject: usize,

    /// Most bytes of request bodies and results one subject may have in flight at once; a
    /// request beyond it is answered 429 (with `Retry-After: 1` unless it alone is larger).
    #[arg(long, env = "MCP_RUNTIME_MAX_BYTES_PER_SUBJECT", default_value_t = quota::DEFAULT_MAX_BYTES_PER_SUBJECT)]
    max_bytes_per_subject: usize,

    /// Most bytes of request bodies and results the process may have in flight at once; a
    /// request beyond it is answered 503 (with `Retry-After: 1` unless it alone is larger).
    #[arg(long, env = "MCP_RUNTIME_MAX_BYTES_IN_FLIGHT", default_value_t = quota::DEFAULT_MAX_BYTES_IN_FLIGHT)]
    max_bytes_in_flight: usize,

    /// How long shutdown waits for in-flight requests, in milliseconds.
    #[arg(long, env = "MCP_RUNTIME_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    shutdown_grace_ms: u64,

    /// Uids allowed to connect to either socket, checked with `SO_PEERCRED` before a byte of
    /// the request is read; repeatable or a comma list. Default: any uid the socket mode lets in.
    #[arg(long, env = "MCP_RUNTIME_ALLOW_UID", value_delimiter = ',')]
    allow_uid: Vec<u32>,

    /// Most connections open at once on each socket; further ones are closed at once.
    #[arg(long, env = "MCP_RUNTIME_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,

    /// How long a client may take to send a request head (and how long a new or keep-alive
    /// connection may stay silent) before it is closed, in milliseconds.
    #[arg(
        long,
        env = "MCP_RUNTIME_HEADER_READ_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    header_read_timeout_ms: u64,

    /// Edge mode: how long a client of the public endpoint may take to send a request head (and
    /// how long a new or keep-alive public connection may stay silent) before it is closed, in
    /// milliseconds. Shorter than --header-read-timeout-ms: the public side faces untrusted
    /// clients, and a half-sent head holds a connection slot.
    #[arg(
        long,
        env = "MCP_RUNTIME_PUBLIC_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    public_header_read_timeout_ms: u64,

    /// Edge mode: how long a `text/event-stream` answer of the public endpoint (a GET or
    /// listen stream, a call's stream) may stay silent before an SSE comment (`: keep-alive`)
    /// is written on it, so that proxies and clients with an idle timeout keep it open, in
    /// milliseconds, at least 100; 0: never. The gateway's MCP_GATEWAY_SSE_KEEP_ALIVE_S in the
    /// proxied modes; the Unix sockets' answers get none (their client is the gateway).
    #[arg(
        long,
        env = "MCP_RUNTIME_PUBLIC_SSE_KEEP_ALIVE_MS",
        default_value_t = 15_000,
        value_parser = keep_alive_ms
    )]
    public_sse_keep_alive_ms: u64,

    /// Edge mode: serve the public MCP endpoint (`/mcp`, `/servers/{id}/mcp`, GET/POST/DELETE,
    /// streamable HTTP) on this TCP address (`ADDR:PORT`, port 0 picks one and logs it), with
    /// callers resolved by the policy core at --core-uds. Off by default.
    #[arg(long, env = "MCP_RUNTIME_PUBLIC_LISTEN")]
    public_listen: Option<std::net::SocketAddr>,

    /// Edge mode: the policy core's Unix socket (the Core SPI, `docs/core-spi.md`). Needed with
    /// --public-listen.
    #[arg(long, env = "MCP_RUNTIME_CORE_UDS", value_parser = optional_path())]
    core_uds: Option<PathBuf>,

    /// Edge mode: the Core SPI transport the core serves on --core-uds: `grpc` (needs the
    /// `grpc-uds` feature) or `http` (HTTP/JSON).
    #[arg(long, env = "MCP_RUNTIME_CORE_TRANSPORT", default_value = "grpc", value_parser = ["grpc", "http"])]
    core_transport: String,

    /// Edge mode: deadline of one call to the core (ResolveCaller, InvokeHook), connecting
    /// included, in milliseconds; past it the request is answered 503 (fail closed).
    #[arg(long, env = "MCP_RUNTIME_CORE_TIMEOUT_MS", default_value_t = 800)]
    core_timeout_ms: u64,

    /// Edge mode: `Host` values the public endpoint accepts (`name` any port, `name:port`, `*`);
    /// a comma list. Others are answered 421. Default: the loopback names, as the gateway.
    #[arg(long, env = "MCP_RUNTIME_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,

    /// Edge mode: `Origin` values the public endpoint accepts (`scheme://host` any port,
    /// `scheme://host:port`, `*`); a comma list. Others are answered 403; a request without
    /// `Origin` passes. Default: http and https on the loopback names, as the gateway.
    #[arg(long, env = "MCP_RUNTIME_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,

    /// Edge mode: most callers cached at once (0: no cache, every request asks the core).
    #[arg(
        long,
        env = "MCP_RUNTIME_AUTH_CACHE_MAX_ENTRIES",
        default_value_t = 10_000
    )]
    auth_cache_max_entries: usize,

    /// Edge mode: longest time a resolved caller is reused, in milliseconds (also bounded by
    /// the token's expiry and the core's `cache_max_age_ms`; dropped at once on a revocation).
    #[arg(
        long,
        env = "MCP_RUNTIME_AUTH_CACHE_MAX_AGE_MS",
        default_value_t = 60_000
    )]
    auth_cache_max_age_ms: u64,

    /// Edge mode: how long a credential the core refused is answered 401 (or 403) from a cache
    /// without asking the core again, in milliseconds (0: no denial cache). Any watch event
    /// clears it.
    #[arg(
        long,
        env = "MCP_RUNTIME_AUTH_DENY_CACHE_TTL_MS",
        default_value_t = 5_000
    )]
    auth_deny_cache_ttl_ms: u64,

    /// Edge mode: most refused credentials cached at once (0: no denial cache); a full cache
    /// drops its oldest entry. Keys are SHA-256 hashes, never the token.
    #[arg(
        long,
        env = "MCP_RUNTIME_AUTH_DENY_CACHE_MAX_ENTRIES",
        default_value_t = 10_000
    )]
    auth_deny_cache_max_entries: usize,

    /// Edge mode: most ResolveCaller calls to the core in progress for requests from one
    /// client IP address (concurrent requests with the same credential share one call); past
    /// it a request is answered 503 with `Retry-After` and a JSON-RPC error. At least 1.
    #[arg(
        long,
        env = "MCP_RUNTIME_CORE_MAX_RESOLVES_PER_CLIENT",
        default_value_t = 8
    )]
    core_max_resolves_per_client: usize,

    /// Edge mode: most ResolveCaller calls to the core in progress in all; past it a request
    /// is answered 503 with `Retry-After` and a JSON-RPC error. At least 1.
    #[arg(long, env = "MCP_RUNTIME_CORE_MAX_RESOLVES", default_value_t = 64)]
    core_max_resolves: usize,

    /// Edge mode: largest request head (request line and headers) on the public endpoint, in
    /// bytes; a longer one is answered 431.
    #[arg(long, env = "MCP_RUNTIME_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    max_header_bytes: usize,

    /// Shared state for several replicas: a Redis URL (`redis://HOST:PORT[/DB]` or
    /// `unix:///PATH`). Sessions, SSE event history and cancellation are then shared by every
    /// runtime on the same Redis. Default: in memory, this process only.
    #[arg(long, env = "MCP_RUNTIME_STATE_URL")]
    state_url: Option<String>,

    /// Longest wait for one Redis command, connecting included, in milliseconds; a request
    /// that needs shared state is answered 503 past it.
    #[arg(long, env = "MCP_RUNTIME_STATE_TIMEOUT_MS", default_value_t = 1000)]
    state_timeout_ms: u64,

    /// Most SSE events kept per stream for resumption with `Last-Event-ID`.
    #[arg(long, env = "MCP_RUNTIME_EVENT_RETENTION", default_value_t = mcp_runtime_core::state::DEFAULT_RETENTION_EVENTS)]
    event_retention: usize,

    /// Longest time an SSE event is kept for resumption, in seconds.
    #[arg(long, env = "MCP_RUNTIME_EVENT_RETENTION_S", default_value_t = mcp_runtime_core::state::DEFAULT_RETENTION_AGE_S)]
    event_retention_s: u64,

    /// Log format: `text` for people, `json` for one JSON object per line. Which events are
    /// logged is set by the environment variable `MCP_RUNTIME_LOG`, a `tracing` filter
    /// directive (default `info`; `debug`, `mcp_runtime_core=debug`, ...). At `info` each
    /// request is one line on the target `mcp_runtime::access` (`MCP_RUNTIME_LOG=info,mcp_runtime::access=warn` leaves them out).
    #[arg(long, env = "MCP_RUNTIME_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    /// Prometheus metrics: serve `GET /metrics` (text format 0.0.4), `/health` and `/ready`
    /// on this TCP address (`127.0.0.1:9464`; port 0 is refused, a scrape target needs a known
    /// port). Off by default: no metric is recorded then.
    #[arg(long, env = "MCP_RUNTIME_METRICS_LISTEN", value_parser = parse_metrics_listen)]
    metrics_listen: Option<std::net::SocketAddr>,

    /// At SIGTERM or SIGINT, how long the runtime reports not ready (`/ready` 503, gRPC
    /// health NOT_SERVING) while still serving, before it stops accepting, in milliseconds.
    /// Set it a little above the load balancer's readiness probe period.
    #[arg(long, env = "MCP_RUNTIME_DRAIN_MS", default_value_t = 0)]
    drain_ms: u64,

    /// Tokio worker threads (default: one per core).
    #[arg(long, env = "MCP_RUNTIME_WORKER_THREADS")]
    worker_threads: Option<usize>,

    /// HTTP/2 and tonic settings of the gRPC adapter.
    #[cfg(feature = "grpc-uds")]
    #[command(
        flatten,
        next_help_heading = "gRPC server settings (default: tonic's own)"
    )]
    grpc_settings: GrpcSettingsArgs,
}

/// The gRPC adapter's HTTP/2 and tonic settings on the command line ([`GrpcSettings`]); every
/// one defaults to tonic's own. docs/grpc-settings.md says what each measured.
#[cfg(feature = "grpc-uds")]
#[derive(Debug, clap::Args)]
struct GrpcSettingsArgs {
    /// HTTP/2 initial stream window, in bytes (hyper's default: 1 MiB).
    #[arg(long, env = "MCP_RUNTIME_GRPC_INITIAL_STREAM_WINDOW_SIZE")]
    grpc_initial_stream_window_size: Option<u32>,

    /// HTTP/2 initial connection window, in bytes (hyper's default: 1 MiB).
    #[arg(long, env = "MCP_RUNTIME_GRPC_INITIAL_CONNECTION_WINDOW_SIZE")]
    grpc_initial_connection_window_size: Option<u32>,

    /// HTTP/2 adaptive flow-control window (overrides both window sizes).
    #[arg(long, env = "MCP_RUNTIME_GRPC_ADAPTIVE_WINDOW")]
    grpc_adaptive_window: bool,

    /// HTTP/2 largest frame the runtime accepts, in bytes, 16,384 to 16,777,215 (hyper's default: 16,384).
    #[arg(long, env = "MCP_RUNTIME_GRPC_MAX_FRAME_SIZE", value_parser = clap::value_parser!(u32).range(16_384..=16_777_215))]
    grpc_max_frame_size: Option<u32>,

    /// HTTP/2 streams open at once per connection (tonic: no limit).
    #[arg(long, env = "MCP_RUNTIME_GRPC_MAX_CONCURRENT_STREAMS", value_parser = clap::value_parser!(u32).range(1..))]
    grpc_max_concurrent_streams: Option<u32>,

    /// Calls served at once per connection; more wait (tonic: no limit).
    #[arg(long, env = "MCP_RUNTIME_GRPC_CONCURRENCY_PER_CONNECTION", value_parser = clap::value_parser!(u64).range(1..))]
    grpc_concurrency_per_connection: Option<u64>,

    /// A deadline for calls that carry no `grpc-timeout`, in milliseconds (tonic: none).
    #[arg(long, env = "MCP_RUNTIME_GRPC_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..))]
    grpc_timeout_ms: Option<u64>,

    /// The protobuf codec's buffer: first allocation per message and growth step, in bytes
    /// (tonic: 8,192).
    #[arg(long, env = "MCP_RUNTIME_GRPC_CODEC_BUFFER_SIZE", value_parser = clap::value_parser!(u64).range(1..=(64 << 20)))]
    grpc_codec_buffer_size: Option<u64>,

    /// Bytes of ready stream messages the codec batches into one send (tonic: 32,768).
    #[arg(long, env = "MCP_RUNTIME_GRPC_CODEC_YIELD_THRESHOLD", value_parser = clap::value_parser!(u64).range(1..=(64 << 20)))]
    grpc_codec_yield_threshold: Option<u64>,
}

#[cfg(feature = "grpc-uds")]
impl GrpcSettingsArgs {
    fn settings(&self) -> GrpcSettings {
        GrpcSettings {
            initial_stream_window_size: self.grpc_initial_stream_window_size,
            initial_connection_window_size: self.grpc_initial_connection_window_size,
            adaptive_window: self.grpc_adaptive_window,
            max_frame_size: self.grpc_max_frame_size,
            max_concurrent_streams: self.grpc_max_concurrent_streams,
            concurrency_limit_per_connection: self
                .grpc_concurrency_per_connection
                .and_then(|n| usize::try_from(n).ok()),
            timeout: self.grpc_timeout_ms.map(Duration::from_millis),
        }
    }

    /// Sets the codec's buffer settings for the process when either flag is given (the other
    /// keeps tonic's default).
    fn apply_codec_settings(&self) {
        if self.grpc_codec_buffer_size.is_none() && self.grpc_codec_yield_threshold.is_none() {
            return;
        }
        let bytes = |v: Option<u64>, default: usize| {
            v.and_then(|n| usize::try_from(n).ok()).unwrap_or(default)
        };
        let set = mcp_runtime_proto::codec::set_buffer_settings(
            bytes(self.grpc_codec_buffer_size, 8 * 1024),
            bytes(self.grpc_codec_yield_threshold, 32 * 1024),
        );
        if let Err(e) = set {
            tracing::warn!(error = %e, "gRPC codec buffer settings not applied");
        }
    }
}

/// What `--help` says after the flags.
const AFTER_HELP: &str = "\
Socket paths: file paths only (an abstract `@name` is refused: no file mode or owner would
protect it). An empty MCP_RUST_UDS or MCP_RUST_GRPC_UDS means not given. A path whose runtime
still runs, also while it drains, is refused; a socket no process listens on is replaced; at
exit a runtime removes only the socket file it created.

Proxies: upstreams on loopback (127.0.0.0/8, ::1, localhost) never go through a proxy; others
follow HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, and the error of an unreachable one
names the proxy variable in effect.

Edge mode (--public-listen with --core-uds): the runtime serves the public MCP endpoint itself
and asks the policy core over the Core SPI who each caller is (cached per credential until the
token's expiry, the core's and --auth-cache-max-age-ms, or a revocation on the watch stream) and
for the hooks it registered. A refused credential is answered from a cache for
--auth-deny-cache-ttl-ms; concurrent requests with one credential share one call to the core,
and calls in progress are capped per client address (--core-max-resolves-per-client) and in all
(--core-max-resolves): past a cap, 503 with Retry-After. Fail closed: when the core cannot answer, every request is 503 with
a JSON-RPC error; the runtime reconnects by itself.

Several replicas (--state-url): every runtime on the same Redis serves every session; an SSE
stream can be resumed on any of them with Last-Event-ID. Redis unreachable: requests that need
it are answered 503 within --state-timeout-ms; they recover by themselves when it returns.

Operating (docs/operations.md): --metrics-listen serves Prometheus /metrics, /health and
/ready on TCP; /ready answers 503 from SIGTERM on, for --drain-ms before the sockets close.
SIGHUP reloads the catalog file (docs/catalog.md, \"Live catalog\"); a catalog that cannot be
used is refused in one log line and the old one kept.
Logs: MCP_RUNTIME_LOG (a tracing filter, default info; one line per request at info on
mcp_runtime::access) and --log-format. Traces (a build with the `otel` feature):
OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER=otlp switch OTLP/HTTP export on.

Exit status: 0 after a clean shutdown, 1 when start-up fails (catalog, upstreams), 2 for a
usage error (command line, socket path, metrics port, OTEL_* settings).";

fn parse_metrics_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = s
        .parse()
        .map_err(|_| format!("`{s}` is not ADDR:PORT (127.0.0.1:9464, [::1]:9464)"))?;
    if addr.port() == 0 {
        return Err("port 0: a scrape target needs a known port".to_owned());
    }
    Ok(addr)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("`{s}` is not an octal mode such as 600"))?;
    if mode > 0o777 {
        return Err(format!("`{s}` is not a permission mode (at most 777)"));
    }
    Ok(mode)
}

/// `--public-sse-keep-alive-ms`: 0 (never) or 100 ms to one hour. Shorter would flood a
/// silent stream's client with comments for nothing.
fn keep_alive_ms(s: &str) -> Result<u64, String> {
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of milliseconds"))?;
    if ms != 0 && !(100..=3_600_000).contains(&ms) {
        return Err(format!(
            "`{s}` is out of range: 0 (never) or 100 to 3600000 milliseconds"
        ));
    }
    Ok(ms)
}

/// The contract version health reports: [`mcp_runtime_core::CONTRACT_VERSION`]. Debug builds
/// only (the binaries the tests run) let `MCP_RUNTIME_TEST_CONTRACT_VERSION` replace it, so the
/// gateway's version handshake can be tested against a real runtime; release builds ignore it.
fn contract_version() -> String {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("MCP_RUNTIME_TEST_CONTRACT_VERSION") {
        tracing::warn!(contract_version = %v, "test override of the reported contract version");
        return v;
    }
    mcp_runtime_core::CONTRACT_VERSION.to_owned()
}

/// The parser of the socket paths: clap's own path parser refuses an empty value, which must
/// reach [`given`] instead.
fn optional_path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser as _;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// `None` for an empty path: an empty `MCP_RUST_UDS` or `MCP_RUST_GRPC_UDS` means the socket is
/// not wanted, as the gateway reads the same variables.
fn given(path: Option<PathBuf>) -> Option<PathBuf> {
    path.filter(|p| !p.as_os_str().is_empty())
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    args.http_uds = given(args.http_uds);
    args.grpc_uds = given(args.grpc_uds);
    let traces = match mcp_runtime::otel::wanted() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mcp-runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let otel = match init_logging(&args.log_format, traces) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("mcp-runtime: {e}");
            return ExitCode::from(2);
        }
    };
    args.core_uds = given(args.core_uds);
    if args.http_uds.is_none() && args.grpc_uds.is_none() && args.public_listen.is_none() {
        eprintln!(
            "mcp-runtime: no socket to serve; give --http-uds (MCP_RUST_UDS), --grpc-uds (MCP_RUST_GRPC_UDS) and/or --public-listen (MCP_RUNTIME_PUBLIC_LISTEN)"
        );
        return ExitCode::from(2);
    }
    if args.public_listen.is_some() != args.core_uds.is_some() {
        eprintln!(
            "mcp-runtime: --public-listen (MCP_RUNTIME_PUBLIC_LISTEN) and --core-uds (MCP_RUNTIME_CORE_UDS) go together: the public endpoint asks the core at that socket"
        );
        return ExitCode::from(2);
    }
    if args.public_listen.is_some() && args.core_transport == "grpc" && !cfg!(feature = "grpc-uds")
    {
        eprintln!(
            "mcp-runtime: --core-transport grpc needs the `grpc-uds` feature, which this binary was built without; rebuild with `cargo build -p mcp-runtime --features grpc-uds` or give --core-transport http"
        );
        return ExitCode::from(2);
    }
    if args.grpc_uds.is_some() && !cfg!(feature = "grpc-uds") {
        eprintln!(
            "mcp-runtime: --grpc-uds / MCP_RUST_GRPC_UDS needs the `grpc-uds` feature, which this binary was built without; rebuild with `cargo build -p mcp-runtime --features grpc-uds`"
        );
        return ExitCode::from(2);
    }
    // A path that cannot be bound (abstract, too long, a live runtime's or a non-socket file)
    // fails now, before the upstreams are contacted; `socket::bind` checks again.
    for path in args.http_uds.iter().chain(&args.grpc_uds) {
        if let Err(e) = socket::preflight(path) {
            eprintln!("mcp-runtime: {e}");
            return ExitCode::from(2);
        }
    }
    // The metrics port is bound first, so that a port in use fails before the upstreams are
    // contacted, in one line naming the flag.
    let metrics_listener = match args.metrics_listen.map(socket::bind_tcp_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "mcp-runtime: --metrics-listen (MCP_RUNTIME_METRICS_LISTEN) {}: cannot listen: {e}",
                args.metrics_listen
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.worker_threads {
        builder.worker_threads(n.max(1));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-runtime: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json_logs = args.log_format == "json";
    let result = rt.block_on(run(args, metrics_listener));
    drop(rt);
    otel.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: a JSON log line when logs are JSON (what a log collector reads), else one
            // plain line.
            let message = error_chain(&e);
            if json_logs {
                tracing::error!(error = %message, "mcp-runtime stopped");
            } else {
                eprintln!("mcp-runtime: {message}");
            }
            // A socket path that cannot be used is a usage error, like the checks above.
            if e.downcast_ref::<socket::SocketError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `e` and its causes joined by `: `, leaving out a cause whose words the text already has (an
/// error that shows its source in its own message, as many libraries' errors do, would
/// otherwise be printed twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let words = cause.to_string();
        if text.contains(&words) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&words);
    }
    text
}

/// Installs the log subscriber: the format's layer filtered by `MCP_RUNTIME_LOG` (never the
/// request spans' target), and with `otel` the OpenTelemetry layer (`traces`).
fn init_logging(format: &str, traces: bool) -> Result<mcp_runtime::otel::Guard, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let off = format!("{}=off", mcp_runtime::otel::TARGET)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_RUNTIME_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(off);
    use std::io::IsTerminal as _;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = if format == "json" {
        // The keys of every process (`ts`, `level`, `logger`, `msg`, then the event's
        // fields): `mcp_runtime::log_json`.
        fmt.event_format(mcp_runtime::log_json::JsonLines)
            .with_filter(filter)
            .boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt);
    #[cfg(feature = "otel")]
    if traces {
        let (layer, guard) = mcp_runtime::otel::layer()?;
        registry.with(layer).init();
        return Ok(guard);
    }
    let _ = traces;
    registry.init();
    Ok(mcp_runtime::otel::Guard::default())
}

async fn run(args: Args, metrics_listener: Option<std::net::TcpListener>) -> anyhow::Result<()> {
    if metrics_listener.is_some() {
        // On before the first request, so that every one is counted.
        mcp_runtime_core::metrics::enable();
    }
    // Install the handlers before any socket exists, so a SIGTERM that arrives as soon as the
    // sockets appear still shuts down cleanly and removes them.
    let stop_signal = signal()?;
    // SIGHUP reloads the catalog (installed now: its default action would end the process).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let catalog = CatalogConfig::load(&args.catalog)?;
    let config = RuntimeConfig {
        max_message_bytes: args.max_message_bytes,
        upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
        features: features(),
        session_idle_ttl: Duration::from_secs(args.session_idle_ttl_s.max(1)),
        max_sessions_per_subject: args.max_sessions_per_subject.max(1),
        quotas: QuotaConfig {
            max_streams_per_subject: args.max_streams_per_subject,
            max_calls_per_subject: args.max_calls_per_subject,
            max_bytes_per_subject: args.max_bytes_per_subject,
            max_bytes_in_flight: args.max_bytes_in_flight,
        },
        contract_version: contract_version(),
        state: StateConfig {
            url: args.state_url.clone().filter(|u| !u.is_empty()),
            command_timeout: Duration::from_millis(args.state_timeout_ms.max(1)),
            retention: Retention {
                max_events: args.event_retention.max(1),
                max_age: Duration::from_secs(args.event_retention_s.max(1)),
            },
        },
    };
    let policy = match (&args.public_listen, &args.core_uds) {
        (Some(_), Some(socket)) => Some(Arc::new(Policy::new(PolicyConfig {
            socket: socket.clone(),
            transport: if args.core_transport == "http" {
                CoreTransport::Http
            } else {
                CoreTransport::Grpc
            },
            connect_timeout: Duration::from_millis(args.core_timeout_ms.clamp(1, 250)),
            request_timeout: Duration::from_millis(args.core_timeout_ms.max(1)),
            cache: CacheLimits {
                max_entries: args.auth_cache_max_entries,
                max_age: Duration::from_millis(args.auth_cache_max_age_ms),
            },
            denials: DenialLimits {
                ttl: Duration::from_millis(args.auth_deny_cache_ttl_ms),
                max_entries: args.auth_deny_cache_max_entries,
            },
            resolves: ResolveLimits {
                per_client: args.core_max_resolves_per_client,
                total: args.core_max_resolves,
            },
            watcher: format!("mcp-runtime pid {}", std::process::id()),
        })?)),
        _ => None,
    };
    let mut runtime = Runtime::start(&catalog, config).await?;
    if let Some(p) = &policy {
        runtime = runtime.with_hooks(Arc::clone(p) as Arc<dyn mcp_runtime_core::Hooks>);
    }
    let mut server = Server::new(Arc::new(runtime));
    {
        let (runtime, path) = (Arc::downgrade(server.runtime()), args.catalog.clone());
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let Some(runtime) = runtime.upgrade() else {
                    return;
                };
                reload(&runtime, &path).await;
            }
        });
    }

    let header_timeout = Duration::from_millis(args.header_read_timeout_ms.max(1));
    if !args.allow_uid.is_empty() {
        tracing::info!(uids = ?args.allow_uid, "only these peer uids may connect");
    }
    let admission =
        |name| Admission::new(name, &args.allow_uid, args.max_connections, header_timeout);
    let mut socket_files = Vec::new();
    if let Some(path) = &args.http_uds {
        let bound = socket::bind(path, args.socket_mode)?;
        socket_files.push(bound.guard);
        server.serve_http(bound.listener, admission("http"));
        tracing::info!(path = %path.display(), "HTTP/JSON adapter listening");
    }
    #[cfg(feature = "grpc-uds")]
    if let Some(path) = &args.grpc_uds {
        let bound = socket::bind(path, args.socket_mode)?;
        socket_files.push(bound.guard);
        args.grpc_settings.apply_codec_settings();
        server.serve_grpc(
            bound.listener,
            admission("grpc"),
            args.grpc_settings.settings(),
        );
        tracing::info!(path = %path.display(), "gRPC adapter listening");
    }
    if let (Some(addr), Some(policy)) = (args.public_listen, policy) {
        let listener = socket::bind_tcp(addr)?;
        let local = listener.local_addr()?;
        let allow = AllowLists::new(
            &or_default(args.allowed_hosts, || {
                DEFAULT_ALLOWED_HOSTS
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect()
            }),
            &or_default(args.allowed_origins, default_allowed_origins),
        );
        let public_timeout = Duration::from_millis(args.public_header_read_timeout_ms.max(1));
        server.serve_public(
            listener,
            Admission::new("public", &[], args.max_connections, public_timeout),
            PublicEndpoint {
                policy,
                allow,
                max_header_bytes: args.max_header_bytes,
                sse_keep_alive: (args.public_sse_keep_alive_ms > 0)
                    .then(|| Duration::from_millis(args.public_sse_keep_alive_ms)),
            },
        );
        tracing::info!(address = %local, core = ?args.core_uds, transport = %args.core_transport, "public endpoint listening (edge mode)");
    }
    if let Some(listener) = metrics_listener {
        let local = listener.local_addr()?;
        server.serve_metrics(tokio::net::TcpListener::from_std(listener)?);
        tracing::info!(address = %local, "metrics listening (/metrics, /health, /ready)");
    }
    tracing::info!(features = ?features(), state = server.runtime().health().state.kind, "mcp-runtime ready");

    let grace = Duration::from_millis(args.shutdown_grace_ms);
    // From the signal until exit, the sockets keep listening and close each new connection
    // at once: the paths stay owned while the drain runs (`socket` module doc).
    // Before that, for the drain period, the runtime reports not ready (`/ready` 503, gRPC
    // health NOT_SERVING) and serves as before, so a load balancer stops sending first.
    let runtime = Arc::clone(server.runtime());
    let drain = Duration::from_millis(args.drain_ms);
    let stop = async {
        stop_signal.await;
        runtime.set_not_ready();
        if drain.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tracing::info!(
                drain_ms = args.drain_ms,
                "shutting down: not ready; serving for the drain period"
            );
            tokio::time::sleep(drain).await;
        }
        for file in &mut socket_files {
            file.close_new_connections();
        }
    };
    server.run_until(stop, grace).await?;
    drop(socket_files);
    tracing::info!("stopped");
    Ok(())
}

/// Reloads the catalog file at `path` (SIGHUP) and logs the outcome in one line: what changed,
/// or why the new catalog was refused (the old one is still served then).
async fn reload(runtime: &Runtime, path: &std::path::Path) {
    tracing::info!(path = %path.display(), "SIGHUP: reloading the catalog");
    let result = match CatalogConfig::load(path) {
        Ok(config) => runtime.reload(&config).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(Some(change)) => tracing::info!(
            version = change.version,
            added = ?change.upstreams_added,
            removed = ?change.upstreams_removed,
            changed = ?change.upstreams_changed,
            lists = ?change.lists.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "catalog reloaded"
        ),
        Ok(None) => tracing::info!("catalog reloaded: nothing changed"),
        Err(e) => tracing::error!(
            path = %path.display(),
            error = %e,
            "catalog reload refused; the old catalog is kept"
        ),
    }
}

/// `list` without empty entries, or `default()` when that leaves nothing.
fn or_default(list: Vec<String>, default: impl FnOnce() -> Vec<String>) -> Vec<String> {
    let list: Vec<String> = list.into_iter().filter(|e| !e.trim().is_empty()).collect();
    if list.is_empty() { default() } else { list }
}

/// Installs SIGTERM and SIGINT handlers now; the future completes on either signal.
///
/// # Errors
///
/// The I/O error if a handler cannot be installed.
fn signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
