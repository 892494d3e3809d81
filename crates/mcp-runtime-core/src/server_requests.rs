//! Server-to-client requests: what an upstream asks the client during a call
//! (`sampling/createMessage`, `elicitation/create`, `roots/list`, or any other request method),
//! relayed on that call's SSE stream to the downstream client that made the call, and the
//! client's answer taken back to the upstream.
//!
//! Spec: MCP 2025-06-18 (and 2025-11-25), transports, streamable HTTP, "Sending Messages to the
//! Server" (a POST's SSE stream "MAY" carry requests "related to the originating client
//! request"; a POSTed response is answered `202 Accepted`) and "Listening for Messages from the
//! Server"; client features: sampling, elicitation, roots.
//!
//! # The flow
//!
//! 1. An upstream's message with both `method` and `id` on the stream of one call
//!    ([`crate::forward`]) is handed to [`CallRequests::request`].
//! 2. `ping` is answered by the runtime itself (`{}`). A method that needs a client capability
//!    the downstream session did not declare at `initialize` ([`declared`]) is refused: the
//!    runtime answers the upstream with a JSON-RPC error (`-32601`) and the client sees
//!    nothing. So is every request of a call whose caller does not accept an SSE answer.
//! 3. Anything else is recorded in the session's pending table under an id the runtime
//!    allocates (`"s2c-<n>"`, a string unique within the downstream session, so requests of
//!    different upstreams, or of one upstream shared by many sessions, cannot collide) and sent
//!    on the call's stream with that id.
//! 4. The client POSTs its response to the session ([`crate::jsonrpc::Incoming::Response`]);
//!    [`Runtime::client_response`] takes the entry out of the table, puts the upstream's own id
//!    back and POSTs the response to the upstream session; the client gets `202`. A response
//!    whose id no pending request has is accepted (`202`) and ignored.
//!
//! # Capabilities
//!
//! The upstream session is shared by every downstream session, so it cannot carry one client's
//! capabilities: the runtime declares `sampling`, `elicitation` (`form` and `url`) and `roots`
//! to every HTTP upstream ([`upstream_capabilities`]) and decides per request, from the
//! capabilities of the downstream session whose call the request arrived on, whether to relay
//! it or refuse it. A stdio upstream declares none and its requests are refused by its
//! supervisor (`upstream/stdio.rs`); a request on an upstream's standalone GET stream belongs
//! to no call and is refused too ([`refuse`]).
//!
//! # Clean-up
//!
//! An entry lives at most as long as its call: the end of the call (answered, timed out,
//! cancelled, the caller gone, the session ended) removes its entries and answers each upstream
//! request still pending with an error ([`abandon`], from the call's `Drop`), so the upstream
//! does not wait for an answer that will not come. A `notifications/cancelled` from the
//! upstream for one of its requests removes the entry and is relayed to the client under the
//! runtime's id; one from the client naming a pending request's id (and no call of its own)
//! is taken as the client declining it: the upstream gets an error answer.
//!
//! With the Redis store the table is this replica's: a response POSTed to another replica
//! finds no pending request there (ignored; the call ends at its deadline), and a session loaded from Redis by another replica
//! declares no client capability there (its upstream requests are refused).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rmcp::model::{
    ClientJsonRpcMessage, ClientResult, CustomResult, ErrorCode, ErrorData, JsonRpcError,
    JsonRpcMessage, JsonRpcResponse, JsonRpcVersion2_0, RequestId,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio_util::task::TaskTracker;

use crate::jsonrpc;
use crate::request::SseEvent;
use crate::runtime::Runtime;
use crate::session::Session;
use crate::upstream::Upstream;

/// Client capability bit: `sampling`.
pub(crate) const SAMPLING: u8 = 1;
/// Client capability bit: `elicitation` in form mode (`"elicitation": {}` or with `form`).
pub(crate) const ELICITATION_FORM: u8 = 2;
/// Client capability bit: `elicitation` in URL mode (`"elicitation": {"url": {}}`).
pub(crate) const ELICITATION_URL: u8 = 4;
/// Client capability bit: `roots`.
pub(crate) const ROOTS: u8 = 8;

/// The client capabilities that `initialize` params declare, as bits ([`SAMPLING`],
/// [`ELICITATION_FORM`], [`ELICITATION_URL`], [`ROOTS`]). `elicitation: {}` means form mode
/// only (MCP 2025-11-25, client features: elicitation, "Capabilities"); params that are not
/// an object declare nothing.
pub(crate) fn declared(params: Option<&RawValue>) -> u8 {
    let caps = params
        .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
        .and_then(|mut p| p.remove("capabilities"));
    let Some(Value::Object(caps)) = caps else {
        return 0;
    };
    let mut bits = 0;
    if caps.get("sampling").is_some_and(Value::is_object) {
        bits |= SAMPLING;
    }
    if caps.get("roots").is_some_and(Value::is_object) {
        bits |= ROOTS;
    }
    if let Some(Value::Object(e)) = caps.get("elicitation") {
        if e.is_empty() || e.contains_key("form") {
            bits |= ELICITATION_FORM;
        }
        if e.contains_key("url") {
            bits |= ELICITATION_URL;
        }
    }
    bits
}

/// The client capabilities the runtime declares in its `initialize` to every HTTP upstream:
/// everything it can relay. Whether one request is relayed is decided per downstream session
/// ([`CallRequests::request`]).
pub(crate) fn upstream_capabilities() -> Value {
    json!({"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}})
}

/// The capability bit an upstream request `method` with `params` needs of the downstream
/// client; `None` when it needs none (any other method is relayed and the client answers it).
fn needs(method: &str, params: Option<&RawValue>) -> Option<(u8, &'static str)> {
    match method {
        "sampling/createMessage" => Some((SAMPLING, "sampling")),
        "roots/list" => Some((ROOTS, "roots")),
        "elicitation/create" => {
            let url = params
                .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
                .is_some_and(|p| p.get("mode").and_then(Value::as_str) == Some("url"));
            Some(if url {
                (ELICITATION_URL, "elicitation.url")
            } else {
                (ELICITATION_FORM, "elicitation")
            })
        }
        _ => None,
    }
}

/// One upstream request relayed to the client and not yet answered.
pub(crate) struct Pending {
    /// The upstream that asked.
    up: Arc<Upstream>,
    /// The upstream's own id of the request (raw JSON), put back on the answer.
    upstream_id: Box<RawValue>,
    /// The key of the call whose stream carried it (the caller's raw request id).
    call: String,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("upstream", &self.up.config.id)
            .field("upstream_id", &self.upstream_id)
            .field("call", &self.call)
            .finish()
    }
}

/// The pending table of one downstream session, by the id the runtime gave each request.
pub(crate) type PendingTable = HashMap<String, Pending>;

/// The upstream requests of one call: what [`crate::forward`]'s relay needs to pass them to
/// the client, or refuse them.
pub(crate) struct CallRequests {
    pub(crate) session: Arc<Session>,
    pub(crate) up: Arc<Upstream>,
    /// The call's key in the session (the caller's raw request id).
    pub(crate) call: String,
    /// Where answers sent to the upstream by the runtime itself run.
    pub(crate) tasks: TaskTracker,
}

impl CallRequests {
    /// An upstream request `method` with id `id` that arrived on this call's stream. Returns
    /// the event to send the client (the request under the runtime's id), or `None` when the
    /// runtime answered the upstream itself: `ping`, a capability the session did not declare,
    /// or a caller that takes no SSE answer (`streams` false).
    pub(crate) fn request(
        &self,
        method: &str,
        id: &RawValue,
        params: Option<&RawValue>,
        streams: bool,
    ) -> Option<SseEvent> {
        if method == "ping" {
            self.answer(id, Ok(json!({})));
            return None;
        }
        if !streams {
            self.answer(
                id,
                Err(refusal(
                    "the client's request does not take a streamed answer, so it cannot be asked",
                )),
            );
            return None;
        }
        if let Some((bit, name)) = needs(method, params)
            && self.session.caps.load(Ordering::Relaxed) & bit == 0
        {
            tracing::debug!(
                method,
                capability = name,
                "server-to-client request refused: capability not declared"
            );
            self.answer(
                id,
                Err(refusal(&format!(
                    "the client did not declare the `{name}` capability"
                ))),
            );
            return None;
        }
        let n = self
            .session
            .next_server_request
            .fetch_add(1, Ordering::Relaxed);
        let ours = format!("s2c-{n}");
        let mut message = json!({"jsonrpc": "2.0", "id": ours, "method": method});
        if let Some(p) = params.and_then(|p| serde_json::from_str::<Value>(p.get()).ok()) {
            message["params"] = p;
        }
        self.session.pending_table().insert(
            ours,
            Pending {
                up: Arc::clone(&self.up),
                upstream_id: id.to_owned(),
                call: self.call.clone(),
            },
        );
        Some(SseEvent::message(message.to_string()))
    }

    /// The upstream's `notifications/cancelled` for `request_id` (its own id of a request on
    /// this call's stream): the entry goes, and the notification to relay names the
    /// runtime's id. `None` when no pending request of this call has that id.
    pub(crate) fn cancelled(&self, request_id: &Value) -> Option<Value> {
        let mut table = self.session.pending_table();
        let key = table
            .iter()
            .find(|(_, p)| {
                p.call == self.call
                    && Arc::ptr_eq(&p.up, &self.up)
                    && serde_json::from_str::<Value>(p.upstream_id.get())
                        .ok()
                        .as_ref()
                        == Some(request_id)
            })
            .map(|(k, _)| k.clone())?;
        table.remove(&key);
        Some(Value::String(key))
    }

    /// Answers upstream request `id` with `answer` on a task of the runtime's tracker.
    fn answer(&self, id: &RawValue, answer: Result<Value, ErrorData>) {
        if let Some(msg) = response(id, answer) {
            self.tasks.spawn(Arc::clone(&self.up).respond(msg));
        }
    }
}

/// The refusal of an upstream request the runtime will not relay.
fn refusal(why: &str) -> ErrorData {
    ErrorData::new(
        ErrorCode(jsonrpc::METHOD_NOT_FOUND as i32),
        format!("Method not found: {why}"),
        None,
    )
}

/// A response to upstream request `id` (raw JSON): `answer`'s result, or its error. `None`
/// when `id` is not a JSON-RPC id (then there is nothing to answer).
fn response(id: &RawValue, answer: Result<Value, ErrorData>) -> Option<ClientJsonRpcMessage> {
    let id: RequestId = serde_json::from_str(id.get()).ok()?;
    Some(match answer {
        // Kept as the client sent it: a custom result serialises its value as it is.
        Ok(result) => JsonRpcMessage::Response(JsonRpcResponse {
            jsonrpc: JsonRpcVersion2_0,
            id,
            result: ClientResult::CustomResult(CustomResult(result)),
        }),
        Err(error) => JsonRpcMessage::Error(JsonRpcError::new(Some(id), error)),
    })
}

/// Refuses an upstream request that belongs to no call (one on the upstream's standalone GET
/// stream): it cannot be attributed to one client, so it is answered with a JSON-RPC error
/// (`-32601`) instead of being dropped or sent to the wrong client. `message` is the request.
pub(crate) fn refuse(up: &Arc<Upstream>, message: &Value) {
    let Some(id) = message
        .get("id")
        .and_then(|id| serde_json::value::to_raw_value(id).ok())
    else {
        return;
    };
    if message.get("method").and_then(Value::as_str) == Some("ping") {
        if let Some(msg) = response(&id, Ok(json!({}))) {
            tokio::spawn(Arc::clone(up).respond(msg));
        }
        return;
    }
    let why = "a request outside a call cannot be attributed to one client";
    if let Some(msg) = response(&id, Err(refusal(why))) {
        tokio::spawn(Arc::clone(up).respond(msg));
    }
}

/// The end of call `call` of `session`: every upstream request of it still pending is removed
/// and its upstream answered with an error (`-32603`), on `tasks`.
pub(crate) fn abandon(session: &Session, call: &str, tasks: &TaskTracker) {
    let gone: Vec<Pending> = {
        let mut table = session.pending_table();
        if table.is_empty() {
            return;
        }
        let keys: Vec<String> = table
            .iter()
            .filter(|(_, p)| p.call == call)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| table.remove(k)).collect()
    };
    for p in gone {
        let error = ErrorData::new(
            ErrorCode::INTERNAL_ERROR,
            "the call ended before the client answered",
            None,
        );
        if let Some(msg) = response(&p.upstream_id, Err(error)) {
            tasks.spawn(Arc::clone(&p.up).respond(msg));
        }
    }
}

impl Runtime {
    /// The client's response to a relayed request (a POSTed JSON-RPC response, MCP streamable
    /// HTTP "Sending Messages to the Server", answered `202 Accepted` by the caller): the
    /// pending entry of `id` is taken out and the response sent to its upstream under the
    /// upstream's own id. `result` and `error` are the raw members (exactly one is present); an
    /// `error` that is not a JSON-RPC error object reaches the upstream as an internal error.
    ///
    /// Returns whether a relayed request awaited this response. One that none awaits (never
    /// sent, already answered, its call ended, another session's, or sent to another replica)
    /// is ignored, as a response to nothing has nobody to go to: the transport accepts it all
    /// the same (the shared boundary vector "client response accepted"). An upstream that does
    /// not take the response is only logged: the client's part is done.
    pub(crate) async fn client_response(
        &self,
        session: &Session,
        id: &RawValue,
        result: Option<&RawValue>,
        error: Option<&RawValue>,
    ) -> bool {
        let key = serde_json::from_str::<String>(id.get()).ok();
        let pending = key.and_then(|k| session.pending_table().remove(&k));
        let Some(pending) = pending else {
            tracing::debug!(
                id = id.get(),
                "client response for no pending request: ignored"
            );
            return false;
        };
        let answer = match (result, error) {
            (Some(r), _) => serde_json::from_str::<Value>(r.get()).map_err(|_| internal()),
            (None, Some(e)) => {
                Err(serde_json::from_str::<ErrorData>(e.get()).unwrap_or_else(|_| internal()))
            }
            (None, None) => Err(internal()),
        };
        if let Some(msg) = response(&pending.upstream_id, answer) {
            Arc::clone(&pending.up).respond(msg).await;
        }
        true
    }

    /// The client's `notifications/cancelled` for `request_id` when no call of its own has that
    /// id: a pending relayed request with that id is declined (removed, its upstream answered
    /// with an error). Returns whether there was one.
    pub(crate) fn decline(&self, session: &Session, request_id: &Value) -> bool {
        let Some(key) = request_id.as_str() else {
            return false;
        };
        let Some(p) = session.pending_table().remove(key) else {
            return false;
        };
        let error = ErrorData::new(
            ErrorCode::INTERNAL_ERROR,
            "the client cancelled the request",
            None,
        );
        if let Some(msg) = response(&p.upstream_id, Err(error)) {
            self.tasks.spawn(Arc::clone(&p.up).respond(msg));
        }
        true
    }
}

fn internal() -> ErrorData {
    ErrorData::new(
        ErrorCode::INTERNAL_ERROR,
        "the client's response was not a valid JSON-RPC response",
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn declared_capabilities_are_read_from_initialize_params() {
        let caps = |c: &str| {
            declared(Some(&raw(&format!(
                r#"{{"protocolVersion":"2025-11-25","capabilities":{c},"clientInfo":{{"name":"t","version":"1"}}}}"#
            ))))
        };
        assert_eq!(caps("{}"), 0);
        assert_eq!(caps(r#"{"sampling":{}}"#), SAMPLING);
        assert_eq!(caps(r#"{"roots":{"listChanged":true}}"#), ROOTS);
        assert_eq!(caps(r#"{"elicitation":{}}"#), ELICITATION_FORM);
        assert_eq!(caps(r#"{"elicitation":{"url":{}}}"#), ELICITATION_URL);
        assert_eq!(
            caps(r#"{"elicitation":{"form":{},"url":{}},"sampling":{}}"#),
            ELICITATION_FORM | ELICITATION_URL | SAMPLING
        );
        assert_eq!(caps(r#"{"sampling":true}"#), 0);
        assert_eq!(declared(None), 0);
    }

    #[test]
    fn requests_need_their_capability() {
        assert_eq!(needs("sampling/createMessage", None).unwrap().0, SAMPLING);
        assert_eq!(needs("roots/list", None).unwrap().0, ROOTS);
        assert_eq!(
            needs("elicitation/create", None).unwrap().0,
            ELICITATION_FORM
        );
        let url = raw(r#"{"mode":"url","url":"https://x","message":"m","elicitationId":"e"}"#);
        assert_eq!(
            needs("elicitation/create", Some(&url)).unwrap().0,
            ELICITATION_URL
        );
        assert!(needs("custom/thing", None).is_none());
    }

    #[tokio::test]
    async fn the_end_of_a_call_removes_its_pending_requests_only() {
        let config = crate::catalog::CatalogConfig::parse(
            "[[upstreams]]\nid = \"u\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
        )
        .unwrap();
        let up = Arc::new(Upstream::new(
            config.upstreams[0].clone(),
            1 << 20,
            reqwest::header::HeaderMap::new(),
            Vec::new(),
            crate::live::Notices::none(),
        ));
        let sessions = crate::session::Sessions::new(4);
        let sid = sessions.create("s@example.com", None).unwrap();
        let crate::session::Local::Hit(session) = sessions.lookup(&sid, "s@example.com", None)
        else {
            panic!("no session");
        };
        session.caps.store(SAMPLING, Ordering::Relaxed);
        let tasks = TaskTracker::new();
        let of_call = |call: &str| CallRequests {
            session: Arc::clone(&session),
            up: Arc::clone(&up),
            call: call.to_owned(),
            tasks: tasks.clone(),
        };
        let (one, two) = (of_call("1"), of_call("\"two\""));
        let sample = raw(r#"{"messages":[],"maxTokens":1}"#);
        let ev = one
            .request("sampling/createMessage", &raw("10"), Some(&sample), true)
            .expect("relayed");
        let relayed: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(relayed["id"], "s2c-1", "{relayed}");
        assert_eq!(relayed["params"]["maxTokens"], 1, "{relayed}");
        assert!(
            one.request("sampling/createMessage", &raw("11"), None, true)
                .is_some()
        );
        assert!(two.request("custom/ask", &raw("12"), None, true).is_some());
        // Refused (capability, no stream) and answered (ping) requests are not recorded.
        assert!(one.request("roots/list", &raw("13"), None, true).is_none());
        assert!(
            one.request("sampling/createMessage", &raw("14"), None, false)
                .is_none()
        );
        assert!(one.request("ping", &raw("15"), None, true).is_none());
        assert_eq!(session.pending_table().len(), 3);

        // The upstream's cancellation of its request 11 names the runtime's id.
        assert_eq!(one.cancelled(&json!(11)), Some(json!("s2c-2")));
        assert_eq!(one.cancelled(&json!(12)), None, "another call's request");
        abandon(&session, "1", &tasks);
        let left: Vec<String> = session.pending_table().keys().cloned().collect();
        assert_eq!(left, ["s2c-3"]);
        abandon(&session, "\"two\"", &tasks);
        assert!(session.pending_table().is_empty());
        tasks.close();
        tasks.wait().await;
    }

    #[test]
    fn responses_keep_the_upstream_id_and_the_result_as_sent() {
        let msg = response(
            &raw(r#""up-7""#),
            Ok(json!({"a": [1, 2], "x": {"y": null}})),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"jsonrpc": "2.0", "id": "up-7", "result": {"a": [1, 2], "x": {"y": null}}})
        );
        let msg = response(&raw("12"), Err(refusal("no"))).unwrap();
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"jsonrpc": "2.0", "id": 12, "error": {"code": -32601, "message": "Method not found: no"}})
        );
        assert!(response(&raw("null"), Ok(json!({}))).is_none());
    }
}
