//! `test_reconnection`: a call whose SSE stream the server closes before the answer, so the
//! client resumes it with `Last-Event-ID` (MCP 2025-11-25, transports, "Resumability and
//! Redelivery", and SEP-1699 "SSE polling"; the conformance suite's `server-sse-polling`
//! scenario calls it). Conformance catalog only.
//!
//! rmcp answers a request on the stream of its POST and offers no way for a tool to close
//! that stream early, so the exchange is served at the HTTP layer, in front of rmcp
//! ([`layer`]):
//!
//! 1. a POSTed `tools/call` of [`TOOL`] in a session (`Mcp-Session-Id`, not the sessionless
//!    era, which has no resumption) is answered `200 text/event-stream` with one priming event
//!    (`id: reconnect-N`, `retry: 500`, empty data) and the stream ends;
//! 2. a GET in the same session with `Last-Event-ID: reconnect-N` gets the call's answer
//!    (`Reconnection test completed`) as one event, and that stream ends; any other GET goes
//!    to rmcp.
//!
//! A pending answer waits [`PENDING_TTL`] at most; at most [`MAX_PENDING`] wait at once (the
//! oldest is dropped first), so a client that never comes back holds nothing for long.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rmcp::model::Tool;
use serde_json::{Value, json};

/// The tool's name.
pub const TOOL: &str = "test_reconnection";

/// The text of its answer.
pub const ANSWER: &str = "Reconnection test completed";

/// How long the client is asked to wait before it reconnects (`retry:`), in milliseconds.
pub const RETRY_MS: u64 = 500;

/// How long an answer waits for its client's GET.
const PENDING_TTL: Duration = Duration::from_secs(60);

/// Answers waiting at once, at most.
const MAX_PENDING: usize = 1024;

/// Largest POST body looked at (a `tools/call` of this tool is tiny); larger ones go to rmcp
/// unread.
const MAX_PEEK_BYTES: usize = 64 * 1024;

/// The tool as listed.
pub fn tool() -> Tool {
    let schema = match json!({"type": "object", "properties": {}}) {
        Value::Object(map) => Arc::new(map),
        _ => Arc::default(),
    };
    Tool::new(
        TOOL,
        "Closes the call's SSE stream before answering; the answer comes on the GET that \
         resumes it with Last-Event-ID (SEP-1699).",
        schema,
    )
}

/// The calls whose stream was closed, by event id: their session and JSON-RPC id.
#[derive(Default, Clone)]
pub struct Pending(Arc<Mutex<PendingInner>>);

#[derive(Default)]
struct PendingInner {
    next: u64,
    calls: HashMap<String, (String, Value, Instant)>,
}

impl Pending {
    fn add(&self, session: String, id: Value) -> String {
        let mut p = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.calls.retain(|_, (_, _, at)| at.elapsed() < PENDING_TTL);
        if p.calls.len() >= MAX_PENDING
            && let Some(oldest) = p
                .calls
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(k, _)| k.clone())
        {
            p.calls.remove(&oldest);
        }
        p.next += 1;
        let event_id = format!("reconnect-{}", p.next);
        p.calls
            .insert(event_id.clone(), (session, id, Instant::now()));
        event_id
    }

    fn take(&self, event_id: &str, session: &str) -> Option<Value> {
        let mut p = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match p.calls.get(event_id) {
            Some((s, _, at)) if s == session && at.elapsed() < PENDING_TTL => {
                p.calls.remove(event_id).map(|(_, id, _)| id)
            }
            _ => None,
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn sse(body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The axum middleware serving [`TOOL`]'s two exchanges; everything else passes to `next`.
pub async fn layer(pending: Pending, req: Request, next: Next) -> Response {
    let session = header_str(req.headers(), "mcp-session-id").map(str::to_owned);
    let sessionless = header_str(req.headers(), "mcp-protocol-version")
        .is_some_and(|v| v.as_bytes() >= b"2026-07-28".as_slice());
    let Some(session) = session.filter(|_| !sessionless) else {
        return next.run(req).await;
    };
    if req.method() == Method::GET {
        let resumed = header_str(req.headers(), "last-event-id")
            .filter(|id| id.starts_with("reconnect-"))
            .and_then(|event_id| Some((event_id.to_owned(), pending.take(event_id, &session)?)));
        return match resumed {
            Some((event_id, id)) => {
                let answer = json!({"jsonrpc": "2.0", "id": id, "result": {
                    "content": [{"type": "text", "text": ANSWER}]
                }});
                sse(format!("id: {event_id}-answer\ndata: {answer}\n\n"))
            }
            None => next.run(req).await,
        };
    }
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= MAX_PEEK_BYTES);
    if req.method() != Method::POST || !small {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PEEK_BYTES).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    if let Some(id) = call_of_tool(&bytes) {
        let event_id = pending.add(session, id);
        return sse(format!("id: {event_id}\nretry: {RETRY_MS}\ndata: \n\n"));
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The JSON-RPC id of `body` when it is a `tools/call` of [`TOOL`].
fn call_of_tool(body: &Bytes) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    (v.get("method")?.as_str()? == "tools/call" && v.get("params")?.get("name")?.as_str()? == TOOL)
        .then(|| v.get("id").cloned())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_call_of_the_tool_is_taken() {
        let call = |name: &str| {
            Bytes::from(
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": name, "arguments": {}}})
                .to_string(),
            )
        };
        assert_eq!(call_of_tool(&call(TOOL)), Some(json!(7)));
        assert_eq!(call_of_tool(&call("echo")), None);
        assert_eq!(call_of_tool(&Bytes::from_static(b"not json")), None);
    }

    #[test]
    fn an_answer_is_given_once_and_only_in_its_session() {
        let p = Pending::default();
        let event_id = p.add("s1".into(), json!(1));
        assert_eq!(p.take(&event_id, "s2"), None);
        assert_eq!(p.take(&event_id, "s1"), Some(json!(1)));
        assert_eq!(p.take(&event_id, "s1"), None);
    }
}
