//! Server-to-client requests: the conformance fixture's `test_sampling` and `test_elicitation`
//! ask their client (the runtime's shared upstream session) during a `tools/call`; the runtime
//! relays each request on that call's SSE stream under an id of its own, takes the client's
//! POSTed response (202) back to the upstream under the upstream's id, refuses what the
//! client did not declare, ignores a response nothing awaits, and forgets what is pending
//! when the call or the session ends. Also `logging/setLevel`: the upstream's
//! `notifications/message` below the session's level are not relayed (in memory here; across
//! replicas in `tests/process/replicas/notify.rs`).

use std::time::Duration;

use crate::sidecar::Sidecar;
use crate::support::*;
use futures::StreamExt;
use mcp_fixture_server::SharedState;
use serde_json::{Value, json};

/// A hang guard, not a timing assertion: every awaited message comes within this.
const GUARD: Duration = Duration::from_secs(20);

async fn runtime() -> (Fixture, Sidecar, Http) {
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_conformance(),
    );
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    (fx, rt, http)
}

/// A session whose client declared `capabilities` at `initialize`.
async fn session_with(http: &Http, who: &Value, capabilities: Value) -> String {
    let body = rpc(
        0,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": capabilities,
               "clientInfo": {"name": "test", "version": "1"}}),
    );
    let r = http.send(&Call::post(who, body)).await;
    assert_eq!(r.status, 200, "initialize: {:?}", r.body);
    r.session_id.expect("mcp-session-id")
}

fn tool_call(who: &Value, sid: &str, id: i64, name: &str, arguments: Value) -> Call {
    let mut params = json!({"name": name});
    params["arguments"] = arguments;
    Call::post(who, rpc(id, "tools/call", params)).session(sid)
}

/// Opens `call` and returns its SSE stream as JSON-RPC messages.
async fn stream(http: &Http, call: &Call) -> Events {
    let response = http.open(call).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream"),
        "the call's answer is a stream"
    );
    sse_stream::SseStream::new(response.into_body())
        .filter_map(|e| async move {
            e.ok()
                .and_then(|e| e.data)
                .and_then(|d| serde_json::from_str(&d).ok())
        })
        .boxed()
}

/// The next message of `events` (the stream must not end before it).
async fn next(events: &mut Events) -> Value {
    tokio::time::timeout(GUARD, events.next())
        .await
        .expect("a message before the guard")
        .expect("the stream goes on")
}

/// The rest of `events` until it ends; its last message.
async fn last(events: &mut Events) -> Value {
    let mut last = None;
    while let Some(m) = tokio::time::timeout(GUARD, events.next())
        .await
        .expect("the stream ends before the guard")
    {
        last = Some(m);
    }
    last.expect("a last message")
}

/// POSTs a JSON-RPC response with `id` and `member` (`result` or `error`) in session `sid`.
async fn respond(http: &Http, who: &Value, sid: &str, id: &Value, member: &str, v: Value) -> Reply {
    let mut body = json!({"jsonrpc": "2.0", "id": id});
    body[member] = v;
    http.send(&Call::post(who, body.to_string()).session(sid))
        .await
}

fn text_of(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content: {answer}"))
        .to_owned()
}

fn sampled(text: &str) -> Value {
    json!({"role": "assistant", "content": {"type": "text", "text": text},
           "model": "test-model", "stopReason": "endTurn"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampling_request_goes_to_the_caller_and_its_answer_back_to_the_upstream() {
    let (_fx, _rt, http) = runtime().await;
    let alice = auth("alice@example.com", false, Some(&[]));
    let sid = session_with(&http, &alice, json!({"sampling": {}})).await;

    let call = tool_call(
        &alice,
        &sid,
        5,
        "test_sampling",
        json!({"prompt": "Say hi"}),
    );
    let mut events = stream(&http, &call).await;
    let request = next(&mut events).await;
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert_eq!(
        request["params"]["messages"][0]["content"]["text"], "Say hi",
        "{request}"
    );
    let id = request["id"].clone();
    assert!(
        id.as_str().is_some_and(|s| s.starts_with("s2c-")),
        "the runtime's own id: {request}"
    );

    let r = respond(&http, &alice, &sid, &id, "result", sampled("hi there")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert!(r.body.is_empty(), "{:?}", r.body);

    let answer = last(&mut events).await;
    assert_eq!(answer["id"], 5, "{answer}");
    assert_eq!(text_of(&answer), "LLM response: hi there", "{answer}");

    // Answered once: the same response again is accepted and goes nowhere.
    let again = respond(&http, &alice, &sid, &id, "result", sampled("twice")).await;
    assert_eq!(again.status, 202, "{:?}", again.body);

    // A second call gets an id of its own in the same session.
    let call = tool_call(&alice, &sid, 6, "test_sampling", json!({"prompt": "Again"}));
    let mut events = stream(&http, &call).await;
    let second = next(&mut events).await;
    assert_ne!(second["id"], id, "{second}");
    let r = respond(&http, &alice, &sid, &second["id"], "result", sampled("2")).await;
    assert_eq!(r.status, 202);
    assert_eq!(text_of(&last(&mut events).await), "LLM response: 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elicitation_request_goes_to_the_caller_and_its_answer_back_to_the_upstream() {
    let (_fx, _rt, http) = runtime().await;
    let bob = auth("bob@example.com", false, Some(&[]));
    let sid = session_with(&http, &bob, json!({"elicitation": {}})).await;

    let call = tool_call(
        &bob,
        &sid,
        7,
        "test_elicitation",
        json!({"message": "Who are you?"}),
    );
    let mut events = stream(&http, &call).await;
    let request = next(&mut events).await;
    assert_eq!(request["method"], "elicitation/create", "{request}");
    assert_eq!(request["params"]["message"], "Who are you?", "{request}");
    assert!(
        request["params"]["requestedSchema"]["properties"]["email"].is_object(),
        "{request}"
    );

    let content = json!({"username": "bob", "email": "bob@example.com"});
    let r = respond(
        &http,
        &bob,
        &sid,
        &request["id"],
        "result",
        json!({"action": "accept", "content": content}),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);

    let answer = last(&mut events).await;
    assert_eq!(answer["id"], 7, "{answer}");
    assert_eq!(
        text_of(&answer),
        format!("User response: action=\"accept\", content={content}"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_client_did_not_declare_is_refused_to_the_upstream() {
    let (_fx, _rt, http) = runtime().await;
    let carol = auth("carol@example.com", false, Some(&[]));
    // Declares elicitation only: sampling is refused, elicitation is not.
    let sid = session_with(&http, &carol, json!({"elicitation": {}})).await;

    let r = http
        .send(&tool_call(
            &carol,
            &sid,
            1,
            "test_sampling",
            json!({"prompt": "x"}),
        ))
        .await;
    let answer = r.json();
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = text_of(&answer);
    assert!(
        text.starts_with("sampling failed") && text.contains("`sampling` capability"),
        "the upstream got the runtime's refusal: {answer}"
    );
    // Nothing reached the client: the answer is the call's result alone.
    if r.content_type.as_deref() == Some("text/event-stream") {
        assert_eq!(r.events().len(), 1, "{:?}", r.events());
    }

    // A caller that takes no stream cannot be asked, whatever it declared.
    let both = session_with(&http, &carol, json!({"sampling": {}, "elicitation": {}})).await;
    let mut json_only = tool_call(&carol, &both, 3, "test_sampling", json!({"prompt": "x"}));
    json_only.accept = Some("application/json".into());
    let r = http.send(&json_only).await;
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let answer = r.json();
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        text_of(&answer).contains("does not take a streamed answer"),
        "{answer}"
    );

    // A session that declared nothing: elicitation is refused as well.
    let bare = session_with(&http, &carol, json!({})).await;
    let answer = http
        .send(&tool_call(
            &carol,
            &bare,
            2,
            "test_elicitation",
            json!({"message": "m"}),
        ))
        .await
        .json();
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        text_of(&answer).contains("`elicitation` capability"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_an_unknown_id_is_accepted_and_goes_nowhere() {
    let (_fx, _rt, http) = runtime().await;
    let dave = auth("dave@example.com", false, Some(&[]));
    let sid = session_with(&http, &dave, json!({"sampling": {}})).await;
    let call = tool_call(&dave, &sid, 3, "test_sampling", json!({"prompt": "p"}));
    let mut events = stream(&http, &call).await;
    let request = next(&mut events).await;

    // Ids nothing awaits, and the pending id from another session of the same subject: each
    // accepted as the transport says (202, no body), none reaches the upstream.
    let other = session_with(&http, &dave, json!({"sampling": {}})).await;
    for (session, id) in [
        (&sid, json!("s2c-999")),
        (&sid, json!(1)),
        (&sid, json!(3)),
        (&other, request["id"].clone()),
    ] {
        let r = respond(&http, &dave, session, &id, "result", sampled("wrong")).await;
        assert_eq!(r.status, 202, "{id}: {:?}", r.body);
        assert!(r.body.is_empty(), "{id}: {:?}", r.body);
    }

    // The request still awaits its own answer: an error from the right session reaches the
    // upstream as the tool's failure (had a wrong one gone there, the tool would have
    // answered "LLM response: wrong").
    let r = respond(
        &http,
        &dave,
        &sid,
        &request["id"],
        "error",
        json!({"code": -1, "message": "user rejected sampling"}),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let answer = last(&mut events).await;
    assert_eq!(answer["id"], 3, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        text_of(&answer).contains("user rejected sampling"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_the_session_or_the_call_forgets_what_is_pending() {
    let (_fx, _rt, http) = runtime().await;
    let erin = auth("erin@example.com", false, Some(&[]));
    let caps = json!({"sampling": {}, "elicitation": {}});

    // The session ends (DELETE) while the client holds a request: the call's stream ends
    // with its cancellation, and the session is gone for the late answer.
    let sid = session_with(&http, &erin, caps.clone()).await;
    let call = tool_call(&erin, &sid, 1, "test_sampling", json!({"prompt": "p"}));
    let mut events = stream(&http, &call).await;
    let request = next(&mut events).await;
    assert_eq!(request["method"], "sampling/createMessage");
    let r = http.send(&Call::bodyless("DELETE", &erin, &sid)).await;
    assert_eq!(r.status, 200);
    let answer = last(&mut events).await;
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(answer["error"]["message"], "Request cancelled", "{answer}");
    let r = respond(
        &http,
        &erin,
        &sid,
        &request["id"],
        "result",
        sampled("late"),
    )
    .await;
    assert_eq!(r.status, 404, "the session is gone: {:?}", r.body);

    // The client cancels its call while it holds a request: the entry goes with the call
    // (the late answer is accepted and goes nowhere; the core's unit tests see the table).
    let sid = session_with(&http, &erin, caps.clone()).await;
    let call = tool_call(&erin, &sid, 2, "test_elicitation", json!({"message": "m"}));
    let mut events = stream(&http, &call).await;
    let request = next(&mut events).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 2, "reason": "user gave up"}});
    let r = http
        .send(&Call::post(&erin, cancel.to_string()).session(&sid))
        .await;
    assert_eq!(r.status, 202);
    let answer = last(&mut events).await;
    assert_eq!(answer["error"]["message"], "Request cancelled", "{answer}");
    let r = respond(
        &http,
        &erin,
        &sid,
        &request["id"],
        "result",
        json!({"action": "decline"}),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);

    // The client declines a request by cancelling it: the upstream gets an error answer and
    // the tool reports it.
    let call = tool_call(&erin, &sid, 3, "test_sampling", json!({"prompt": "p"}));
    let mut events = stream(&http, &call).await;
    let request = next(&mut events).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": request["id"]}});
    let r = http
        .send(&Call::post(&erin, cancel.to_string()).session(&sid))
        .await;
    assert_eq!(r.status, 202);
    let answer = last(&mut events).await;
    assert_eq!(answer["id"], 3, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(text_of(&answer).starts_with("sampling failed"), "{answer}");

    // The shared upstream session still relays after all of that.
    let call = tool_call(&erin, &sid, 4, "test_sampling", json!({"prompt": "ok?"}));
    let mut events = stream(&http, &call).await;
    let request = next(&mut events).await;
    let r = respond(
        &http,
        &erin,
        &sid,
        &request["id"],
        "result",
        sampled("fine"),
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(text_of(&last(&mut events).await), "LLM response: fine");
}

/// A session opened over gRPC (`Invoke` of `initialize`) whose client declared sampling.
#[cfg(feature = "grpc-uds")]
async fn grpc_session_with_sampling(
    g: &mut mcp_runtime_proto::v1::mcp_runtime_client::McpRuntimeClient<tonic::transport::Channel>,
    who: &Value,
) -> String {
    let init = rpc(
        0,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
               "clientInfo": {"name": "test", "version": "1"}}),
    );
    let r = grpc::send(g, &Call::post(who, init)).await;
    r.session_id.expect("mcp-session-id")
}

/// Over gRPC the relayed request is one `event` of `InvokeStream` (no contract change: an
/// event's data is the JSON-RPC message) and the client's response one `Invoke`, answered 202.
#[cfg(feature = "grpc-uds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_the_request_is_an_event_of_invoke_stream() {
    use mcp_runtime_proto::v1 as pb;
    use pb::invoke_stream_response::Part;

    let (_fx, rt, _http) = runtime().await;
    let mut g = grpc::connect(&rt.grpc).await;
    let frank = auth("frank@example.com", false, Some(&[]));
    let sid = grpc_session_with_sampling(&mut g, &frank).await;

    let call = tool_call(&frank, &sid, 9, "test_sampling", json!({"prompt": "grpc"}));
    let mut s = g
        .clone()
        .invoke_stream(pb::InvokeStreamRequest {
            envelope: Some(grpc::envelope(&call)),
        })
        .await
        .expect("InvokeStream")
        .into_inner();
    let mut next = async || -> Option<Part> {
        tokio::time::timeout(GUARD, s.message())
            .await
            .expect("a message before the guard")
            .expect("stream")
            .map(|m| m.part.expect("part"))
    };
    let Some(Part::Head(head)) = next().await else {
        panic!("no head first");
    };
    assert_eq!(head.http_status, 200);
    let Some(Part::Event(event)) = next().await else {
        panic!("no event");
    };
    let request: Value = serde_json::from_str(&event.data).expect("JSON event");
    assert_eq!(request["method"], "sampling/createMessage", "{request}");

    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": sampled("over grpc")});
    let r = grpc::send(
        &mut g,
        &Call::post(&frank, answer.to_string()).session(&sid),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);

    let mut last = None;
    while let Some(part) = next().await {
        if let Part::Event(e) = part {
            last = Some(serde_json::from_str::<Value>(&e.data).expect("JSON event"));
        }
    }
    let last = last.expect("the answer");
    assert_eq!(last["id"], 9, "{last}");
    assert_eq!(text_of(&last), "LLM response: over grpc");
}

/// Unary `Invoke` returns the answer whole, once the call has ended: a request relayed to that
/// caller could never be answered, so the upstream is refused at once and the call ends with
/// the tool's own error instead of waiting for its timeout.
#[cfg(feature = "grpc-uds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_invoke_caller_is_not_asked_and_the_call_ends() {
    let (_fx, rt, _http) = runtime().await;
    let mut g = grpc::connect(&rt.grpc).await;
    let frank = auth("frank@example.com", false, Some(&[]));
    let sid = grpc_session_with_sampling(&mut g, &frank).await;
    let call = tool_call(&frank, &sid, 9, "test_sampling", json!({"prompt": "unary"}));
    let r = tokio::time::timeout(GUARD, grpc::send(&mut g, &call))
        .await
        .expect("an answer before the guard");
    assert_eq!(r.status, 200, "{:?}", r.body);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("sampling failed"), "{body}");
    assert!(body.contains("\"isError\":true"), "{body}");
}

/// The `notifications/message` of `test_tool_with_logging` (three at `info`) relayed in `sid`.
async fn log_messages(http: &Http, who: &Value, sid: &str, id: i64) -> usize {
    let reply = http
        .send(&tool_call(
            who,
            sid,
            id,
            "test_tool_with_logging",
            json!({}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.json().get("result").is_some(), "{:?}", reply.json());
    if reply.content_type.as_deref() != Some("text/event-stream") {
        return 0;
    }
    reply
        .events()
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_level_stops_the_log_messages_below_it_in_that_session_only() {
    let (_fx, _rt, http) = runtime().await;
    let who = auth("alice@example.com", false, Some(&[]));
    let (quiet, chatty) = (
        session_with(&http, &who, json!({})).await,
        session_with(&http, &who, json!({})).await,
    );
    assert_eq!(log_messages(&http, &who, &quiet, 1).await, 3);
    let set = |level: &str| rpc(2, "logging/setLevel", json!({"level": level}));
    let r = http
        .send(&Call::post(&who, set("info")).session(&quiet))
        .await;
    assert_eq!(r.json()["result"], json!({}), "{:?}", r.json());
    assert_eq!(log_messages(&http, &who, &quiet, 3).await, 3);
    let r = http
        .send(&Call::post(&who, set("warning")).session(&quiet))
        .await;
    assert_eq!(r.json()["result"], json!({}), "{:?}", r.json());
    assert_eq!(log_messages(&http, &who, &quiet, 4).await, 0);
    assert_eq!(log_messages(&http, &who, &chatty, 5).await, 3);
    // A level that is not one of the eight, or none: -32602, the level unchanged.
    for params in [json!({"level": "loud"}), json!({}), json!({"level": 3})] {
        let bad = rpc(6, "logging/setLevel", params.clone());
        let r = http.send(&Call::post(&who, bad).session(&quiet)).await;
        assert_eq!(r.error_code(), Some(-32602), "{params}: {:?}", r.json());
    }
    assert_eq!(log_messages(&http, &who, &quiet, 7).await, 0);
    let r = http
        .send(&Call::post(&who, set("debug")).session(&quiet))
        .await;
    assert_eq!(r.json()["result"], json!({}), "{:?}", r.json());
    assert_eq!(log_messages(&http, &who, &quiet, 8).await, 3);
}
