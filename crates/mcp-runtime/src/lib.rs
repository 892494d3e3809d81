//! `mcp-runtime`: the MCP runtime sidecar as a library.
//!
//! Serves one transport-agnostic core ([`mcp_runtime_core::Runtime`]) over an HTTP/JSON Unix
//! socket (always) and a gRPC Unix socket (only when built with the `grpc-uds` feature), and,
//! in edge mode, as the public MCP endpoint on TCP with callers resolved by the Python core. The
//! binary (`main.rs`) only wires the command line, the sockets and the signals to this library;
//! the integration tests serve the same functions in their own process.
//!
//! # Layout
//!
//! - [`server`]: [`serve_http`] and `serve_grpc` (one socket each until a shutdown future
//!   completes), and [`Server`]: the adapters side by side, the idle-session reaper, and the
//!   drain within the grace period.
//! - [`socket`]: safe Unix socket binding, ownership of the path (owned while the runtime
//!   drains, only the file this process bound removed at exit).
//! - [`listener`]: admission of connections (peer uid, connection cap, first-byte timeout).
//! - [`policy`]: the Core SPI client of edge mode (ResolveCaller with its caller cache,
//!   InvokeHook as the core's [`mcp_runtime_core::Hooks`], the WatchPolicy task) over gRPC or
//!   HTTP/JSON on the core's Unix socket.
//! - [`host_origin`]: the public endpoint's `Host`/`Origin` allow-lists.
//! - [`otel`]: the request spans, the Core SPI CLIENT spans and their OTLP export (feature
//!   `otel`).
//! - [`log_json`]: `--log-format json`, with the log keys of every process of the project.
//! - [`metrics`]: the metrics listener (`--metrics-listen`): Prometheus text on `/metrics`,
//!   `/health` and `/ready` on a TCP port.
//! - `transport/public.rs`: the public endpoint of edge mode (TCP, `--public-listen`).
//! - `transport/http.rs`: the HTTP/JSON adapter (axum).
//! - `transport/grpc.rs`: the gRPC adapter (tonic), with `grpc-uds` only.
//! - `main.rs`: the `mcp-runtime` binary: command line, logging, binding, signals.
//!
//! Sockets are bound by the caller and handed to the adapters (listeners are injected from the
//! top); `#[cfg(feature = "grpc-uds")]` appears only at this edge ([`server`], `transport`).

pub mod host_origin;
pub mod listener;
pub mod log_json;
pub mod metrics;
pub mod otel;
pub mod policy;
pub mod server;
pub mod socket;
mod transport;

pub use listener::Admission;
#[cfg(feature = "grpc-uds")]
pub use server::{GrpcSettings, serve_grpc};
pub use server::{PublicEndpoint, ServeError, Server, serve_http, serve_public};
pub use transport::http::{AuthHeaderError, decode_auth_context};

/// Features compiled in, as health reports them.
#[must_use]
pub fn features() -> Vec<String> {
    let mut f = Vec::new();
    if cfg!(feature = "grpc-uds") {
        f.push("grpc-uds".to_owned());
    }
    f
}
