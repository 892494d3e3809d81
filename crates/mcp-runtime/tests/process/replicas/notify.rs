//! Notifications and the session record across replicas (issue 15): a resource subscription
//! made on one replica yields updates on the session's standalone GET stream held by another;
//! a `list_changed` reaches a GET stream on another replica; the stream's events carry ids,
//! are stored once in order, and a `Last-Event-ID` on a third replica replays exactly the
//! missed ones before the stream goes on live there (and the updates follow it); another
//! subject's session never sees them; an unsubscribe on a replica other than the one holding
//! the subscription ends it upstream, and a second subscribe elsewhere does not subscribe the
//! upstream twice; the client capabilities declared at `initialize` and the log
//! level set by `logging/setLevel` on one replica hold on the others (cached there or not); a
//! subscription outlives the idle reaping of its replica's copy of the session, and ends
//! upstream once the session does.
//!
//! The conformance fixture sends `notifications/resources/updated` every 200 ms while a session
//! of it is subscribed, on that upstream session only (so only the replica whose upstream
//! session subscribed hears it), and `add_tool` tells every upstream session its tool list
//! changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use mcp_fixture_server::SharedState;
use serde_json::{Value, json};

use super::{Replicas, alice, bob, resume, seq, stream_of, until};
use crate::support::*;

const WATCHED: &str = "test://watched-resource";
const UPDATED_METHOD: &str = "notifications/resources/updated";

/// `(id, message)` of the events of a standalone GET stream as they come.
type Stream = futures::stream::BoxStream<'static, (String, Value)>;

/// Opens the standalone GET stream of `sid` (with `Last-Event-ID: last` if given).
async fn open_stream(http: &Http, who: &Value, sid: &str, last: Option<&str>) -> Stream {
    let response = match last {
        Some(last) => resume(http, who, sid, last).await,
        None => {
            let mut get = Call::bodyless("GET", who, sid);
            get.accept = Some("text/event-stream".into());
            http.open(&get).await
        }
    };
    assert_eq!(response.status(), 200);
    sse_stream::SseStream::new(response.into_body())
        .filter_map(|e| async move {
            let e = e.ok()?;
            let m = serde_json::from_str(&e.data?).ok()?;
            Some((e.id.unwrap_or_default(), m))
        })
        .boxed()
}

/// The next event of `s` (the test fails if none comes within 10 s).
async fn next(s: &mut Stream) -> (String, Value) {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream stays open")
}

fn method(m: &Value) -> &str {
    m["method"].as_str().unwrap_or_default()
}

fn call(who: &Value, sid: &str, id: i64, name: &str, arguments: &Value) -> Call {
    let params = json!({"name": name, "arguments": arguments});
    Call::post(who, rpc(id, "tools/call", params)).session(sid)
}

fn ok(reply: &Reply) {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.json().get("error").is_none(), "{}", reply.json());
}

/// Asserts the ids of `events` are one stream's, numbered one after another from `first`.
fn consecutive(events: &[(String, Value)], first: u64) {
    let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    assert!(
        ids.iter().all(|id| stream_of(id) == stream_of(ids[0])),
        "{ids:?}"
    );
    let seqs: Vec<u64> = ids.iter().map(|id| seq(id)).collect();
    let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_stream_on_another_replica_and_resume_there_exactly_once() {
    let subscribed = Arc::new(AtomicUsize::new(0));
    let state = SharedState::new(0)
        .with_conformance()
        .with_dynamic_tools()
        .with_subscription_count(Arc::clone(&subscribed));
    let upstream_subscriptions = || subscribed.load(Ordering::SeqCst);
    let r = Replicas::start_on(state, 3, &[]);
    r.ready().await;
    let (a, b, c) = (&r.http[0], &r.http[1], &r.http[2]);
    let (alice, bob) = (alice(), bob());
    let sid = a.initialize(&alice, None).await;
    let bobs = a.initialize(&bob, None).await;
    // Alice's stream on B, Bob's on C; Alice subscribes on A.
    let mut on_b = open_stream(b, &alice, &sid, None).await;
    let mut bob_on_c = open_stream(c, &bob, &bobs, None).await;
    let subscribe = rpc(2, "resources/subscribe", json!({"uri": WATCHED}));
    ok(&a.send(&Call::post(&alice, subscribe).session(&sid)).await);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next(&mut on_b).await);
    }
    for (_, m) in &seen {
        assert_eq!(method(m), "notifications/resources/updated", "{m}");
        assert_eq!(m["params"]["uri"], WATCHED);
    }
    // A list change: every upstream session hears it; B's stream gets it once.
    ok(&a
        .send(&call(
            &alice,
            &sid,
            3,
            "add_tool",
            &json!({"name": "fresh"}),
        ))
        .await);
    while !seen
        .iter()
        .any(|(_, m)| method(m) == "notifications/tools/list_changed")
    {
        seen.push(next(&mut on_b).await);
    }
    // A second change as a marker: no second copy of the first before it.
    ok(&a
        .send(&call(
            &alice,
            &sid,
            4,
            "add_tool",
            &json!({"name": "fresher"}),
        ))
        .await);
    let before = seen.len();
    loop {
        let e = next(&mut on_b).await;
        let done = method(&e.1) == "notifications/tools/list_changed";
        seen.push(e);
        if done {
            break;
        }
    }
    let changes = seen
        .iter()
        .filter(|(_, m)| method(m) == "notifications/tools/list_changed")
        .count();
    assert_eq!(changes, 2, "{seen:?}");
    assert!(
        seen[before..seen.len() - 1]
            .iter()
            .all(|(_, m)| method(m) == "notifications/resources/updated")
    );
    // Every event has an id: one stream, each event once, in order.
    consecutive(&seen, 1);
    // Bob's stream on C: the list changes (his view changed too), none of Alice's updates.
    let mut bobs_events = Vec::new();
    while bobs_events
        .iter()
        .filter(|(_, m): &&(String, Value)| method(m) == "notifications/tools/list_changed")
        .count()
        < 2
    {
        bobs_events.push(next(&mut bob_on_c).await);
    }
    assert!(
        bobs_events
            .iter()
            .all(|(_, m)| method(m) == "notifications/tools/list_changed"),
        "{bobs_events:?}"
    );
    consecutive(&bobs_events, 1);
    // Alice's event ids in Bob's session: refused, on every replica.
    for h in &r.http {
        assert_eq!(resume(h, &bob, &bobs, &seen[1].0).await.status(), 400);
    }
    // Alice's client goes away and resumes on C after her second event: the events after it
    // that B stored, once, in order; then the stream goes on live on C.
    drop(on_b);
    let mut on_c = open_stream(c, &alice, &sid, Some(&seen[1].0)).await;
    let mut replayed = Vec::new();
    while replayed.len() < seen.len() - 2 {
        replayed.push(next(&mut on_c).await);
    }
    assert_eq!(replayed, seen[2..].to_vec());
    // Then what B stored after the client stopped reading (if anything), still in order, and
    // the new events of the stream on C, numbered from 1 in a stream of their own.
    let old = stream_of(&seen[0].0).to_owned();
    let mut tail = Vec::new();
    let live = loop {
        let e = next(&mut on_c).await;
        if stream_of(&e.0) != old {
            break e;
        }
        tail.push(e);
    };
    if !tail.is_empty() {
        consecutive(&tail, seq(&seen.last().expect("events").0) + 1);
    }
    assert_eq!(seq(&live.0), 1, "{live:?}");
    // The updates of the subscription made on A now reach C.
    let mut live_events = vec![live];
    while !live_events
        .iter()
        .any(|(_, m)| method(m) == "notifications/resources/updated")
    {
        live_events.push(next(&mut on_c).await);
    }
    consecutive(&live_events, 1);
    // One upstream session (A's) is subscribed.
    assert_eq!(upstream_subscriptions(), 1);
    // Unsubscribing on B (A's upstream session holds it) ends it: A unsubscribes upstream,
    // and it is gone from the record.
    let unsubscribe = rpc(5, "resources/unsubscribe", json!({"uri": WATCHED}));
    ok(&b.send(&Call::post(&alice, unsubscribe).session(&sid)).await);
    until(
        Duration::from_secs(10),
        "the upstream unsubscribed",
        async || upstream_subscriptions() == 0,
    )
    .await;
    let mut redis = r.redis.client().get_connection().expect("redis");
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("mcp:s:{sid}"))
        .query(&mut redis)
        .expect("HKEYS");
    assert!(fields.iter().all(|f| !f.starts_with("r:")), "{fields:?}");
    // Subscribing again on B makes B's upstream session the holder.
    let subscribe = rpc(6, "resources/subscribe", json!({"uri": WATCHED}));
    ok(&b.send(&Call::post(&alice, subscribe).session(&sid)).await);
    let holder: Option<String> = redis::cmd("HGET")
        .arg(format!("mcp:s:{sid}"))
        .arg(format!("r:{WATCHED}"))
        .query(&mut redis)
        .expect("HGET");
    assert!(holder.is_some(), "{fields:?}");
    assert_eq!(upstream_subscriptions(), 1);
    // A subscribe on C while B (alive) holds it changes nothing upstream.
    let subscribe = rpc(7, "resources/subscribe", json!({"uri": WATCHED}));
    ok(&c.send(&Call::post(&alice, subscribe).session(&sid)).await);
    assert_eq!(upstream_subscriptions(), 1);
    let mut more = Vec::new();
    while !more
        .iter()
        .any(|(_, m): &(String, Value)| method(m) == "notifications/resources/updated")
    {
        more.push(next(&mut on_c).await);
    }
    let mut all = live_events;
    all.extend(more);
    consecutive(&all, 1);
}

/// `initialize` with client capabilities `caps` on `http`; the session id.
async fn initialize_with(http: &Http, who: &Value, caps: Value) -> String {
    let body = rpc(
        0,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": caps,
            "clientInfo": {"name": "test", "version": "1"}}),
    );
    let reply = http.send(&Call::post(who, body)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.session_id.expect("mcp-session-id")
}

/// The `notifications/message` of `test_tool_with_logging` called in `sid` on `http`.
async fn log_messages(http: &Http, who: &Value, sid: &str, id: i64) -> usize {
    let reply = http
        .send(&call(who, sid, id, "test_tool_with_logging", &json!({})))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.json().get("result").is_some(), "{:?}", reply.json());
    if reply.content_type.as_deref() != Some("text/event-stream") {
        return 0;
    }
    reply
        .events()
        .iter()
        .filter(|m| method(m) == "notifications/message")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_and_log_level_set_on_one_replica_hold_on_the_others() {
    let r = Replicas::start_on(SharedState::new(0).with_conformance(), 3, &[]);
    r.ready().await;
    let (a, b, c) = (&r.http[0], &r.http[1], &r.http[2]);
    let who = alice();
    // Sampling declared on A: B relays the upstream's sampling request to the client.
    let sid = initialize_with(a, &who, json!({"sampling": {}})).await;
    let response = b
        .open(&call(
            &who,
            &sid,
            1,
            "test_sampling",
            &json!({"prompt": "hi"}),
        ))
        .await;
    assert_eq!(response.status(), 200);
    let mut events = sse_stream::SseStream::new(response.into_body())
        .filter_map(|e| async move { serde_json::from_str::<Value>(&e.ok()?.data?).ok() })
        .boxed();
    let request = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the call's stream goes on");
        assert!(m.get("result").is_none(), "answered before sampling: {m}");
        if method(&m) == "sampling/createMessage" {
            break m;
        }
    };
    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"role": "assistant",
        "content": {"type": "text", "text": "sampled"}, "model": "test"}});
    let posted = b
        .send(&Call::post(&who, Bytes::from(answer.to_string())).session(&sid))
        .await;
    assert_eq!(posted.status, 202, "{:?}", posted.body);
    let result = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the call's answer");
        if m.get("result").is_some() {
            break m;
        }
    };
    assert_eq!(
        result["result"]["content"][0]["text"], "LLM response: sampled",
        "{result}"
    );
    // Without the capability the upstream's request is refused on every replica.
    let plain = initialize_with(a, &who, json!({})).await;
    let refused = c
        .send(&call(
            &who,
            &plain,
            2,
            "test_sampling",
            &json!({"prompt": "hi"}),
        ))
        .await;
    assert_eq!(
        refused.json()["result"]["isError"],
        true,
        "{:?}",
        refused.json()
    );
    // The log level: every message passes until `logging/setLevel` on A; then neither B
    // (caching the session already) nor C (loading it) relays the info messages.
    assert_eq!(log_messages(b, &who, &plain, 3).await, 3);
    let set = rpc(4, "logging/setLevel", json!({"level": "warning"}));
    ok(&a.send(&Call::post(&who, set).session(&plain)).await);
    until(Duration::from_secs(10), "B applies the level", async || {
        log_messages(b, &who, &plain, 5).await == 0
    })
    .await;
    assert_eq!(log_messages(c, &who, &plain, 6).await, 0);
    assert_eq!(log_messages(a, &who, &plain, 7).await, 0);
    // An unknown level is refused, and changes nothing.
    let bad = rpc(8, "logging/setLevel", json!({"level": "loud"}));
    let reply = a.send(&Call::post(&who, bad).session(&plain)).await;
    assert_eq!(reply.error_code(), Some(-32602), "{:?}", reply.json());
    assert_eq!(log_messages(c, &who, &plain, 9).await, 0);
    // Another session of the same subject is not affected.
    assert_eq!(log_messages(c, &who, &sid, 10).await, 3);
    // A record written before these fields existed (no `caps`, `lvl`, `gr`) still loads:
    // no capability, no level, and a stream and a level can be set on it.
    let old = "0123456789abcdef0123456789abcdef";
    let mut redis = r.redis.client().get_connection().expect("redis");
    let () = redis::pipe()
        .cmd("HSET")
        .arg(format!("mcp:s:{old}"))
        .arg("sub")
        .arg(who["email"].as_str().expect("email"))
        .arg("ver")
        .arg("2025-11-25")
        .arg("created")
        .arg(1)
        .ignore()
        .cmd("PEXPIRE")
        .arg(format!("mcp:s:{old}"))
        .arg(600_000)
        .ignore()
        .query(&mut redis)
        .expect("an old record");
    assert_eq!(log_messages(b, &who, old, 11).await, 3);
    let refused = b
        .send(&call(
            &who,
            old,
            12,
            "test_sampling",
            &json!({"prompt": "hi"}),
        ))
        .await;
    assert_eq!(
        refused.json()["result"]["isError"],
        true,
        "{:?}",
        refused.json()
    );
    let stream = open_stream(c, &who, old, None).await;
    let set = rpc(13, "logging/setLevel", json!({"level": "error"}));
    ok(&b.send(&Call::post(&who, set).session(old)).await);
    until(Duration::from_secs(10), "C applies the level", async || {
        log_messages(c, &who, old, 14).await == 0
    })
    .await;
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_change_heard_by_one_replica_reaches_a_stream_on_another() {
    // The upstream tells only the upstream session that called `add_tool`: A's.
    let state = SharedState::new(0)
        .with_dynamic_tools()
        .with_list_changes_to_the_caller_only();
    let r = Replicas::start_on(state, 2, &[]);
    r.ready().await;
    let (a, b) = (&r.http[0], &r.http[1]);
    let who = alice();
    let sid = a.initialize(&who, None).await;
    let mut on_b = open_stream(b, &who, &sid, None).await;
    ok(&a
        .send(&call(&who, &sid, 1, "add_tool", &json!({"name": "fresh"})))
        .await);
    let (id, m) = next(&mut on_b).await;
    assert_eq!(method(&m), "notifications/tools/list_changed", "{m}");
    assert_eq!(seq(&id), 1, "{id}");
    // B listed the upstream again: its tools/list has the new tool.
    let list = b
        .send(&Call::post(&who, rpc(2, "tools/list", json!({}))).session(&sid))
        .await
        .json();
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"fresh"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_outlives_the_reaping_of_its_replicas_idle_copy_of_the_session() {
    // A 5 s idle TTL: A's copy of the session, idle there, is reaped while the session lives
    // on (B holds its GET stream, and renews its record every second: a shorter TTL left too
    // little room for a heartbeat delayed on a loaded machine, and the record expired).
    let subscribed = Arc::new(AtomicUsize::new(0));
    let state = SharedState::new(0)
        .with_conformance()
        .with_subscription_count(Arc::clone(&subscribed));
    let r = Replicas::start_on(state, 2, &["--session-idle-ttl-s", "5"]);
    r.ready().await;
    let (a, b) = (&r.http[0], &r.http[1]);
    let who = alice();
    let sid = a.initialize(&who, None).await;
    let mut on_b = open_stream(b, &who, &sid, None).await;
    let subscribe = rpc(1, "resources/subscribe", json!({"uri": WATCHED}));
    ok(&a.send(&Call::post(&who, subscribe).session(&sid)).await);
    let (_, m) = next(&mut on_b).await;
    assert_eq!(method(&m), UPDATED_METHOD, "{m}");
    until(Duration::from_secs(20), "A reaped its copy", async || {
        a.health().await.1["open_sessions"] == json!(0)
    })
    .await;
    // The subscription A's upstream session holds goes on: updates still reach B.
    let (_, m) = next(&mut on_b).await;
    assert_eq!(method(&m), UPDATED_METHOD, "{m}");
    assert_eq!(subscribed.load(Ordering::SeqCst), 1);
    // The session ends (DELETE on B): A's upstream session unsubscribes at the next update.
    assert_eq!(
        b.send(&Call::bodyless("DELETE", &who, &sid)).await.status,
        200
    );
    until(
        Duration::from_secs(10),
        "the upstream unsubscribed",
        async || subscribed.load(Ordering::SeqCst) == 0,
    )
    .await;
}
