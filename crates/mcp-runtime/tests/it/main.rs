//! The in-process suite: the runtime served through the library's [`mcp_runtime::Server`] on
//! real Unix sockets in a temp dir, the fixture upstream embedded on a loopback port, all in
//! this one test binary (helpers compiled once). What needs a process of its own (signals,
//! exit codes, peer credentials, socket files) is in `tests/process`.
//!
//! # Layout
//!
//! - `support` (`tests/support/`, shared with `tests/process`): the fixture upstream, the HTTP
//!   and gRPC clients, one request and its answer, SSE reading.
//! - `sidecar`: the runtime served in this process, and its drain.
//! - `cases`: the shared boundary vectors (`contract/vectors/boundary.json`).
//! - `http_semantics`, `parity` (with `grpc-uds`), `visibility`, `bad_input`: what the
//!   boundary answers.
//! - `upstream`, `faults`: timeouts, cancellation, limits, upstreams that die or hang.
//! - `stdio`: a stdio upstream (server-everything as the runtime's child process).
//! - `live_catalog`: upstream `list_changed` refreshing the catalog and reaching the sessions
//!   that can see the change.
//! - `completion`: `completion/complete` routed by its reference.
//! - `polling`: an upstream that closes a call's stream to be polled (SEP-1699), resumed.
//! - `era2026`: MCP 2026-07-28 (no session) beside 2025-11-25 on the same endpoint.
//! - `listen`: `subscriptions/listen` of MCP 2026-07-28 (list changes and resource updates on
//!   the stream a client without a session opens).
//! - `server_requests`: sampling and elicitation asked by an upstream during a call, relayed
//!   to the caller and answered back.
//! - `credentials`: upstreams that need a header or a bearer token.
//! - `https_upstream`: an `https://` upstream and its `ca_file`.
//! - `admission`: connection cap and header read timeout.
//! - `limits`: per-subject limits (open sessions).
//! - `health`: health while draining, server reflection.
//! - `edge`: the public endpoint of edge mode without its policy core (checks before the
//!   core, fail closed).

#[path = "../support/mod.rs"]
pub mod support;

mod sidecar;

mod admission;
mod bad_input;
mod cases;
mod completion;
mod credentials;
mod edge;
mod era2026;
mod faults;
mod health;
mod http_semantics;
mod https_upstream;
mod limits;
mod listen;
mod live_catalog;
#[cfg(feature = "grpc-uds")]
mod parity;
mod polling;
mod server_requests;
mod sse_upstream;
mod stdio;
mod subscribe;
mod upstream;
mod visibility;
