//! An upstream MCP server for the tests and benchmarks of the runtime sidecar.
//!
//! The fixture speaks MCP over streamable HTTP (stateful sessions, POST answered as
//! `text/event-stream`) using the official Rust SDK `rmcp`, which also serves MCP
//! 2026-07-28 requests (no session, `_meta` on each request) on the same endpoint. It exposes a small, fixed
//! catalog whose behaviour the tests can predict exactly (echo, payload of a given size,
//! cancellable sleep, progress, tool error), one resource, one resource template and one
//! prompt, plus an optional number of generated tools so benchmarks can measure catalogs
//! of any size.
//!
//! # Layout
//!
//! - [`catalog`]: the tool, resource and prompt definitions (names, descriptions, JSON
//!   input schemas) and the generated `gen_NNNN` tools.
//! - [`conformance`]: the `test_*` tools, `test://` resources and `test_*` prompts the
//!   official MCP conformance suite calls, served only with `--conformance`
//!   ([`SharedState::with_conformance`]).
//! - [`reconnect`]: `test_reconnection` (conformance catalog), served in front of rmcp at the
//!   HTTP layer: its stream closes before the answer, which the client gets by resuming with
//!   `Last-Event-ID`.
//! - [`mrtr`]: the conformance catalog's multi-round-trip tools and prompt (MCP
//!   2026-07-28 `input_required` results with an integrity-protected `requestState`).
//! - [`server`]: [`FixtureServer`], the `rmcp` `ServerHandler` that implements them, and
//!   [`SharedState`], the state shared by every session (the counter of `sleep` and
//!   `progress` calls in flight).
//! - `session`: a wrapper around rmcp's in-memory session manager that delivers
//!   `notifications/message` sent while handling a request on that request's SSE
//!   stream, where rmcp alone would put it on the standalone GET stream.
//! - [`http`]: [`serve`], which mounts the service at `/mcp` in an axum router on an
//!   injected listener and drains it when the shutdown future completes.
//! - `main.rs`: the `mcp-fixture-server` binary (CLI, logging, signals, binding).
//!
//! Embedding it in another process:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = mcp_fixture_server::mcp_url(listener.local_addr()?);
//! tokio::spawn(mcp_fixture_server::serve(listener, 10, std::future::pending::<()>()));
//! # let _ = url; Ok(()) }
//! ```

pub mod catalog;
pub mod conformance;
pub mod http;
pub mod mrtr;
pub mod reconnect;
pub mod server;
mod session;

pub use http::{MCP_PATH, mcp_url, serve, serve_state};
pub use server::{FixtureServer, SharedState, TraceparentLog};
