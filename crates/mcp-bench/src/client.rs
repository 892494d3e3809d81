//! Rust clients of the runtime, one per adapter, and the load driver that runs them.
//!
//! A [`Worker`] owns one connection and sends one request at a time; concurrency `N` is `N`
//! workers, each on its own tokio task. Every response must be HTTP 200 with a JSON-RPC
//! `result` whose `id` matches the request; anything else is counted as an error.

pub mod abuse;
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

/// Steps of the `progress` workload: notifications per call.
pub const PROGRESS_STEPS: u32 = 10;

/// Pause after each progress notification in the fixture, in milliseconds.
pub const PROGRESS_INTERVAL_MS: u32 = 5;

/// Which virtual server a `tools/list` goes to (the bench's catalog defines both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ToolSet {
    /// `tools10`: the fixture's six fixed tools and four generated ones.
    Ten,
    /// `tools500`: 500 generated tools of a second fixture process (prefix `big_`).
    FiveHundred,
}

/// A request a worker can send repeatedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// JSON-RPC `ping`: answered by the runtime without touching the catalog or an upstream.
    Ping,
    /// JSON-RPC `tools/list` on a virtual server of 10 or 500 tools: answered from the
    /// runtime's catalog, filtered by visibility.
    ToolsList(ToolSet),
    /// `tools/call` of the fixture's `echo` tool with a `text` argument of this many bytes (the
    /// result carries the same text back): a round trip to the upstream.
    Echo(usize),
    /// `tools/call` of `@modelcontextprotocol/server-everything`'s `echo` tool (catalog prefix
    /// `everything_`) with a `message` of this many bytes: the third-party upstream.
    EverythingEcho(usize),
    /// `tools/call progress` with a progress token: [`PROGRESS_STEPS`] notifications
    /// [`PROGRESS_INTERVAL_MS`] apart, each stamped with its send time by the fixture, then the
    /// result; the time from each send to its arrival at the client is recorded (end to end,
    /// straight to the upstream, and over HTTP/JSON in the state layer).
    Progress,
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
            Self::ToolsList(_) => "tools/list",
            Self::Echo(_) | Self::EverythingEcho(_) | Self::Progress => "tools/call",
            Self::Session => "initialize",
        }
    }

    /// The tool a `tools/call` workload calls (its `Mcp-Name` in MCP 2026-07-28).
    #[must_use]
    pub fn tool(self) -> Option<&'static str> {
        match self {
            Self::Echo(_) => Some("echo"),
            Self::EverythingEcho(_) => Some("everything_echo"),
            Self::Progress => Some("progress"),
            _ => None,
        }
    }

    /// Whether a client of MCP 2026-07-28 (no session, `_meta` in the body) can send it:
    /// `ping`, `initialize` and session open/close do not exist there, and `progress` carries
    /// a `_meta` of its own.
    #[must_use]
    pub fn sessionless(self) -> bool {
        matches!(
            self,
            Self::Echo(_) | Self::EverythingEcho(_) | Self::ToolsList(_)
        )
    }

    /// The workload's name in reports: `ping`, `tools/list (10 tools)`, `tools/call echo`
    /// (the size is the row's payload), `tools/call echo (server-everything)`,
    /// `tools/call progress` or `session open/close`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ToolsList(ToolSet::Ten) => "tools/list (10 tools)",
            Self::ToolsList(ToolSet::FiveHundred) => "tools/list (500 tools)",
            Self::Echo(_) => "tools/call echo",
            Self::EverythingEcho(_) => "tools/call echo (server-everything)",
            Self::Progress => "tools/call progress",
            Self::Session => "session open/close",
            Self::Ping => "ping",
        }
    }

    /// The virtual server the request goes to (`x-contextforge-server-id`, the envelope's
    /// `server_id`, or `/servers/{id}/mcp` through the gateway); `None` for the whole catalog.
    #[must_use]
    pub fn scope(self) -> Option<&'static str> {
        match self {
            Self::ToolsList(ToolSet::Ten) => Some("tools10"),
            Self::ToolsList(ToolSet::FiveHundred) => Some("tools500"),
            _ => None,
        }
    }

    /// Whether the workload needs the third-party upstream.
    #[must_use]
    pub fn uses_everything(self) -> bool {
        matches!(self, Self::EverythingEcho(_))
    }

    /// Parses a workload as given on the command line: `ping`, `tools/list` (10 tools),
    /// `tools/list:10`, `tools/list:500`, `progress`, `session`, `echo:BYTES` and
    /// `everything:BYTES` (suffixes `k`/`K` = KiB, `m`/`M` = MiB allowed, e.g. `echo:10k`).
    ///
    /// # Errors
    ///
    /// A message naming the accepted values.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "ping" => Ok(Self::Ping),
            "tools/list" | "tools-list" | "tools/list:10" => Ok(Self::ToolsList(ToolSet::Ten)),
            "tools/list:500" => Ok(Self::ToolsList(ToolSet::FiveHundred)),
            "progress" => Ok(Self::Progress),
            "session" => Ok(Self::Session),
            _ => {
                let (size, make): (&str, fn(usize) -> Self) = if let Some(size) =
                    s.strip_prefix("echo:")
                {
                    (size, Self::Echo)
                } else if let Some(size) = s.strip_prefix("everything:") {
                    (size, Self::EverythingEcho)
                } else {
                    return Err(format!(
                        "unknown workload `{s}` (expected ping, tools/list[:10|:500], progress, session, echo:BYTES or everything:BYTES)"
                    ));
                };
                let (digits, unit) = match size.char_indices().last() {
                    Some((i, 'k' | 'K')) => (&size[..i], 1024),
                    Some((i, 'm' | 'M')) => (&size[..i], 1024 * 1024),
                    _ => (size, 1),
                };
                let n: usize = digits
                    .parse()
                    .map_err(|_| format!("bad size `{size}` in `{s}`"))?;
                Ok(make(n * unit))
            }
        }
    }

    /// The JSON-RPC request body with id `id`.
    #[must_use]
    pub fn body(self, id: u64) -> String {
        let call = |tool: &str, key: &str, n: usize| {
            let mut b = String::with_capacity(n + 128);
            b.push_str(r#"{"jsonrpc":"2.0","id":"#);
            b.push_str(&id.to_string());
            b.push_str(r#","method":"tools/call","params":{"name":""#);
            b.push_str(tool);
            b.push_str(r#"","arguments":{""#);
            b.push_str(key);
            b.push_str(r#"":""#);
            b.extend(std::iter::repeat_n('x', n));
            b.push_str(r#""}}}"#);
            b
        };
        match self {
            Self::Echo(n) => call("echo", "text", n),
            Self::EverythingEcho(n) => call("everything_echo", "message", n),
            Self::Progress => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"progress","arguments":{{"steps":{PROGRESS_STEPS},"interval_ms":{PROGRESS_INTERVAL_MS},"stamp":true}},"_meta":{{"progressToken":{id}}}}}}}"#
            ),
            Self::Session => initialize_body(id),
            _ => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"{}"}}"#,
                self.method()
            ),
        }
    }
}

/// A request id unique in this process: the runtime-layer workers of a row share one session,
/// and a session refuses an id that is already in flight (ids start above the ids of
/// `initialize`).
pub fn next_request_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What one successful call returned.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// Response body length, in bytes.
    pub bytes: usize,
    /// For each stamped progress notification, the time from its send in the upstream to its
    /// arrival here (wall clock, same machine).
    pub notification_latencies: Vec<Duration>,
}

impl From<usize> for Reply {
    fn from(bytes: usize) -> Self {
        Self {
            bytes,
            notification_latencies: Vec::new(),
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
    /// The connection closed before the request was sent (so it was not processed).
    #[error("connection closed before the request was sent: {0}")]
    NotSent(String),
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
    /// HTTP/1.1 over the HTTP/JSON sockets of several replicas, each request to the next.
    HttpRoundRobin(http::RoundRobin),
}

impl Worker {
    /// Sends one request and checks its response.
    ///
    /// # Errors
    ///
    /// [`CallError`] when the call failed or its response was not a JSON-RPC result.
    pub async fn call(&mut self, workload: Workload) -> Result<Reply, CallError> {
        match self {
            Self::Mcp(w) => w.call(workload).await,
            Self::Http(w) if workload == Workload::Progress => w.call_progress().await,
            Self::HttpRoundRobin(w) if workload == Workload::Progress => w.call(workload).await,
            _ if matches!(workload, Workload::Session | Workload::Progress) => {
                Err(CallError::Response(format!(
                    "the {} workload is measured end to end only (progress: also over HTTP/JSON)",
                    workload.name()
                )))
            }
            Self::Http(w) => w.call(workload).await.map(Reply::from),
            Self::Grpc(w) => w.call(workload).await.map(Reply::from),
            Self::HttpRoundRobin(w) => w.call(workload).await,
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
    /// Progress notification delivery latencies (send in the upstream to arrival here).
    pub notifications: Latencies,
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
        self.notifications.merge(&other.notifications);
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
                        Ok(reply) => {
                            r.latencies.record(dt);
                            r.response_bytes = reply.bytes;
                            for d in reply.notification_latencies {
                                r.notifications.record(d);
                            }
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
        assert_eq!(
            Workload::parse("tools/list"),
            Ok(Workload::ToolsList(ToolSet::Ten))
        );
        assert_eq!(
            Workload::parse("tools/list:500"),
            Ok(Workload::ToolsList(ToolSet::FiveHundred))
        );
        assert_eq!(Workload::parse("progress"), Ok(Workload::Progress));
        assert_eq!(
            Workload::parse("everything:1k"),
            Ok(Workload::EverythingEcho(1024))
        );
        let v: serde_json::Value =
            serde_json::from_str(&Workload::EverythingEcho(2).body(4)).unwrap();
        assert_eq!(v["params"]["name"], "everything_echo");
        assert_eq!(v["params"]["arguments"]["message"], "xx");
        let v: serde_json::Value = serde_json::from_str(&Workload::Progress.body(5)).unwrap();
        assert_eq!(v["params"]["_meta"]["progressToken"], 5);
        assert_eq!(v["params"]["arguments"]["stamp"], true);
        assert!(Workload::parse("x").is_err());
        assert_eq!(Workload::parse("echo:10k"), Ok(Workload::Echo(10240)));
        assert_eq!(Workload::parse("echo:100"), Ok(Workload::Echo(100)));
        let body = Workload::Echo(3).body(9);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["params"]["arguments"]["text"], "xxx");
        assert_eq!(v["id"], 9);
    }
}
