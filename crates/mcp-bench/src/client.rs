//! Rust clients of the runtime, one per adapter, and the load driver that runs them.
//!
//! A [`Worker`] owns one connection and sends one request at a time; concurrency `N` is `N`
//! workers, each on its own tokio task. Every response must be HTTP 200 with a JSON-RPC
//! `result` whose `id` matches the request; anything else is counted as an error.

pub mod grpc;
mod h1;
pub mod http;
pub mod mcp;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::stats::Latencies;

/// MCP protocol version the clients announce.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// `Accept` header value of every POST.
pub const ACCEPT: &str = "application/json, text/event-stream";

/// Subject of the bench's AuthContext.
pub const SUBJECT_EMAIL: &str = "bench@example.com";

/// A request a worker can send repeatedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// JSON-RPC `ping`: answered by the runtime without touching the catalog or an upstream.
    Ping,
    /// JSON-RPC `tools/list`: answered from the runtime's catalog, filtered by visibility.
    ToolsList,
    /// `tools/call` of the fixture's `echo` tool with a `text` argument of this many bytes (the
    /// result carries the same text back): a round trip to the upstream.
    Echo(usize),
    /// Session open and close: `initialize`, `notifications/initialized`, then `DELETE` of
    /// the new session, counted as one request (end to end only).
    Session,
}

impl Workload {
    /// The JSON-RPC method name.
    #[must_use]
    pub fn method(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::ToolsList => "tools/list",
            Self::Echo(_) => "tools/call",
            Self::Session => "initialize",
        }
    }

    /// The workload's name in reports: `ping`, `tools/list`, `tools/call echo` (the size is
    /// the row's payload) or `session open/close`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Echo(_) => "tools/call echo",
            Self::Session => "session open/close",
            w => w.method(),
        }
    }

    /// Parses a workload as given on the command line: `ping`, `tools/list`, `session`,
    /// `echo:BYTES` (suffixes `k`/`K` = KiB, `m`/`M` = MiB allowed, e.g. `echo:10k`).
    ///
    /// # Errors
    ///
    /// A message naming the accepted values.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "ping" => Ok(Self::Ping),
            "tools/list" | "tools-list" => Ok(Self::ToolsList),
            "session" => Ok(Self::Session),
            _ => {
                let size = s.strip_prefix("echo:").ok_or_else(|| {
                    format!(
                        "unknown workload `{s}` (expected ping, tools/list, session or echo:BYTES)"
                    )
                })?;
                let (digits, unit) = match size.char_indices().last() {
                    Some((i, 'k' | 'K')) => (&size[..i], 1024),
                    Some((i, 'm' | 'M')) => (&size[..i], 1024 * 1024),
                    _ => (size, 1),
                };
                let n: usize = digits
                    .parse()
                    .map_err(|_| format!("bad echo size `{size}` in `{s}`"))?;
                Ok(Self::Echo(n * unit))
            }
        }
    }

    /// The JSON-RPC request body with id `id`.
    #[must_use]
    pub fn body(self, id: u64) -> String {
        match self {
            Self::Echo(n) => {
                let mut b = String::with_capacity(n + 128);
                b.push_str(r#"{"jsonrpc":"2.0","id":"#);
                b.push_str(&id.to_string());
                b.push_str(
                    r#","method":"tools/call","params":{"name":"echo","arguments":{"text":""#,
                );
                b.extend(std::iter::repeat_n('x', n));
                b.push_str(r#""}}}"#);
                b
            }
            Self::Session => initialize_body(id),
            _ => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"{}"}}"#,
                self.method()
            ),
        }
    }
}

/// The `initialize` request with id `id` (protocol [`PROTOCOL_VERSION`], no capabilities).
#[must_use]
pub fn initialize_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"mcp-bench","version":"{}"}}}}}}"#,
        env!("CARGO_PKG_VERSION")
    )
}

/// Why one call did not count as a success.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection or the RPC failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The HTTP status (or the `http_status` of the gRPC response head) was not 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body was not a JSON-RPC response with a `result` for this request.
    #[error("bad JSON-RPC response: {0}")]
    Response(String),
}

/// Checks that `body` is a JSON-RPC response with a `result` and id `id`.
///
/// # Errors
///
/// [`CallError::Response`] otherwise, quoting the JSON-RPC error when there is one.
pub fn check_jsonrpc(body: &[u8], id: u64) -> Result<(), CallError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        id: Option<u64>,
        #[serde(borrow)]
        result: Option<&'a RawValue>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    let wire: Wire<'_> = serde_json::from_slice(body)
        .map_err(|e| CallError::Response(format!("not JSON-RPC JSON: {e}")))?;
    if let Some(err) = wire.error {
        return Err(CallError::Response(format!("error {}", err.get())));
    }
    let Some(result) = wire.result else {
        return Err(CallError::Response("no result".to_owned()));
    };
    // A tool result flagged as an error is not a success (cheap check on the raw text: the
    // flag is one of the first keys, the echoed text cannot contain it).
    if result.get().contains(r#""isError":true"#) {
        return Err(CallError::Response(
            "tool result with isError: true".to_owned(),
        ));
    }
    if wire.id != Some(id) {
        return Err(CallError::Response(format!(
            "id {:?}, expected {id}",
            wire.id
        )));
    }
    Ok(())
}

/// One connection to the runtime over one adapter.
#[derive(Debug)]
pub enum Worker {
    /// HTTP/1.1 over the HTTP/JSON socket.
    Http(http::HttpWorker),
    /// gRPC `Invoke` over the gRPC socket.
    Grpc(grpc::GrpcWorker),
    /// MCP streamable HTTP to the gateway over TCP, with its own session.
    Mcp(mcp::McpWorker),
}

impl Worker {
    /// Sends one request and checks its response; returns the response body length.
    ///
    /// # Errors
    ///
    /// [`CallError`] when the call failed or its response was not a JSON-RPC result.
    pub async fn call(&mut self, workload: Workload) -> Result<usize, CallError> {
        match self {
            Self::Mcp(w) => w.call(workload).await,
            _ if workload == Workload::Session => Err(CallError::Response(
                "the session workload is measured end to end only".to_owned(),
            )),
            Self::Http(w) => w.call(workload).await,
            Self::Grpc(w) => w.call(workload).await,
        }
    }
}

/// When a measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many requests in total (over all workers).
    Requests(u64),
    /// After this much time; requests in flight then still complete and count.
    Duration(Duration),
}

/// Hands out request tickets until the phase is over. Shared by the workers of one phase.
#[derive(Debug)]
pub struct Tickets {
    stop: Stop,
    deadline: Instant,
    remaining: AtomicU64,
}

impl Tickets {
    /// Tickets for a phase starting now.
    #[must_use]
    pub fn new(stop: Stop) -> Self {
        let (deadline, remaining) = match stop {
            Stop::Requests(n) => (Instant::now(), n),
            Stop::Duration(d) => (Instant::now() + d, u64::MAX),
        };
        Self {
            stop,
            deadline,
            remaining: AtomicU64::new(remaining),
        }
    }

    /// Whether another request may be sent.
    pub fn take(&self) -> bool {
        match self.stop {
            Stop::Requests(_) => self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
            Stop::Duration(_) => Instant::now() < self.deadline,
        }
    }
}

/// What one measured phase produced.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Latencies of the successful calls.
    pub latencies: Latencies,
    /// Calls sent (successes plus errors).
    pub requests: u64,
    /// Calls that failed or were answered with anything but a JSON-RPC result.
    pub errors: u64,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// Body length of the last successful response.
    pub response_bytes: usize,
    /// The first error, for the progress line.
    pub first_error: Option<String>,
}

impl LoadResult {
    /// Adds a worker's results (the elapsed time is the phase's, set by the driver).
    pub fn merge(&mut self, other: &Self) {
        self.latencies.merge(&other.latencies);
        self.requests += other.requests;
        self.errors += other.errors;
        if other.response_bytes > 0 {
            self.response_bytes = other.response_bytes;
        }
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// Runs `workers` concurrently, each on its own task, until `stop`; returns the merged result
/// and the workers (so their connections serve the next phase).
///
/// # Panics
///
/// When a worker task panics.
pub async fn drive(
    workers: Vec<Worker>,
    workload: Workload,
    stop: Stop,
) -> (LoadResult, Vec<Worker>) {
    let tickets = Arc::new(Tickets::new(stop));
    let start = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let tickets = Arc::clone(&tickets);
            tokio::spawn(async move {
                let mut r = LoadResult::default();
                while tickets.take() {
                    let t0 = Instant::now();
                    let outcome = w.call(workload).await;
                    let dt = t0.elapsed();
                    r.requests += 1;
                    match outcome {
                        Ok(n) => {
                            r.latencies.record(dt);
                            r.response_bytes = n;
                        }
                        Err(e) => {
                            r.errors += 1;
                            if r.first_error.is_none() {
                                r.first_error = Some(e.to_string());
                            }
                        }
                    }
                }
                (r, w)
            })
        })
        .collect();
    let mut total = LoadResult::default();
    let mut back = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (r, w) = t.await.expect("a load worker panicked");
        total.merge(&r);
        back.push(w);
    }
    total.elapsed = start.elapsed();
    (total, back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_jsonrpc_results() {
        assert!(check_jsonrpc(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#, 7).is_ok());
        assert!(check_jsonrpc(br#"{"jsonrpc":"2.0","id":8,"result":{}}"#, 7).is_err());
        assert!(check_jsonrpc(br#"{"jsonrpc":"2.0","id":7,"error":{"code":-1}}"#, 7).is_err());
        assert!(check_jsonrpc(b"nope", 7).is_err());
    }

    #[test]
    fn request_tickets_run_out() {
        let t = Tickets::new(Stop::Requests(2));
        assert!(t.take());
        assert!(t.take());
        assert!(!t.take());
    }

    #[test]
    fn workload_bodies() {
        assert_eq!(
            Workload::Ping.body(3),
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#
        );
        assert_eq!(Workload::parse("tools/list"), Ok(Workload::ToolsList));
        assert!(Workload::parse("x").is_err());
        assert_eq!(Workload::parse("echo:10k"), Ok(Workload::Echo(10240)));
        assert_eq!(Workload::parse("echo:100"), Ok(Workload::Echo(100)));
        let body = Workload::Echo(3).body(9);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["params"]["arguments"]["text"], "xxx");
        assert_eq!(v["id"], 9);
    }
}
