//! The one typed request the core takes and the one typed outcome it returns.
//!
//! Adapters build a [`Request`] from their wire form (HTTP headers and path, or the protobuf
//! envelope) and encode the [`Outcome`] back; nothing here knows either wire.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::quota::Permit;

use crate::auth::AuthContext;

/// HTTP method of the MCP streamable HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// One JSON-RPC message in the body.
    Post,
    /// Open the standalone SSE stream of a session.
    Get,
    /// End a session.
    Delete,
}

/// Which adapter a request came through; used only for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The HTTP/JSON adapter.
    Http,
    /// The gRPC adapter.
    Grpc,
    /// In-process callers (tests, benchmarks).
    InProcess,
    /// The public endpoint of edge mode (the caller resolved by the policy core).
    Public,
}

impl Transport {
    /// Lower-case name for logs: `http`, `grpc`, `in-process`, `public`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::InProcess => "in-process",
            Self::Public => "public",
        }
    }
}

/// The MCP headers that matter to the runtime. `None` means the header was absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpHeaders {
    /// `Mcp-Session-Id`.
    pub session_id: Option<String>,
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<String>,
    /// `Accept`, verbatim.
    pub accept: Option<String>,
    /// `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// `Mcp-Method` (MCP 2026-07-28, transports: standard headers): the JSON-RPC method of the
    /// body, required on every request of that revision.
    pub mcp_method: Option<String>,
    /// `Mcp-Name` (MCP 2026-07-28): `params.name` of `tools/call` and `prompts/get`,
    /// `params.uri` of `resources/read`; verbatim (a value in the `=?base64?...?=` form is
    /// decoded by the core).
    pub mcp_name: Option<String>,
    /// Whether the adapter's caller already checked `Mcp-Method` and `Mcp-Name` against the
    /// body, so the core does not (the gRPC adapter: the envelope carries no such headers; the
    /// gateway checks them at its public endpoint before it builds the envelope).
    pub standard_headers_checked: bool,
    /// The `Mcp-Param-<Name>` headers (MCP 2026-07-28, SEP-2243: the arguments a tool's input
    /// schema marks with `x-mcp-header`), each as (`<Name>` in lower case, value verbatim), in
    /// the order received; checked against the body. `None` when the adapter's caller did not
    /// forward them (a gateway older than contract 1.4): then not checked.
    pub params: Option<Vec<(String, String)>>,
}

impl McpHeaders {
    /// Whether the answer may be `text/event-stream`: `Accept` absent, or its most specific
    /// media range that covers `text/event-stream` (itself, `text/*`, `*/*`) has a weight above
    /// 0 ([`accept_weight`]). What a POST's answer and a `subscriptions/listen` go by.
    pub fn accepts_sse(&self) -> bool {
        self.accept
            .as_deref()
            .is_none_or(|accept| accept_weight(accept, "text/event-stream") > 0.0)
    }

    /// Whether `Accept` lists `text/event-stream` itself with a weight above 0: what a GET
    /// needs for the standalone stream (MCP 2025-11-25, transports: "The client MUST include an
    /// Accept header, listing text/event-stream as a supported content type"; a wildcard is
    /// not a listing).
    pub fn lists_sse(&self) -> bool {
        self.accept
            .as_deref()
            .is_some_and(|accept| listed_weight(accept, "text/event-stream") > 0.0)
    }
}

/// The weight (0.0 to 1.0) an `Accept` header value gives `media_type` (`type/subtype`, lower
/// case): the `q` of its most specific media range covering it (exact, then `type/*`, then
/// `*/*`; of equal ones the highest), 0.0 when none covers it (RFC 9110, 12.5.1). Types and
/// the `q` name compare without regard to case; parameters other than `q` are not compared; a
/// `q` that is not a number counts as 1.0 (a lenient reading, as before any weight was read).
fn accept_weight(accept: &str, media_type: &str) -> f32 {
    let (kind, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    let mut best: Option<(u8, f32)> = None;
    for (range, q) in media_ranges(accept) {
        let rank = if range.eq_ignore_ascii_case(media_type) {
            2
        } else if range
            .split_once('/')
            .is_some_and(|(t, s)| s == "*" && t.eq_ignore_ascii_case(kind))
        {
            1
        } else if range == "*/*" {
            0
        } else {
            continue;
        };
        best = match best {
            Some((r, w)) if r > rank || (r == rank && w >= q) => Some((r, w)),
            _ => Some((rank, q)),
        };
    }
    best.map_or(0.0, |(_, q)| q)
}

/// The highest weight `Accept` gives `media_type` named exactly (no wildcard), 0.0 when it is
/// not named.
fn listed_weight(accept: &str, media_type: &str) -> f32 {
    media_ranges(accept)
        .filter(|(range, _)| range.eq_ignore_ascii_case(media_type))
        .map(|(_, q)| q)
        .fold(0.0, f32::max)
}

/// Each media range of an `Accept` value with its weight (`q`, 1.0 when absent or not a
/// number, clamped to 0.0-1.0); empty elements skipped.
fn media_ranges(accept: &str) -> impl Iterator<Item = (&str, f32)> {
    accept.split(',').filter_map(|element| {
        let mut parts = element.split(';');
        let range = parts.next().unwrap_or_default().trim();
        if range.is_empty() {
            return None;
        }
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, value)| value.trim().parse::<f32>().ok())
            .filter(|q| q.is_finite())
            .map_or(1.0, |q| q.clamp(0.0, 1.0));
        Some((range, q))
    })
}

/// One MCP request, as the gateway received it, minus transport details.
#[derive(Debug, Clone)]
pub struct Request {
    /// The HTTP method.
    pub method: Method,
    /// The MCP headers.
    pub headers: McpHeaders,
    /// Virtual server id of `/servers/{id}/mcp`; `None` for the federated `/mcp`.
    pub server_id: Option<String>,
    /// Gateway-assigned request id, for logs.
    pub request_id: Option<String>,
    /// The caller.
    pub auth: AuthContext,
    /// Raw body: one JSON-RPC message (UTF-8 JSON), unparsed. Empty for GET and DELETE.
    pub body: Bytes,
    /// The adapter it came through.
    pub transport: Transport,
    /// Whether the caller reads the answer's events as they come (HTTP, `InvokeStream`, the
    /// public endpoint, in-process callers). `false` for unary `Invoke`, which returns the
    /// answer whole once the call has ended: a server-to-client request relayed to such a
    /// caller could never be answered in time, so the runtime refuses it to the upstream at
    /// once (-32601, `server_requests.rs`) instead of holding the call until its timeout.
    pub live_events: bool,
}

/// One server-sent event of a `text/event-stream` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` field, if any.
    pub id: Option<String>,
    /// `event:` field; `None` means the default `message`.
    pub event: Option<String>,
    /// `data:` field: one JSON-RPC message (empty in a priming event, which only gives the
    /// client an id to resume from).
    pub data: String,
    /// `retry:` field, in milliseconds: how long the client should wait before it reconnects
    /// once the stream closes (sent with the priming event of a stream the runtime closes to
    /// be polled, SEP-1699).
    pub retry: Option<u64>,
}

impl SseEvent {
    /// A default-type (`message`) event carrying one JSON-RPC message.
    #[must_use]
    pub fn message(data: String) -> Self {
        Self {
            id: None,
            event: Some("message".to_owned()),
            data,
            retry: None,
        }
    }

    /// A priming event (MCP 2025-11-25, transports, SEP-1699): empty data, so the client has
    /// an event id to resume from, and `retry` in milliseconds.
    #[must_use]
    pub fn priming(retry_ms: u64) -> Self {
        Self {
            id: None,
            event: None,
            data: String::new(),
            retry: Some(retry_ms),
        }
    }

    /// Appends the event in `text/event-stream` framing (WHATWG HTML, server-sent events):
    /// `id:`, `event:` and one `data:` line per line of data, then a blank line.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if let Some(id) = &self.id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
        if let Some(retry) = self.retry {
            out.extend_from_slice(format!("retry: {retry}\n").as_bytes());
        }
        if let Some(event) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        for line in self.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }
}

/// Status line and headers of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status code the client sees.
    pub status: u16,
    /// Headers to relay, lower-case names, in order.
    pub headers: Vec<(&'static str, String)>,
}

impl ResponseHead {
    /// The value of the first header with this (lower-case) name.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The body of an [`Outcome`].
#[derive(Debug)]
pub enum Body {
    /// The whole body (JSON, or empty for 202 and DELETE).
    Full(Bytes),
    /// A `text/event-stream` body: events arrive as the runtime produces them; the stream
    /// ends when the sender side is dropped. Dropping it cancels the work behind it.
    Events(Events),
}

/// The events of a `text/event-stream` body, as a [`Stream`]. Holds what the stream counts
/// against its subject's quota (a standalone GET stream) until it is dropped.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<SseEvent>,
    _permit: Option<Permit>,
    /// The in-flight and open-stream gauges this stream holds while metrics are on.
    pub(crate) _gauges: Option<(crate::metrics::GaugeGuard, crate::metrics::GaugeGuard)>,
}

impl Events {
    /// The next event; `None` once the stream ended.
    pub async fn recv(&mut self) -> Option<SseEvent> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = SseEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SseEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// What the core answers to one [`Request`].
#[derive(Debug)]
pub struct Outcome {
    /// Status and headers.
    pub head: ResponseHead,
    /// The body.
    pub body: Body,
    /// The `mcp_method` label of the request answered (metrics and the request log line).
    pub mcp_method: crate::metrics::McpMethod,
}

impl Outcome {
    /// An SSE response whose stream holds `permit` until it ends.
    pub(crate) fn events_holding(events: mpsc::Receiver<SseEvent>, permit: Permit) -> Self {
        let mut outcome = Self::events(events);
        if let Body::Events(e) = &mut outcome.body {
            e._permit = Some(permit);
        }
        outcome
    }

    /// The same response, whose event stream (if it is one) ends when the caller's token
    /// expires: at `expires_at_unix_s` (seconds since the Unix epoch; 0, no expiry, changes
    /// nothing), `last` (a JSON-RPC message) is its last event, if given, and the stream ends.
    ///
    /// For the streams that never end by themselves (a GET stream, a `subscriptions/listen`
    /// stream): the caller was authorised when it opened, and without this it would go on
    /// hearing of changes after its token stopped being valid. The client opens it again
    /// with a fresh token (a listen stream's last event is its result, the graceful end).
    /// Ending it drops the receiver the stream was fed through, so whatever watches it (the
    /// listen stream's subscriptions, the standalone sender) sees the client gone.
    pub(crate) fn until_token_expiry(
        mut self,
        expires_at_unix_s: i64,
        last: Option<String>,
    ) -> Self {
        let Body::Events(events) = &mut self.body else {
            return self;
        };
        let Ok(expiry_s) = u64::try_from(expires_at_unix_s) else {
            return self;
        };
        if expiry_s == 0 {
            return self;
        }
        let left_ms = (expiry_s.saturating_mul(1000)).saturating_sub(crate::state::unix_ms());
        let (tx, rx) = mpsc::channel(16);
        let mut fed = std::mem::replace(&mut events.rx, rx);
        tokio::spawn(async move {
            let expired = tokio::time::sleep(std::time::Duration::from_millis(left_ms));
            tokio::pin!(expired);
            loop {
                tokio::select! {
                    biased;
                    () = &mut expired => break,
                    () = tx.closed() => return,
                    event = fed.recv() => {
                        let Some(event) = event else { return };
                        if last.as_deref() == Some(event.data.as_str()) {
                            // Ended already (the drain): the last event is not sent twice.
                            let _ = tx.send(event).await;
                            return;
                        }
                        tokio::select! {
                            sent = tx.send(event) => if sent.is_err() { return },
                            () = &mut expired => break,
                        }
                    }
                }
            }
            drop(fed);
            if let Some(last) = last {
                let _ = tx.try_send(SseEvent::message(last));
            }
            tracing::debug!("stream ended: the caller's token expired");
        });
        self
    }

    /// A complete response with a JSON body.
    #[must_use]
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            head: ResponseHead {
                status,
                headers: vec![("content-type", "application/json".to_owned())],
            },
            body: Body::Full(body.into()),
            mcp_method: crate::metrics::McpMethod::UNKNOWN,
        }
    }

    /// A response with no body.
    #[must_use]
    pub fn empty(status: u16) -> Self {
        Self {
            head: ResponseHead {
                status,
                headers: Vec::new(),
            },
            body: Body::Full(Bytes::new()),
            mcp_method: crate::metrics::McpMethod::UNKNOWN,
        }
    }

    /// An SSE response whose events come from `events`.
    #[must_use]
    pub fn events(events: mpsc::Receiver<SseEvent>) -> Self {
        Self {
            head: ResponseHead {
                status: 200,
                headers: vec![
                    ("content-type", "text/event-stream".to_owned()),
                    ("cache-control", "no-cache".to_owned()),
                ],
            },
            body: Body::Events(Events {
                rx: events,
                _permit: None,
                _gauges: None,
            }),
            mcp_method: crate::metrics::McpMethod::UNKNOWN,
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.head.headers.push((name, value));
        self
    }

    /// Waits for the whole body: a full body as is, an event stream encoded as
    /// `text/event-stream` bytes once the stream ends. Used by unary adapters (gRPC `Invoke`).
    pub async fn collect(self) -> (ResponseHead, Bytes) {
        match self.body {
            Body::Full(b) => (self.head, b),
            Body::Events(mut rx) => {
                let mut out = Vec::new();
                while let Some(ev) = rx.recv().await {
                    ev.encode_into(&mut out);
                }
                (self.head, Bytes::from(out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_is_read_as_rfc_9110_reads_it() {
        // (Accept, accepts_sse, lists_sse)
        let cases: &[(Option<&str>, bool, bool)] = &[
            (None, true, false),
            (Some("application/json, text/event-stream"), true, true),
            (Some("TEXT/EVENT-STREAM"), true, true),
            (Some("Text/Event-Stream; Q=0.5"), true, true),
            (Some("application/json"), false, false),
            (Some(""), false, false),
            (Some("*/*"), true, false),
            (Some("text/*"), true, false),
            (Some("TEXT/*;q=1"), true, false),
            (Some("application/*"), false, false),
            (Some("text/event-stream;q=0"), false, false),
            (Some("text/event-stream; q=0.000, */*"), false, false),
            (
                Some("text/event-stream;q=0, text/event-stream;q=0.2"),
                true,
                true,
            ),
            (Some("*/*;q=0, text/event-stream"), true, true),
            (Some("text/*;q=0, */*"), false, false),
            (Some("text/event-stream;q=abc"), true, true),
            (Some("text/event-stream;charset=utf-8"), true, true),
            (Some("text/event-streamx, text/event"), false, false),
            (Some(" , ;q=1, text/event-stream "), true, true),
        ];
        for &(accept, sse, listed) in cases {
            let headers = McpHeaders {
                accept: accept.map(str::to_owned),
                ..McpHeaders::default()
            };
            assert_eq!(headers.accepts_sse(), sse, "accepts_sse {accept:?}");
            assert_eq!(headers.lists_sse(), listed, "lists_sse {accept:?}");
        }
    }

    #[test]
    fn sse_framing_splits_data_lines() {
        let mut out = Vec::new();
        SseEvent {
            id: Some("7".into()),
            event: None,
            data: "a\nb".into(),
            retry: None,
        }
        .encode_into(&mut out);
        assert_eq!(out, b"id: 7\ndata: a\ndata: b\n\n");
    }
}
