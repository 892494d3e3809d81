//! SSE keep-alive: a `text/event-stream` answer silent for `sse_keep_alive` gets a comment
//! line (`: keep-alive`, which SSE clients ignore), only between whole events, and its events
//! still arrive as they would without it. The streams that are silent by design: the
//! standalone GET stream of a 2025-11-25 session and a 2026-07-28 `subscriptions/listen`.

use std::time::Duration;

use crate::sidecar::{Options, Sidecar};
use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use mcp_fixture_server::SharedState;
use serde_json::{Value, json};

const PERIOD: Duration = Duration::from_millis(100);
const COMMENT: &[u8] = b": keep-alive\n\n";

/// Reads `body` until what was read contains `needle` and ends at a blank line (within 10 s
/// each read); returns each chunk read.
async fn read_until(body: &mut hyper::body::Incoming, needle: &[u8]) -> Vec<Bytes> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let found = |chunks: &[Bytes]| {
        let read = chunks.concat();
        read.windows(needle.len()).any(|w| w == needle) && read.ends_with(b"\n\n")
    };
    while !found(&chunks) {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{:?} within 10 s", String::from_utf8_lossy(needle)))
            .expect("the stream stays open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            chunks.push(data);
        }
    }
    chunks
}

/// What was read, cut at its blank lines, is comments and whole events only: each block the
/// comment or `id:`/`event:` lines and `data:` lines whose JSON parses (a comment written
/// inside an event would leave a block that is neither). Chunk boundaries as read do not
/// matter.
fn whole(chunks: &[Bytes]) {
    let text = String::from_utf8(chunks.concat()).expect("UTF-8");
    assert!(text.ends_with("\n\n"), "ends inside a block: {text:?}");
    for block in text.trim_end_matches('\n').split("\n\n") {
        if block == ": keep-alive" {
            continue;
        }
        for line in block.lines() {
            let data = line.strip_prefix("data: ");
            assert!(
                data.is_some_and(|d| serde_json::from_str::<Value>(d).is_ok())
                    || line.starts_with("id: ")
                    || line.starts_with("event: "),
                "a block that is neither the comment nor a whole event: {block:?}"
            );
        }
    }
}

/// The JSON-RPC messages of `chunks` (their `data:` lines).
fn messages(chunks: &[Bytes]) -> Vec<Value> {
    String::from_utf8_lossy(&chunks.concat())
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

async fn runtime(keep_alive: Option<Duration>) -> (Fixture, Sidecar) {
    let fixture = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_dynamic_tools(),
    );
    let rt = Sidecar::with(
        &format!("[[upstreams]]\nid = \"fx\"\nurl = \"{}\"\n", fixture.url),
        Options {
            sse_keep_alive: keep_alive,
            ..Options::default()
        },
    )
    .await;
    (fixture, rt)
}

async fn add_tool(http: &Http, who: &Value, sid: &str, name: &str) {
    let call = Call::post(
        who,
        rpc(
            7,
            "tools/call",
            json!({"name": "add_tool", "arguments": {"name": name}}),
        ),
    )
    .session(sid);
    assert_eq!(http.send(&call).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_get_stream_gets_comments_between_its_events() {
    let (_fixture, rt) = runtime(Some(PERIOD)).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&alice, None).await;
    let mut get = Call::bodyless("GET", &alice, &sid);
    get.accept = Some("text/event-stream".into());
    let response = http.open(&get).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut chunks = read_until(&mut body, COMMENT).await;
    add_tool(&http, &alice, &sid, "fresh").await;
    chunks.extend(read_until(&mut body, b"notifications/tools/list_changed").await);
    // And it goes on once the event passed.
    let after = read_until(&mut body, COMMENT).await;
    whole(&chunks);
    whole(&after);
    let methods: Vec<Value> = messages(&chunks)
        .iter()
        .map(|m| m["method"].clone())
        .collect();
    assert_eq!(methods, [json!("notifications/tools/list_changed")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listen_stream_gets_comments_after_its_acknowledgement() {
    let (_fixture, rt) = runtime(Some(PERIOD)).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let listen = modern(
        &alice,
        3,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    );
    let response = http.open(&listen).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let chunks = read_until(&mut body, COMMENT).await;
    whole(&chunks);
    let first = messages(&chunks);
    assert_eq!(
        first[0]["method"], "notifications/subscriptions/acknowledged",
        "the acknowledgement comes first: {first:?}"
    );
    let sid = http.initialize(&alice, None).await;
    add_tool(&http, &alice, &sid, "fresh").await;
    let rest = read_until(&mut body, b"notifications/tools/list_changed").await;
    whole(&rest);
}

/// Off (`--sse-keep-alive-ms 0`), a silent stream stays silent: what arrives in 5 periods
/// is nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_a_silent_stream_gets_nothing() {
    let (_fixture, rt) = runtime(None).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&alice, None).await;
    let mut get = Call::bodyless("GET", &alice, &sid);
    get.accept = Some("text/event-stream".into());
    let response = http.open(&get).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let got = tokio::time::timeout(PERIOD * 5, body.frame()).await;
    assert!(got.is_err(), "something arrived: {got:?}");
}
