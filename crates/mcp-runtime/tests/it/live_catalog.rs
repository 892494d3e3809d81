//! The live catalog: an upstream's `notifications/tools/list_changed` makes the runtime list
//! that upstream again, and each session whose view of the tool list changed (its caller's
//! visibility) gets `notifications/tools/list_changed` on its standalone GET stream. The
//! upstreams are two dynamic fixtures (`add_tool`, `remove_tool`) on loopback ports: one
//! public, one of team `alpha`.

use std::time::Duration;

use crate::sidecar::Sidecar;
use crate::support::*;
use futures::StreamExt;
use mcp_fixture_server::SharedState;
use serde_json::{Value, json};

/// The next message of `events`, which must be a tools `list_changed`.
async fn next_tools_changed(events: &mut Events) {
    let m = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a notification within 10 s")
        .expect("the stream stays open");
    assert_eq!(m["method"], "notifications/tools/list_changed", "{m}");
}

/// The tool names `who` lists in session `sid`.
async fn tool_names(http: &Http, who: &Value, sid: &str) -> Vec<String> {
    let list = http
        .send(&Call::post(who, rpc(7, "tools/list", json!({}))).session(sid))
        .await
        .json();
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Calls tool `name` with `arguments`; returns its first text item.
async fn call(http: &Http, who: &Value, sid: &str, name: &str, arguments: Value) -> String {
    let r = http
        .send(
            &Call::post(
                who,
                rpc(
                    8,
                    "tools/call",
                    json!({"name": name, "arguments": arguments}),
                ),
            )
            .session(sid),
        )
        .await;
    let events = r.events();
    let last = events.last().cloned().unwrap_or_else(|| r.json());
    last["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: {last}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_list_reaches_the_sessions_that_can_see_it() {
    let public = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_dynamic_tools(),
    );
    let team = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_dynamic_tools(),
    );
    let catalog = format!(
        "[[upstreams]]\nid = \"public\"\nurl = \"{}\"\n\n\
         [[upstreams]]\nid = \"team\"\nurl = \"{}\"\nprefix = \"t_\"\nvisibility = \"team\"\nteam = \"alpha\"\n",
        public.url, team.url
    );
    let rt = Sidecar::start(&catalog).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&["alpha"]));
    let bob = auth("bob@example.com", false, Some(&[]));
    let init = http
        .send(&Call::post(&alice, initialize_body()))
        .await
        .json();
    assert_eq!(
        init["result"]["capabilities"]["tools"]["listChanged"], true,
        "{init}"
    );
    let (a, b) = (
        http.initialize(&alice, None).await,
        http.initialize(&bob, None).await,
    );
    let (mut a_events, mut b_events) = (
        standalone(&http, &alice, &a).await,
        standalone(&http, &bob, &b).await,
    );

    // A public upstream's change reaches both; the new tool is listed and callable.
    assert_eq!(
        call(&http, &bob, &b, "add_tool", json!({"name": "fresh"})).await,
        "added tool fresh"
    );
    next_tools_changed(&mut a_events).await;
    next_tools_changed(&mut b_events).await;
    assert!(
        tool_names(&http, &bob, &b)
            .await
            .contains(&"fresh".to_owned())
    );
    assert_eq!(
        call(&http, &bob, &b, "fresh", json!({})).await,
        "added tool fresh"
    );

    // The team upstream's change reaches alice only (bob cannot see it).
    call(&http, &alice, &a, "t_add_tool", json!({"name": "secret"})).await;
    next_tools_changed(&mut a_events).await;
    assert!(
        tool_names(&http, &alice, &a)
            .await
            .contains(&"t_secret".to_owned())
    );
    assert!(
        !tool_names(&http, &bob, &b)
            .await
            .contains(&"t_secret".to_owned())
    );

    // The next public change: bob's next notification is that one (not the team's), so the
    // tool it removed is gone from his list when it arrives.
    call(&http, &bob, &b, "remove_tool", json!({"name": "fresh"})).await;
    next_tools_changed(&mut b_events).await;
    assert!(
        !tool_names(&http, &bob, &b)
            .await
            .contains(&"fresh".to_owned())
    );
    next_tools_changed(&mut a_events).await;
    let names = tool_names(&http, &alice, &a).await;
    assert!(
        names.contains(&"t_secret".to_owned()) && !names.contains(&"fresh".to_owned()),
        "{names:?}"
    );
    // The removed tool is answered as unknown, like any tool that does not exist.
    let gone = http
        .send(
            &Call::post(
                &bob,
                rpc(9, "tools/call", json!({"name": "fresh", "arguments": {}})),
            )
            .session(&b),
        )
        .await;
    assert!(gone.error_code().is_some(), "{:?}", gone.body);
}

/// `GET /catalog/watch` on the HTTP socket, as the `data` of its `catalog` events.
async fn watch_http(http: &Http) -> Events {
    let (mut sender, conn) = http.connect().await;
    let request = hyper::Request::get("/catalog/watch")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let stream = sse_stream::SseStream::new(response.into_body())
        .filter_map(|e| async move {
            let e = e.ok()?;
            assert_eq!(e.event.as_deref(), Some("catalog"));
            e.data.and_then(|d| serde_json::from_str(&d).ok())
        })
        .boxed();
    // The connection task lives as long as the stream is read.
    futures::stream::unfold((stream, conn), |(mut s, c)| async move {
        s.next().await.map(|v| (v, (s, c)))
    })
    .boxed()
}

/// The next item of `events`, within 10 s.
async fn next(events: &mut Events) -> Value {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_watchers_see_each_change_with_its_version() {
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_dynamic_tools(),
    );
    let rt = Sidecar::start(&format!(
        "[[upstreams]]\nid = \"dyn\"\nurl = \"{}\"\n",
        fx.url
    ))
    .await;
    let http = Http::new(&rt.http);
    let mut watch = watch_http(&http).await;
    assert_eq!(
        next(&mut watch).await,
        json!({"version": 1, "cause": null, "upstreams_added": [], "upstreams_removed": [],
               "upstreams_changed": [], "lists": [], "lagged": false})
    );
    #[cfg(feature = "grpc-uds")]
    let mut grpc_watch = {
        let mut c = crate::support::grpc::connect(&rt.grpc).await;
        let mut s = c
            .watch_catalog(mcp_runtime_proto::v1::WatchCatalogRequest {})
            .await
            .expect("WatchCatalog")
            .into_inner();
        let first = s.message().await.expect("message").expect("first");
        assert_eq!((first.version, first.cause, first.lagged), (1, 0, false));
        s
    };
    let bob = auth("bob@example.com", false, Some(&[]));
    let sid = http.initialize(&bob, None).await;
    call(&http, &bob, &sid, "add_tool", json!({"name": "one"})).await;
    assert_eq!(
        next(&mut watch).await,
        json!({"version": 2, "cause": "list_changed", "upstreams_added": [],
               "upstreams_removed": [], "upstreams_changed": ["dyn"], "lists": ["tools"],
               "lagged": false})
    );
    #[cfg(feature = "grpc-uds")]
    {
        let m = tokio::time::timeout(Duration::from_secs(10), grpc_watch.message())
            .await
            .expect("a message within 10 s")
            .expect("message")
            .expect("open");
        assert_eq!(m.version, 2);
        assert_eq!(
            m.cause,
            mcp_runtime_proto::v1::CatalogChangeCause::ListChanged as i32
        );
        assert_eq!(
            (m.upstreams_changed, m.lists),
            (vec!["dyn".to_owned()], vec!["tools".to_owned()])
        );
    }
    // A second watcher starts at the version now.
    let mut late = watch_http(&http).await;
    assert_eq!(next(&mut late).await["version"], 2);
}

/// A stdio MCP server in Python (a real child process of the runtime): tool `grow` lists a
/// new tool `grown` and then sends `notifications/tools/list_changed` on stdout.
const GROWING_SERVER: &str = r#"
import json, sys
tools = [{"name": "grow", "inputSchema": {"type": "object"}}]
def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    m = json.loads(line)
    method, rid = m.get("method"), m.get("id")
    if rid is None:
        continue
    if method == "initialize":
        result = {"protocolVersion": m["params"]["protocolVersion"],
                  "capabilities": {"tools": {"listChanged": True}},
                  "serverInfo": {"name": "growing", "version": "0"}}
    elif method == "tools/list":
        result = {"tools": tools}
    elif method == "tools/call":
        name = m["params"]["name"]
        if name == "grow" and len(tools) == 1:
            tools.append({"name": "grown", "inputSchema": {"type": "object"}})
        result = {"content": [{"type": "text", "text": name}]}
    else:
        result = {}
    send({"jsonrpc": "2.0", "id": rid, "result": result})
    if method == "tools/call" and m["params"]["name"] == "grow":
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_upstreams_list_changed_refreshes_the_catalog() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("growing.py"), GROWING_SERVER).expect("write server");
    let rt = Sidecar::start(&format!(
        "[[upstreams]]\nid = \"growing\"\ntransport = \"stdio\"\ncommand = \"python3\"\n\
         args = [\"growing.py\"]\ncwd = \"{}\"\nprefix = \"g_\"\n",
        dir.path().display()
    ))
    .await;
    let http = Http::new(&rt.http);
    let bob = auth("bob@example.com", false, Some(&[]));
    let sid = http.initialize(&bob, None).await;
    let mut events = standalone(&http, &bob, &sid).await;
    assert_eq!(tool_names(&http, &bob, &sid).await, ["g_grow"]);
    assert_eq!(call(&http, &bob, &sid, "g_grow", json!({})).await, "grow");
    next_tools_changed(&mut events).await;
    assert_eq!(tool_names(&http, &bob, &sid).await, ["g_grow", "g_grown"]);
    assert_eq!(call(&http, &bob, &sid, "g_grown", json!({})).await, "grown");
}
