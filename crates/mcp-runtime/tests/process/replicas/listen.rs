//! `subscriptions/listen` (MCP 2026-07-28) with Redis: a listen stream lives on the replica
//! serving it (that replica's upstream session holds its resource subscriptions, and is told to
//! unsubscribe when the stream's client leaves), and a list change heard by another replica
//! only reaches it (every replica lists the upstream again when one publishes the change). The
//! fixture tells a tool list change to the upstream session that made it only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use mcp_fixture_server::SharedState;
use serde_json::{Value, json};

use super::{Replicas, alice, until};
use crate::support::*;

const WATCHED: &str = "test://watched-resource";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The next message of `events` (the test fails if none comes within 10 s).
async fn next(events: &mut Events) -> Value {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_stream_on_one_replica_hears_a_change_another_one_heard() {
    let subscribed = Arc::new(AtomicUsize::new(0));
    let state = SharedState::new(0)
        .with_conformance()
        .with_dynamic_tools()
        .with_list_changes_to_the_caller_only()
        .with_subscription_count(Arc::clone(&subscribed));
    let r = Replicas::start_on(state, 2, &[]);
    r.ready().await;
    let (a, b) = (&r.http[0], &r.http[1]);
    let alice = alice();
    let listen = modern(
        &alice,
        9,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true, "resourceSubscriptions": [WATCHED]}}),
    );
    let response = b.open(&listen).await;
    assert_eq!(response.status(), 200);
    let mut events: Events = sse_stream::SseStream::new(response.into_body())
        .filter_map(|e| async move {
            e.ok()
                .and_then(|e| e.data)
                .and_then(|d| serde_json::from_str(&d).ok())
        })
        .boxed();
    let ack = next(&mut events).await;
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["resourceSubscriptions"],
        json!([WATCHED])
    );
    // B's upstream session holds the subscription: its updates reach B's stream.
    let update = next(&mut events).await;
    assert_eq!(
        update["method"], "notifications/resources/updated",
        "{update}"
    );
    assert_eq!(update["params"]["_meta"][SUBSCRIPTION_ID], 9);
    assert_eq!(subscribed.load(Ordering::SeqCst), 1);
    // A tool added through a session on A: only A's upstream session is told (the fixture tells
    // the session that made the change; a 2026 call would reach it without one); B's stream
    // hears of it.
    let sid = a.initialize(&alice, None).await;
    let added = a
        .send(
            &Call::post(
                &alice,
                rpc(
                    10,
                    "tools/call",
                    json!({"name": "add_tool", "arguments": {"name": "fresh"}}),
                ),
            )
            .session(&sid),
        )
        .await;
    assert_eq!(
        added.json()["result"]["content"][0]["text"],
        "added tool fresh",
        "{:?}",
        added.body
    );
    // Resource updates keep coming meanwhile: the wait for the list change is bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no tools/list_changed within 20 s"
        );
        let m = next(&mut events).await;
        assert_eq!(m["params"]["_meta"][SUBSCRIPTION_ID], 9, "{m}");
        if m["method"] == "notifications/tools/list_changed" {
            break;
        }
        assert_eq!(m["method"], "notifications/resources/updated", "{m}");
    }
    // The client leaving unsubscribes the upstream.
    drop(events);
    until(
        Duration::from_secs(10),
        "the upstream unsubscribed",
        async || subscribed.load(Ordering::SeqCst) == 0,
    )
    .await;
}
