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
//! - [`auth`]: the AuthContext and the visibility rule (no wire form: each adapter decodes its
//!   own).
//! - [`jsonrpc`]: framing of incoming messages, error codes and bodies.
//! - `error`: [`RequestError`], every fault of a request with its status, JSON-RPC code and
//!   message, and its one conversion into an [`Outcome`].
//! - `session`: the session table (ids, ownership, in-flight calls); with Redis, this
//!   replica's cache of the shared session records.
//! - [`state`]: the state store (in memory, or Redis shared by several replicas): session
//!   records, the per-subject limit, SSE event history and resumption, cancellation across
//!   replicas.
//! - [`hooks`]: the [`Hooks`] an outside policy registers (pre-invoke, post-invoke,
//!   post-fetch), implemented by the sidecar; the core calls them only where registered.
//! - [`quota`]: what one subject may hold (streams, calls, bytes in flight) and the process's
//!   budget of bytes in flight, as permits released on drop.
//! - [`catalog`]: the catalog file, the discovered tools, resources, templates and prompts,
//!   and the routing of a call to its upstream.
//! - `upstream`: the upstream pool (one shared rmcp client session per upstream).
//! - [`runtime`]: [`Runtime`], its settings and state, health, draining and shutdown.
//! - `dispatch`: [`Runtime::handle`]'s MCP streamable-HTTP semantics, from the checks every
//!   request passes to the method it names.
//! - `forward`: the life of one upstream call (ids, progress tokens, deadline, cancellation,
//!   relay as JSON or SSE).
//! - `server_requests`: requests an upstream sends during a call (sampling, elicitation,
//!   roots) relayed to the client on that call's stream, and the client's answer taken back.
//!
//! # Tasks
//!
//! The core spawns the rest of an upstream call whose answer became an SSE stream and the
//! `notifications/cancelled` of a call that ended unanswered, all on one
//! `tokio_util::task::TaskTracker` that [`Runtime::cancel_calls`] waits for. It runs no timer:
//! the sidecar's `Server` (crate `mcp-runtime`) calls [`Runtime::reap_idle_sessions`]. The one
//! exception is the Redis state store ([`state`]): its heartbeat and subscriber tasks, and the
//! reader of each resumed stream, run on their own and end with the runtime (or the stream).
//!
//! # Dependencies
//!
//! No transport crate (axum, tonic, hyper, prost, http) is a direct dependency: `make
//! core-deps` (`mk/architecture.mk`, part of `make test`) fails when one is.

/// Version `MAJOR.MINOR` of the boundary contract (`proto/mcp/runtime/v1` and
/// `docs/http-boundary.md`), reported by both health endpoints. The major equals the proto
/// package suffix (`v1`); the minor grows with each additive change.
pub const CONTRACT_VERSION: &str = "1.4";

/// Version `MAJOR.MINOR` of the Core SPI (`proto/mcp/core/v1`, the callbacks the runtime makes
/// to the Python core in edge mode; `docs/core-spi.md`). Versioned apart from
/// [`CONTRACT_VERSION`]: the major equals the proto package suffix (`v1`); the minor grows with
/// each additive change, recorded as `contract/images/mcp.core.v1.<minor>.json`.
pub const CORE_SPI_VERSION: &str = "1.0";

pub mod auth;
pub mod catalog;
mod dispatch;
mod era;
mod error;
mod forward;
pub mod hooks;
pub mod jsonrpc;
mod listen;
pub mod live;
pub mod metrics;
pub mod quota;
pub mod request;
pub mod runtime;
mod server_requests;
mod session;
pub mod state;
mod subscribe;
pub mod trace;
mod upstream;

pub use auth::{AuthContext, TeamScope, Visibility};
pub use catalog::{CatalogConfig, CatalogError};
pub use error::RequestError;
pub use hooks::{CallRecord, HookCall, HookDecision, HookError, HookFuture, HookPoint, Hooks};
pub use live::{CatalogChange, CatalogEvent, ChangeCause, ListKind};
pub use request::{
    Body, Events, McpHeaders, Method, Outcome, Request, ResponseHead, SseEvent, Transport,
};
pub use runtime::{Health, Runtime, RuntimeConfig, StartError};
pub use state::{Retention, StateConfig, StoreHealth};
pub use upstream::UpstreamError;
