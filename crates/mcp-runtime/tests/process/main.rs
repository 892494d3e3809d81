//! The process suite: what needs the `mcp-runtime` binary as a process of its own: signals
//! and exit codes (SIGTERM drain, grace period), socket files, peer credentials (`setpriv`),
//! startup errors, the RSS of the runtime process, and the ignored soak run
//! (`make soak-runtime`). The fixture upstream is embedded in this process. Everything else
//! runs in process in `tests/it`.
//!
//! # Layout
//!
//! - `support` (`tests/support/`, shared with `tests/it`): the fixture upstream, the clients.
//! - `runtime_proc`: the binary as a child process; RSS from `/proc`.
//! - `sockets`: socket files (mode, stale, live, not a socket, path length) and startup errors.
//! - `peer_creds`: `--allow-uid` against clients of other uids (`setpriv`).
//! - `shutdown`: SIGTERM drain and the grace period.
//! - `grpc_settings`: the gRPC adapter's `--grpc-*` server settings.
//! - `observability`: the metrics listener scraped, `/ready` apart from `/health`, health
//!   degraded with an upstream killed, readiness flipped before the listeners close, the
//!   JSON request log line, the metrics port in use.
//! - `reload`: SIGHUP reloads the catalog: upstreams added and removed, what stays kept, a bad
//!   catalog refused.
//! - `stdio_cap`: a stdio upstream writing an endless line is cut, logged and started again.
//! - `sessions`: the runtime's RSS with 1,000 open sessions.
//! - `replicas`: three runtimes sharing one real `redis-server` (`--state-url`): sessions,
//!   cancellation, limits, isolation, resumption after a SIGKILL (over HTTP/JSON and gRPC),
//!   Redis stopped and back (both health surfaces), and the ignored Redis memory per session
//!   (`make redis-memory`); `replicas/notify.rs`: notifications for a GET stream another
//!   replica holds, its resumption, and the session record's capabilities and log level.
//! - `soak`: the ignored soak run of `make soak-runtime`.

#[path = "../support/mod.rs"]
pub mod support;

mod runtime_proc;

#[cfg(feature = "grpc-uds")]
mod grpc_settings;
mod observability;
mod peer_creds;
mod reload;
mod replicas;
mod sessions;
mod shutdown;
mod soak;
mod sockets;
mod stdio_cap;
