//! SSE polling (MCP 2025-11-25, transports, SEP-1699): the conformance fixture's
//! `test_reconnection` closes its call's stream after a priming event, and the answer comes on
//! the GET that resumes it with `Last-Event-ID`. The runtime, as the upstream's client, resumes
//! it; to a caller of the session era that takes SSE it does the same (a priming event with an
//! id and `retry`, the stream closed, the answer on the caller's GET with `Last-Event-ID`); to a
//! caller that takes only JSON, or a sessionless one, the resumption is invisible.

use crate::sidecar::Sidecar;
use crate::support::*;
use mcp_fixture_server::SharedState;
use serde_json::json;

const ANSWER: &str = mcp_fixture_server::reconnect::ANSWER;

fn reconnection(who: &serde_json::Value, sid: &str, id: i64) -> Call {
    Call::post(
        who,
        rpc(
            id,
            "tools/call",
            json!({"name": "test_reconnection", "arguments": {}}),
        ),
    )
    .session(sid)
}

/// The `id:` and `retry:` fields of an SSE body's events, in order.
fn fields(body: &bytes::Bytes, name: &str) -> Vec<String> {
    std::str::from_utf8(body)
        .expect("utf8")
        .lines()
        .filter_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closed_to_be_polled_is_resumed_by_the_runtime_and_by_its_caller() {
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_conformance(),
    );
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("erin@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;

    // A caller that takes SSE: a priming event (an id, retry, no message), then the end.
    let r = http.send(&reconnection(&who, &sid, 1)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("text/event-stream"));
    assert!(
        r.events().is_empty(),
        "no message before the close: {:?}",
        r.body
    );
    let ids = fields(&r.body, "id:");
    assert_eq!(ids.len(), 1, "{:?}", r.body);
    assert_eq!(fields(&r.body, "retry:").len(), 1, "{:?}", r.body);

    // Its GET with that id gets the answer, under the caller's id.
    let resumed = http
        .send(&Call::bodyless("GET", &who, &sid).header("last-event-id", &ids[0]))
        .await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    let answer = resumed
        .events()
        .into_iter()
        .find(|m| m.get("id").is_some())
        .expect("the answer");
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(answer["result"]["content"][0]["text"], ANSWER, "{answer}");

    // A caller that takes only JSON: the runtime resumed the upstream's stream itself.
    let mut call = reconnection(&who, &sid, 2);
    call.accept = Some("application/json".into());
    let r = http.send(&call).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let answer = r.json();
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(answer["result"]["content"][0]["text"], ANSWER, "{answer}");
}

/// Many polled calls at once in one session (48, under the 64 logs a session keeps): every one
/// is resumable (a stream opened and not
/// written to yet was once pruned as ancient when the next one opened, and its answer lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_polled_calls_of_one_session_are_all_resumed() {
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_conformance(),
    );
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("grace@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let closed = futures::future::join_all((1..=48).map(|id| {
        let (http, who, sid) = (&http, &who, &sid);
        async move { (id, http.send(&reconnection(who, sid, id)).await) }
    }))
    .await;
    for (id, r) in closed {
        let ids = fields(&r.body, "id:");
        assert_eq!(ids.len(), 1, "{id}: {:?}", r.body);
        let resumed = http
            .send(&Call::bodyless("GET", &who, &sid).header("last-event-id", &ids[0]))
            .await;
        assert_eq!(resumed.status, 200, "{id}: {:?}", resumed.body);
        let answer = resumed
            .events()
            .into_iter()
            .find(|m| m.get("id").is_some())
            .expect("the answer");
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["result"]["content"][0]["text"], ANSWER, "{answer}");
    }
}
