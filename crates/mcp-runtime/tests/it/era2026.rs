//! MCP 2026-07-28 beside 2025-11-25 on the same endpoint: requests without a session
//! (`server/discover`, lists with `ttlMs` and `cacheScope`, calls routed to fixture upstreams,
//! which rmcp lets speak both eras, so the calls reach them as 2026-07-28 requests; an upstream
//! of the test's own that speaks only 2025-11-25, reached through the runtime's session), the
//! standard headers checked before any work (-32020), an unsupported version (-32022), and a
//! 2025 session client served at the same time. Two fixture upstreams: one public, one of team
//! alpha with the prefix `alpha_`.

use crate::sidecar::Sidecar;
use crate::support::*;
use serde_json::{Value, json};

const V2026: &str = "2026-07-28";

fn names(r: &Reply, key: &str) -> Vec<String> {
    let body = r.json();
    body["result"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {body}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn two_upstreams() -> (Fixture, Fixture, Sidecar) {
    let (public, alpha) = (Fixture::start(), Fixture::start());
    let rt = Sidecar::start(&format!(
        "[[upstreams]]\nid = \"public\"\nurl = \"{}\"\n\n[[upstreams]]\nid = \"alpha\"\n\
         url = \"{}\"\nprefix = \"alpha_\"\nvisibility = \"team\"\nteam = \"alpha\"\n",
        public.url, alpha.url
    ))
    .await;
    (public, alpha, rt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_client_is_served_without_a_session() {
    let (_p, _a, rt) = two_upstreams().await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&["alpha"]));
    let bob = auth("bob@example.com", false, Some(&[]));

    // server/discover: every version, the capabilities of what the caller sees.
    let r = http
        .send(&modern(&alice, 1, "server/discover", json!({})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.session_id, None);
    let d = r.json()["result"].clone();
    assert_eq!(d["supportedVersions"][0], V2026, "{d}");
    assert!(
        d["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2025-11-25"))
    );
    assert!(d["capabilities"]["tools"].is_object(), "{d}");
    assert_eq!(d["cacheScope"], "private");
    assert!(d["ttlMs"].is_u64());
    assert_eq!(
        d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcp-runtime"
    );

    // tools/list: merged across the upstreams, filtered by visibility, with cache fields.
    let r = http.send(&modern(&alice, 2, "tools/list", json!({}))).await;
    let seen = names(&r, "tools");
    assert!(seen.contains(&"echo".to_owned()) && seen.contains(&"alpha_echo".to_owned()));
    let list = r.json()["result"].clone();
    assert_eq!(list["cacheScope"], "private", "{list}");
    assert!(list["ttlMs"].is_u64(), "{list}");
    let r = http.send(&modern(&bob, 3, "tools/list", json!({}))).await;
    let seen = names(&r, "tools");
    assert!(seen.contains(&"echo".to_owned()) && !seen.iter().any(|n| n.starts_with("alpha_")));
    for method in ["prompts/list", "resources/list"] {
        let r = http.send(&modern(&bob, 4, method, json!({}))).await;
        assert_eq!(r.json()["result"]["cacheScope"], "private", "{method}");
    }

    // Calls reach the 2025-only upstreams through the runtime's own sessions.
    let r = http
        .send(&modern(
            &alice,
            5,
            "tools/call",
            json!({"name": "alpha_echo", "arguments": {"text": "hi"}}),
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["result"]["content"][0]["text"],
        "hi",
        "{:?}",
        r.body
    );
    // Not visible is not existing, as in a session.
    let r = http
        .send(&modern(
            &bob,
            6,
            "tools/call",
            json!({"name": "alpha_echo", "arguments": {"text": "hi"}}),
        ))
        .await;
    assert_eq!(r.error_code(), Some(-32602));
    // Removed by the revision: ping.
    for (n, method) in ["ping", "initialize"].into_iter().enumerate() {
        let r = http
            .send(&modern(&bob, 7 + n as i64, method, json!({})))
            .await;
        assert_eq!((r.status, r.error_code()), (404, Some(-32601)), "{method}");
    }
    // A read says it may not be cached.
    let r = http
        .send(&modern(
            &bob,
            8,
            "resources/read",
            json!({"uri": "fixture://readme"}),
        ))
        .await;
    let read = r.json()["result"].clone();
    assert_eq!(
        (read["ttlMs"].clone(), read["cacheScope"].clone()),
        (json!(0), json!("private")),
        "{read}"
    );
    // The same id twice at once is fine: no session relates them.
    let slow = |id| {
        modern(
            &alice,
            id,
            "tools/call",
            json!({"name": "sleep", "arguments": {"ms": 200}}),
        )
    };
    let (a, b) = (http.spawn(slow(9)), http.spawn(slow(9)));
    for r in [a.await.unwrap(), b.await.unwrap()] {
        assert_eq!(r.status, 200);
        assert!(r.json()["result"].is_object(), "{:?}", r.body);
    }
    // Nothing was left behind: no session was opened.
    assert_eq!(http.health().await.1["open_sessions"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_checked_before_any_work() {
    let (_p, _a, rt) = two_upstreams().await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&["alpha"]));
    let echo = json!({"name": "echo", "arguments": {"text": "x"}});
    let check = |r: &Reply, status: u16, code: i64| {
        assert_eq!(r.status, status, "{:?}", r.body);
        assert_eq!(r.error_code(), Some(code), "{:?}", r.body);
    };

    // Mcp-Method missing, Mcp-Method not the body's, Mcp-Name not the body's, Mcp-Name missing.
    let mut c = modern(&who, 1, "tools/call", echo.clone());
    c.extra.retain(|(n, _)| *n != "mcp-method");
    check(&http.send(&c).await, 400, -32020);
    let mut c = modern(&who, 1, "tools/call", echo.clone());
    c.extra[0].1 = "tools/list".into();
    check(&http.send(&c).await, 400, -32020);
    let mut c = modern(&who, 1, "tools/call", echo.clone());
    c.extra[1].1 = "sleep".into();
    let r = http.send(&c).await;
    check(&r, 400, -32020);
    assert_eq!(r.json()["id"], 1);
    let mut c = modern(&who, 1, "tools/call", echo.clone());
    c.extra.truncate(1);
    check(&http.send(&c).await, 400, -32020);
    // The header version must be `_meta`'s.
    let mut c = modern(&who, 1, "tools/call", echo.clone());
    c.protocol_version = Some("2025-11-25".into());
    check(&http.send(&c).await, 400, -32020);
    // A version the runtime does not speak.
    let mut c = modern(&who, 1, "tools/list", json!({}));
    c.protocol_version = Some("2099-01-01".into());
    let r = http.send(&c).await;
    check(&r, 400, -32022);
    assert!(r.json()["error"]["data"]["supported"].is_array());
    assert_eq!(r.json()["id"], 1);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2099-01-01",
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let mut c = Call::post(&who, body.to_string()).header("mcp-method", "tools/list");
    c.protocol_version = Some("2099-01-01".into());
    check(&http.send(&c).await, 400, -32022);
    // A 2026-07-28 header without the `_meta` that revision requires.
    let mut c =
        Call::post(&who, rpc(1, "tools/list", json!({}))).header("mcp-method", "tools/list");
    c.protocol_version = Some(V2026.into());
    check(&http.send(&c).await, 400, -32602);
    // No GET stream and no session to end in that revision.
    for method in ["GET", "DELETE"] {
        let mut c = Call::post(&who, bytes::Bytes::new());
        c.method = method;
        c.accept = Some("text/event-stream".into());
        c.protocol_version = Some(V2026.into());
        assert_eq!(http.send(&c).await.status, 405, "{method}");
    }
    // A Base64-wrapped name is the name.
    let mut c = modern(&who, 1, "tools/call", echo.clone());
    c.extra[1].1 = "=?base64?ZWNobw==?=".into();
    assert_eq!(
        http.send(&c).await.json()["result"]["content"][0]["text"],
        "x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2025_session_and_a_2026_client_at_the_same_time() {
    let (_p, _a, rt) = two_upstreams().await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&["alpha"]));
    let sid = http.initialize(&who, None).await;
    // A 2025 call under way while the 2026 client works.
    let old = http.spawn(sleep_call(&who, &sid, 1, 300));
    let new = http.spawn(modern(
        &who,
        1,
        "tools/call",
        json!({"name": "sleep", "arguments": {"ms": 300}}),
    ));
    let listed = http.send(&modern(&who, 2, "tools/list", json!({}))).await;
    assert!(names(&listed, "tools").contains(&"alpha_echo".to_owned()));
    let (old, new) = (old.await.unwrap(), new.await.unwrap());
    assert!(old.json()["result"].is_object(), "{:?}", old.body);
    assert!(old.json()["result"].get("resultType").is_none());
    assert!(new.json()["result"].is_object(), "{:?}", new.body);
    // The 2025 session's list has no cache fields; its ping still works.
    let r = http
        .send(&Call::post(&who, rpc(3, "tools/list", json!({}))).session(&sid))
        .await;
    assert!(r.json()["result"].get("ttlMs").is_none());
    assert!(http.send(&ping(&who, 4, &sid)).await.json()["result"].is_object());
    // The legacy probe still gets "method not found" without `_meta`, so 2026 clients that
    // probe fall back to initialize only where they must.
    let r = http
        .send(&Call::post(&who, rpc(5, "server/discover", json!({}))))
        .await;
    assert_eq!(r.error_code(), Some(-32601));
}

/// Over gRPC the envelope carries no `Mcp-Method` / `Mcp-Name`: the gateway checked them; the
/// runtime serves the request from `_meta` and `MCP-Protocol-Version`.
#[cfg(feature = "grpc-uds")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_request_over_grpc() {
    let (_p, _a, rt) = two_upstreams().await;
    let mut c = crate::support::grpc::connect(&rt.grpc).await;
    let who = auth("alice@example.com", false, Some(&["alpha"]));
    let mut call = modern(
        &who,
        1,
        "tools/call",
        json!({"name": "alpha_echo", "arguments": {"text": "g"}}),
    );
    call.extra.clear();
    let r = crate::support::grpc::send(&mut c, &call).await;
    assert_eq!(
        r.json()["result"]["content"][0]["text"],
        "g",
        "{:?}",
        r.body
    );
    let r =
        crate::support::grpc::send(&mut c, &modern(&who, 2, "server/discover", json!({}))).await;
    assert_eq!(r.json()["result"]["supportedVersions"][0], V2026);
}

/// A tool that asks the client something with a server-to-client request (sampling) during a
/// sessionless call gets no answer from the client: the 2026-07-28 request reaching the
/// fixture has no channel for one (a 2025-only upstream asking in the runtime's session is
/// refused by the runtime: nobody could answer it). The call ends with the tool's own answer,
/// and the client gets no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_request_during_a_sessionless_call_is_refused_to_the_upstream() {
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        mcp_fixture_server::SharedState::new(0).with_conformance(),
    );
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("carol@example.com", false, Some(&[]));
    let mut call = modern(
        &who,
        1,
        "tools/call",
        json!({"name": "test_sampling", "arguments": {"prompt": "x"}}),
    );
    // Even a client that declares sampling cannot be asked without a session.
    let mut body: Value = serde_json::from_slice(&call.body).unwrap();
    body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({"sampling": {}});
    call.body = body.to_string().into();
    let r = http.send(&call).await;
    let answer = r.json();
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    if r.content_type.as_deref() == Some("text/event-stream") {
        assert!(
            r.events().iter().all(|e| e.get("method").is_none()),
            "no request reached the client: {:?}",
            r.events()
        );
    }
}

/// What the upstream of [`session_era_upstream`] saw: requests that named 2026-07-28, and the
/// `_meta` of the calls it served.
#[derive(Default)]
struct OldUpstreamLog {
    sessionless_requests: std::sync::atomic::AtomicUsize,
    call_metas: std::sync::Mutex<Vec<Value>>,
}

/// An upstream of the test's own that speaks only the session era (as an SDK older than
/// 2026-07-28 does): `initialize` opens a session, a request naming 2026-07-28 in its
/// `MCP-Protocol-Version` header is HTTP 400, `tools/call` of `old_echo` echoes its `text`.
/// Returns its URL.
async fn session_era_upstream(log: std::sync::Arc<OldUpstreamLog>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let log = std::sync::Arc::clone(&log);
                async move {
                    let version = headers
                        .get("mcp-protocol-version")
                        .and_then(|v| v.to_str().ok());
                    if version == Some(V2026) {
                        log.sessionless_requests
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return (StatusCode::BAD_REQUEST, "Unsupported protocol version")
                            .into_response();
                    }
                    let id = body["id"].clone();
                    let result = match body["method"].as_str().unwrap_or_default() {
                        "initialize" => json!({
                            "protocolVersion": "2025-11-25",
                            "capabilities": {"tools": {}},
                            "serverInfo": {"name": "old", "version": "1"},
                        }),
                        "tools/list" => json!({"tools": [{
                            "name": "old_echo",
                            "inputSchema": {"type": "object"},
                        }]}),
                        "tools/call" => {
                            log.call_metas
                                .lock()
                                .unwrap()
                                .push(body["params"]["_meta"].clone());
                            let text = body["params"]["arguments"]["text"].clone();
                            json!({"content": [{"type": "text", "text": text}]})
                        }
                        _ if id.is_null() => return StatusCode::ACCEPTED.into_response(),
                        _ => json!({}),
                    };
                    (
                        [("mcp-session-id", "old-session")],
                        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})),
                    )
                        .into_response()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// An upstream that speaks only 2025-11-25 stays reachable from a 2026 client: it is asked
/// `server/discover` once, refuses it, and from then on every sessionless call goes through
/// the runtime's session with it, MCP's reserved `_meta` keys removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_of_the_session_era_serves_a_2026_client_through_the_session() {
    let log = std::sync::Arc::new(OldUpstreamLog::default());
    let url = session_era_upstream(std::sync::Arc::clone(&log)).await;
    let rt = Sidecar::start(&format!("[[upstreams]]\nid = \"old\"\nurl = \"{url}\"\n")).await;
    let http = Http::new(&rt.http);
    let who = auth("dave@example.com", false, Some(&[]));
    for id in 1..=3 {
        let r = http
            .send(&modern(
                &who,
                id,
                "tools/call",
                json!({"name": "old_echo", "arguments": {"text": format!("t{id}")}}),
            ))
            .await;
        let answer = r.json();
        assert_eq!(
            answer["result"]["content"][0]["text"],
            format!("t{id}"),
            "{answer}"
        );
        assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    }
    assert_eq!(
        log.sessionless_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "server/discover is asked once, then remembered"
    );
    for meta in log.call_metas.lock().unwrap().iter() {
        assert!(
            meta.as_object()
                .is_none_or(|m| m.keys().all(|k| !k.starts_with("io.modelcontextprotocol/"))),
            "reserved _meta keys are not sent in the session: {meta}"
        );
    }
}

/// `Mcp-Param-*` headers (SEP-2243): the conformance fixture's `test_custom_headers` marks
/// `region`, `priority` and `verbose` with `x-mcp-header`. The runtime checks the caller's
/// headers against the arguments before any work (400, -32020) and sends them on to the
/// upstream, which checks them again (rmcp): a good call succeeds only if they arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn param_headers_are_checked_and_sent_on() {
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        mcp_fixture_server::SharedState::new(0).with_conformance(),
    );
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    #[cfg(feature = "grpc-uds")]
    let grpc = tokio::sync::Mutex::new(crate::support::grpc::connect(&rt.grpc).await);
    // Over HTTP/JSON, and over gRPC as a gateway of contract 1.4 forwards the headers.
    let send = async |c: &Call| {
        let r = http.send(c).await;
        #[cfg(feature = "grpc-uds")]
        {
            let g = crate::support::grpc::send(&mut *grpc.lock().await, c).await;
            assert_eq!(
                (g.status, g.error_code()),
                (r.status, r.error_code()),
                "gRPC"
            );
        }
        r
    };
    let who = auth("frank@example.com", false, Some(&[]));
    let call = |region: &str, headers: &[(&'static str, &str)]| {
        let mut c = modern(
            &who,
            1,
            "tools/call",
            json!({"name": "test_custom_headers",
                   "arguments": {"region": region, "priority": 3, "verbose": true, "query": "q"}}),
        );
        for (name, value) in headers {
            c = c.header(name, value);
        }
        c
    };
    let good: [(&'static str, &str); 3] = [
        ("mcp-param-region", "eu-west"),
        ("mcp-param-priority", "3"),
        ("mcp-param-verbose", "true"),
    ];
    let r = send(&call("eu-west", &good)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["result"]["isError"], Value::Null, "{:?}", r.body);
    // A value that is not plain ASCII goes base64-wrapped, both ways.
    let wrapped = [
        ("mcp-param-region", "=?base64?w6lzdA==?="),
        ("mcp-param-priority", "3"),
        ("mcp-param-verbose", "true"),
    ];
    let r = send(&call("ést", &wrapped)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for (what, headers) in [
        (
            "missing",
            vec![("mcp-param-priority", "3"), ("mcp-param-verbose", "true")],
        ),
        (
            "different",
            vec![
                ("mcp-param-region", "us-east"),
                ("mcp-param-priority", "3"),
                ("mcp-param-verbose", "true"),
            ],
        ),
        (
            "bad base64",
            vec![
                ("mcp-param-region", "=?base64?ZXUtd2VzdA?="),
                ("mcp-param-priority", "3"),
                ("mcp-param-verbose", "true"),
            ],
        ),
        (
            "number as written",
            vec![
                ("mcp-param-region", "eu-west"),
                ("mcp-param-priority", "3.0"),
                ("mcp-param-verbose", "true"),
            ],
        ),
    ] {
        let r = send(&call("eu-west", &headers)).await;
        assert_eq!(r.status, 400, "{what}: {:?}", r.body);
        assert_eq!(r.error_code(), Some(-32020), "{what}: {:?}", r.body);
    }
}

/// A name that is not plain ASCII reaches a 2026 upstream in `Mcp-Name`'s base64 form (it was
/// once left out, and the upstream refused the call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_name_reaches_a_2026_upstream() {
    use base64::Engine as _;
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        mcp_fixture_server::SharedState::new(0).with_conformance(),
    );
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("heidi@example.com", false, Some(&[]));
    let uri = "test://template/é/data";
    let mut call = modern(&who, 1, "resources/read", json!({"uri": uri}));
    call.extra.retain(|(name, _)| *name != "mcp-name");
    let wrapped = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode(uri)
    );
    let r = http.send(&call.header("mcp-name", &wrapped)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.json()["result"]["contents"].is_array(), "{:?}", r.body);
}

/// `inputResponses` and `requestState` (SEP-2322) only in a 2026 request, of their types; a
/// session call carrying them, or a wrong type, is -32602 and never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_round_trip_members_are_checked() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("ivan@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let in_session = Call::post(
        &who,
        rpc(
            1,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "x"}, "requestState": "s"}),
        ),
    )
    .session(&sid);
    assert_eq!(http.send(&in_session).await.error_code(), Some(-32602));
    for bad in [
        json!({"name": "echo", "arguments": {"text": "x"}, "requestState": {"x": 1}}),
        json!({"name": "echo", "arguments": {"text": "x"}, "inputResponses": [1, 2]}),
    ] {
        let r = http.send(&modern(&who, 2, "tools/call", bad.clone())).await;
        assert_eq!(r.error_code(), Some(-32602), "{bad}: {:?}", r.body);
    }
}
