//! `subscriptions/listen` (MCP 2026-07-28): the stream a client without a session opens to
//! hear of list changes and resource updates. The acknowledgement comes first and says what is
//! honoured (only what the caller may see); then only what the client opted in to arrives,
//! tagged with the listen request's id; the upstream is subscribed once however many streams
//! want a URI, and unsubscribed when the last stream's client goes away; a bad filter is
//! -32602; a stream counts against the subject's stream cap; the drain ends a stream with the
//! listen request's result. Upstreams: a public fixture and one of team alpha (prefix
//! `alpha_`) serving the conformance resources, both with a tool list that changes
//! (`add_tool`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sidecar::{Options, Sidecar};
use crate::support::*;
use futures::StreamExt;
use mcp_fixture_server::SharedState;
use mcp_runtime_core::quota::QuotaConfig;
use serde_json::{Value, json};

const WATCHED: &str = "test://watched-resource";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Opens a listen stream of `who` with request id `id` and filter `notifications`.
async fn listen(http: &Http, who: &Value, id: i64, notifications: Value) -> Events {
    let call = modern(
        who,
        id,
        "subscriptions/listen",
        json!({ "notifications": notifications }),
    );
    let response = http.open(&call).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    events_of(response)
}

/// The next message of `events` (within 10 s); `None` when the stream ended.
async fn next(events: &mut Events) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a message within 10 s")
}

/// The acknowledgement, which must be the first message: its `notifications`.
async fn acknowledged(events: &mut Events, id: i64) -> Value {
    let m = next(events).await.expect("the acknowledgement");
    assert_eq!(
        m["method"], "notifications/subscriptions/acknowledged",
        "{m}"
    );
    assert_eq!(m["params"]["_meta"][SUBSCRIPTION_ID], id, "{m}");
    m["params"]["notifications"].clone()
}

/// Reads `events` until a message of `method`, each one tagged with listen id `id` and being
/// either that or a resource update of `WATCHED`.
async fn until(events: &mut Events, id: i64, method: &str) -> Value {
    loop {
        let m = next(events).await.expect("the stream stays open");
        assert_eq!(m["params"]["_meta"][SUBSCRIPTION_ID], id, "{m}");
        if m["method"] == method {
            return m;
        }
        assert_eq!(m["method"], "notifications/resources/updated", "{m}");
        assert_eq!(m["params"]["uri"], WATCHED, "{m}");
    }
}

/// Waits until `count` is `n` (an upstream's subscriptions), for at most 10 s.
async fn wait_for(count: &AtomicUsize, n: usize) {
    let start = Instant::now();
    while count.load(Ordering::SeqCst) != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the upstream's subscriptions never reached {n}: {}",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A 2026-07-28 `tools/call` of `name` with `arguments`; returns its first text.
async fn call(http: &Http, who: &Value, name: &str, arguments: Value) -> String {
    let r = http
        .send(&modern(
            who,
            50,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        ))
        .await;
    let answer = r.json();
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: {answer}"))
        .to_owned()
}

async fn two_upstreams(
    subscribed: &Arc<AtomicUsize>,
    options: Options,
) -> (Fixture, Fixture, Sidecar) {
    let public = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_dynamic_tools(),
    );
    let alpha = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0)
            .with_conformance()
            .with_dynamic_tools()
            .with_subscription_count(Arc::clone(subscribed)),
    );
    let rt = Sidecar::with(
        &format!(
            "[[upstreams]]\nid = \"public\"\nurl = \"{}\"\n\n[[upstreams]]\nid = \"alpha\"\n\
             url = \"{}\"\nprefix = \"alpha_\"\nvisibility = \"team\"\nteam = \"alpha\"\n",
            public.url, alpha.url
        ),
        options,
    )
    .await;
    (public, alpha, rt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_stream_carries_only_what_it_opted_in_to_and_its_caller_may_see() {
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (_public, _alpha, rt) = two_upstreams(&subscribed, Options::default()).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&["alpha"]));
    let carol = auth("carol@example.com", false, Some(&["alpha"]));
    let bob = auth("bob@example.com", false, Some(&[]));

    // server/discover says what a listen stream delivers.
    let d = http
        .send(&modern(&alice, 1, "server/discover", json!({})))
        .await
        .json();
    let caps = &d["result"]["capabilities"];
    assert_eq!(caps["tools"]["listChanged"], true, "{d}");
    assert_eq!(caps["resources"]["subscribe"], true, "{d}");

    // The acknowledgement: what was asked and may be seen; an unknown URI, and one the caller
    // may not see, are left out.
    let mut a = listen(
        &http,
        &alice,
        11,
        json!({"toolsListChanged": true, "resourceSubscriptions": [WATCHED, "test://nope"]}),
    )
    .await;
    assert_eq!(
        acknowledged(&mut a, 11).await,
        json!({"toolsListChanged": true, "resourceSubscriptions": [WATCHED]})
    );
    let mut b = listen(
        &http,
        &bob,
        12,
        json!({"toolsListChanged": true, "resourceSubscriptions": [WATCHED]}),
    )
    .await;
    assert_eq!(
        acknowledged(&mut b, 12).await,
        json!({"toolsListChanged": true})
    );
    let mut c = listen(
        &http,
        &carol,
        13,
        json!({"promptsListChanged": true, "resourceSubscriptions": [WATCHED]}),
    )
    .await;
    assert_eq!(
        acknowledged(&mut c, 13).await,
        json!({"promptsListChanged": true, "resourceSubscriptions": [WATCHED]})
    );
    // Two streams want the URI: the upstream is subscribed once.
    assert_eq!(subscribed.load(Ordering::SeqCst), 1);
    // Carol's stream is read all along (it opted in to no tool change: only updates).
    let carols: Arc<Mutex<Vec<Value>>> = Arc::default();
    let reader = {
        let carols = Arc::clone(&carols);
        tokio::spawn(async move {
            while let Some(m) = c.next().await {
                carols.lock().unwrap().push(m);
            }
        })
    };

    // Updates reach the subscribed stream, tagged with its id.
    let update = until(&mut a, 11, "notifications/resources/updated").await;
    assert_eq!(update["params"]["uri"], WATCHED);

    // A change of the team upstream's tools reaches alice (she opted in and sees it), not bob
    // (he cannot see it) nor carol (she did not opt in).
    assert_eq!(
        call(&http, &alice, "alpha_add_tool", json!({"name": "fresh"})).await,
        "added tool fresh"
    );
    until(&mut a, 11, "notifications/tools/list_changed").await;
    // A public change reaches both: it is bob's first message after the acknowledgement.
    call(&http, &bob, "add_tool", json!({"name": "other"})).await;
    let m = next(&mut b).await.expect("bob's stream stays open");
    assert_eq!(m["method"], "notifications/tools/list_changed", "{m}");
    assert_eq!(m["params"]["_meta"][SUBSCRIPTION_ID], 12, "{m}");
    until(&mut a, 11, "notifications/tools/list_changed").await;
    // Carol's stream got updates meanwhile, and only them (two more read after both changes).
    let seen = carols.lock().unwrap().len();
    let start = Instant::now();
    while carols.lock().unwrap().len() < seen + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no update for carol"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in carols.lock().unwrap().iter() {
        assert_eq!(m["method"], "notifications/resources/updated", "{m}");
        assert_eq!(m["params"]["_meta"][SUBSCRIPTION_ID], 13, "{m}");
    }

    // One stream's client leaving keeps the upstream subscribed for the other; the last one
    // leaving unsubscribes it.
    drop(a);
    let c_updates = carols.lock().unwrap().len();
    let start = Instant::now();
    while carols.lock().unwrap().len() < c_updates + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "carol's updates stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(subscribed.load(Ordering::SeqCst), 1);
    reader.abort();
    let _ = reader.await;
    wait_for(&subscribed, 0).await;
    drop(b);
    assert_eq!(http.health().await.1["open_sessions"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_the_stream_cap_and_the_drain() {
    let subscribed = Arc::new(AtomicUsize::new(0));
    let options = Options {
        quotas: QuotaConfig {
            max_streams_per_subject: 1,
            ..QuotaConfig::default()
        },
        ..Options::default()
    };
    let (_public, _alpha, mut rt) = two_upstreams(&subscribed, options).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&["alpha"]));

    // A filter that is not one: -32602, no stream.
    for notifications in [
        json!({"toolsListChanged": "yes"}),
        json!({"resourceSubscriptions": WATCHED}),
        json!({"resourceSubscriptions": [1]}),
        json!([]),
    ] {
        let r = http
            .send(&modern(
                &alice,
                1,
                "subscriptions/listen",
                json!({ "notifications": notifications }),
            ))
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (200, Some(-32602)),
            "{notifications}: {:?}",
            r.body
        );
    }
    let r = http
        .send(&modern(&alice, 1, "subscriptions/listen", json!({})))
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{:?}", r.body);
    // A client that accepts no event stream.
    let mut call = modern(
        &alice,
        2,
        "subscriptions/listen",
        json!({"notifications": {}}),
    );
    call.accept = Some("application/json".into());
    assert_eq!(http.send(&call).await.status, 406);

    // One stream per subject here: a second is 429 while the first is open; its client
    // leaving frees the slot.
    let first = listen(
        &http,
        &alice,
        3,
        json!({"resourceSubscriptions": [WATCHED]}),
    )
    .await;
    let r = http
        .send(&modern(
            &alice,
            4,
            "subscriptions/listen",
            json!({"notifications": {}}),
        ))
        .await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    drop(first);
    wait_for(&subscribed, 0).await;
    let start = Instant::now();
    let mut again = loop {
        let call = modern(
            &alice,
            5,
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        );
        let response = http.open(&call).await;
        if response.status() == 200 {
            break sse_stream::SseStream::new(response.into_body())
                .filter_map(|e| async move {
                    e.ok()
                        .and_then(|e| e.data)
                        .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                })
                .boxed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        acknowledged(&mut again, 5).await,
        json!({"toolsListChanged": true})
    );

    // The drain ends the stream with the listen request's result.
    let drained = rt.drain(Duration::from_secs(5));
    let end = next(&mut again).await.expect("the result");
    assert_eq!(end["id"], 5, "{end}");
    assert_eq!(end["result"]["resultType"], "complete", "{end}");
    assert_eq!(end["result"]["_meta"][SUBSCRIPTION_ID], 5, "{end}");
    assert!(next(&mut again).await.is_none());
    drained.await.unwrap();
}

/// Over gRPC a listen stream is an `InvokeStream` (the head, then one message per event); a
/// unary `Invoke`, which returns only once the answer ended, is refused (-32600).
#[cfg(feature = "grpc-uds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_stream_over_grpc() {
    use mcp_runtime_proto::v1 as pb;
    use pb::invoke_stream_response::Part;
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (_public, _alpha, rt) = two_upstreams(&subscribed, Options::default()).await;
    let mut g = crate::support::grpc::connect(&rt.grpc).await;
    let alice = auth("alice@example.com", false, Some(&["alpha"]));
    let mut call = modern(
        &alice,
        7,
        "subscriptions/listen",
        json!({"notifications": {"resourceSubscriptions": [WATCHED]}}),
    );
    call.extra.clear();
    let unary = crate::support::grpc::send(&mut g, &call).await;
    assert_eq!(unary.error_code(), Some(-32600), "{:?}", unary.body);
    let mut s = g
        .invoke_stream(pb::InvokeStreamRequest {
            envelope: Some(crate::support::grpc::envelope(&call)),
        })
        .await
        .expect("InvokeStream")
        .into_inner();
    let mut data = Vec::new();
    while data.len() < 2 {
        match s.message().await.expect("stream").expect("open").part {
            Some(Part::Head(h)) => assert_eq!(h.http_status, 200),
            Some(Part::Event(e)) => data.push(serde_json::from_str::<Value>(&e.data).unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        data[0]["method"],
        "notifications/subscriptions/acknowledged"
    );
    assert_eq!(data[1]["method"], "notifications/resources/updated");
    assert_eq!(data[1]["params"]["_meta"][SUBSCRIPTION_ID], 7);
    assert_eq!(subscribed.load(Ordering::SeqCst), 1);
    drop(s);
    wait_for(&subscribed, 0).await;
}

/// A stream that never ends by itself ends when its caller's token expires (it was authorised
/// when it opened; without this it would go on hearing of changes): a listen stream with its
/// result as the last message, its upstream subscription dropped; a session's GET stream
/// just ends. The client opens either again with a fresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_callers_token_expires() {
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (_public, _alpha, rt) = two_upstreams(&subscribed, Options::default()).await;
    let http = Http::new(&rt.http);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut alice = auth("alice@example.com", false, Some(&["alpha"]));
    alice["token_exp"] = json!(now + 3);
    let mut events = listen(
        &http,
        &alice,
        21,
        json!({"resourceSubscriptions": [WATCHED]}),
    )
    .await;
    assert_eq!(
        acknowledged(&mut events, 21).await,
        json!({"resourceSubscriptions": [WATCHED]})
    );
    assert_eq!(subscribed.load(Ordering::SeqCst), 1);
    let sid = http.initialize(&alice, None).await;
    let mut standalone = standalone(&http, &alice, &sid).await;
    // Updates until the expiry, then the result, then the end.
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = next(&mut events)
                .await
                .expect("the stream ends with its result");
            if m["method"] != "notifications/resources/updated" {
                break m;
            }
        }
    })
    .await
    .expect("the listen stream outlived its token");
    assert_eq!(end["id"], 21, "{end}");
    assert_eq!(end["result"]["resultType"], "complete", "{end}");
    assert_eq!(end["result"]["_meta"][SUBSCRIPTION_ID], 21, "{end}");
    assert!(next(&mut events).await.is_none());
    wait_for(&subscribed, 0).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while standalone.next().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the GET stream outlived its token");
}

/// A client that leaves while its listen's `resources/subscribe` is on its way upstream leaves
/// the upstream unsubscribed: the subscribe runs to its end (the upstream takes it) and the
/// stream's end then unsubscribes. Cut short with its caller, the subscribe would reach the
/// upstream without the runtime counting it as told, and stay there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_subscribe_leaves_the_upstream_unsubscribed() {
    const DELAY: Duration = Duration::from_millis(500);
    let subscribed = Arc::new(AtomicUsize::new(0));
    let fixture = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0)
            .with_conformance()
            .with_subscription_count(Arc::clone(&subscribed))
            .with_subscribe_delay(DELAY),
    );
    let rt = Sidecar::with(
        &format!("[[upstreams]]\nid = \"conf\"\nurl = \"{}\"\n", fixture.url),
        Options::default(),
    )
    .await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let call = modern(
        &alice,
        1,
        "subscriptions/listen",
        json!({"notifications": {"resourceSubscriptions": [WATCHED]}}),
    );
    // Gone before the upstream answers the subscribe (nothing is answered before it is).
    let left = tokio::time::timeout(DELAY / 5, http.open(&call)).await;
    assert!(left.is_err(), "answered before the upstream's subscribe");
    // Past the upstream's delay, its subscription is undone (a slower machine only makes this
    // pass without looking: it never fails wrongly).
    tokio::time::sleep(DELAY + DELAY / 2).await;
    wait_for(&subscribed, 0).await;
    // And a listen stream still gets it when it stays.
    let mut events = listen(
        &http,
        &alice,
        2,
        json!({"resourceSubscriptions": [WATCHED]}),
    )
    .await;
    acknowledged(&mut events, 2).await;
    until(&mut events, 2, "notifications/resources/updated").await;
    wait_for(&subscribed, 1).await;
}
