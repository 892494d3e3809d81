//! The transport-agnostic core of the MCP runtime sidecar.
//!
//! It takes one typed [`Request`] (HTTP method, MCP headers, virtual-server scope, the caller's
//! [`AuthContext`], the raw JSON-RPC body) and returns one typed [`Outcome`] (status, headers,
//! and a whole body or a stream of SSE events). It never sees HTTP or protobuf: the adapters in
//! the `mcp-runtime` crate translate their wire forms into these types and back, which is what
//! keeps the HTTP/JSON and gRPC boundaries semantically identical.
//!
//! # Layout
//!
//! - [`request`]: the request and outcome types, SSE framing.
//! - [`auth`]: the AuthContext and the visibility rule.
//! - [`jsonrpc`]: framing of incoming messages, error codes and bodies.
//! - `session`: the session table (ids, ownership, in-flight calls).
//! - [`catalog`]: the catalog file and the discovered tools, resources and prompts.
//! - `upstream`: the upstream pool (one shared rmcp client session per upstream).
//! - [`runtime`]: [`Runtime::handle`], the MCP streamable-HTTP semantics.

/// Version `MAJOR.MINOR` of the boundary contract (`proto/mcp/runtime/v1` and
/// `docs/http-boundary.md`), reported by both health endpoints. The major equals the proto
/// package suffix (`v1`); the minor grows with each additive change.
pub const CONTRACT_VERSION: &str = "1.0";

pub mod auth;
pub mod catalog;
pub mod jsonrpc;
pub mod request;
pub mod runtime;
mod session;
mod upstream;

pub use auth::{AuthContext, TeamScope, Visibility};
pub use catalog::{CatalogConfig, CatalogError};
pub use request::{Body, McpHeaders, Method, Outcome, Request, ResponseHead, SseEvent, Transport};
pub use runtime::{Health, Runtime, RuntimeConfig};
pub use upstream::UpstreamError;
