//! Bad input on both adapters, beyond the shared case table (`cases.rs`): deep nesting,
//! huge method names, duplicate keys, bytes that are not UTF-8 inside strings, lone
//! surrogates, requests without an id, responses posted as requests, duplicate in-flight ids
//! and progress tokens of the wrong type. Each gets its status and JSON-RPC code, nothing is
//! executed upstream, no session is minted, and the runtime keeps serving. With `grpc-uds`,
//! raw HTTP/2 faults of the gRPC envelope (malformed protobuf, wrong content-type) too.

use std::time::Duration;

use crate::sidecar::Sidecar;
use crate::support::*;
use bytes::Bytes;
use serde_json::json;

/// One bad body and what it must get: status and JSON-RPC code (`None`: empty body).
struct Bad {
    name: &'static str,
    body: Bytes,
    status: u16,
    code: Option<i64>,
}

fn bad_bodies() -> Vec<Bad> {
    let mut non_utf8 = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":""#.to_vec();
    non_utf8.extend_from_slice(b"\xff\xfe\x80");
    non_utf8.extend_from_slice(br#""}}"#);
    let b = |name, body: &str, status, code| Bad {
        name,
        body: Bytes::from(body.to_owned()),
        status,
        code,
    };
    vec![
        b("empty body", "", 400, Some(-32700)),
        b("whitespace only", " \r\n\t ", 400, Some(-32700)),
        b("{not json", "{not json", 400, Some(-32700)),
        b("a number", "42", 400, Some(-32600)),
        b("null", "null", 400, Some(-32600)),
        b("a string", "\"ping\"", 400, Some(-32600)),
        b("empty array", "[]", 400, Some(-32600)),
        b(
            "batch",
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
            400,
            Some(-32600),
        ),
        b(
            "no id and no method",
            r#"{"jsonrpc":"2.0","params":{}}"#,
            400,
            Some(-32600),
        ),
        b(
            "no jsonrpc member",
            r#"{"id":1,"method":"ping"}"#,
            400,
            Some(-32600),
        ),
        b(
            "jsonrpc 1.0",
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            400,
            Some(-32600),
        ),
        b(
            "jsonrpc as a number",
            r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
            400,
            Some(-32600),
        ),
        b(
            "id is a boolean",
            r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
            400,
            Some(-32600),
        ),
        b(
            "id is an array",
            r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
            400,
            Some(-32600),
        ),
        b(
            "id out of the range of a double (fuzz crash)",
            r#"{"jsonrpc":"2.0","id":-44400.01E7582417,"method":"ping"}"#,
            400,
            Some(-32600),
        ),
        b(
            "string id with an escaped lone surrogate (fuzz crash)",
            r#"{"jsonrpc":"2.0","id":"a\uD80b","method":"ping"}"#,
            400,
            Some(-32600),
        ),
        b(
            "duplicate id key",
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            400,
            Some(-32600),
        ),
        b(
            "duplicate method key",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#,
            400,
            Some(-32600),
        ),
        b(
            "result and error together",
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}"#,
            400,
            Some(-32600),
        ),
        b(
            "10,000 nested arrays as the id",
            &format!(
                r#"{{"jsonrpc":"2.0","method":"ping","id":{}{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
            400,
            Some(-32600),
        ),
        b(
            "10,000 nested arrays unclosed",
            &format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{}"#,
                "[".repeat(10_000)
            ),
            400,
            Some(-32700),
        ),
        b(
            "10,000 nested arrays at the top",
            &"[".repeat(10_000),
            400,
            Some(-32700),
        ),
        b(
            "trailing garbage",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#,
            400,
            Some(-32700),
        ),
        b(
            "two messages",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
            400,
            Some(-32700),
        ),
        Bad {
            name: "non-UTF-8 bytes inside a string",
            body: Bytes::from(non_utf8),
            status: 400,
            code: Some(-32700),
        },
    ]
}

fn check(transport: &str, case: &str, r: &Reply, status: u16, code: Option<i64>) {
    assert_eq!(
        r.status,
        status,
        "[{transport}] {case}: status; body {:.300}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.session_id, None, "[{transport}] {case}: a session minted");
    match code {
        None => assert!(r.body.is_empty(), "[{transport}] {case}: body {:?}", r.body),
        Some(c) => {
            assert_eq!(r.error_code(), Some(c), "[{transport}] {case}: code");
            assert!(
                r.body.len() < 2048,
                "[{transport}] {case}: {} byte error body",
                r.body.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_their_codes_mint_no_session_and_run_nothing() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    #[cfg(feature = "grpc-uds")]
    let mut g = grpc::connect(&rt.grpc).await;
    #[cfg(feature = "grpc-uds")]
    let gsid = grpc::initialize(&mut g, &who, None).await;
    for bad in bad_bodies() {
        // Without a session (as an initialize would come) and within one.
        let fresh = Call::post(&who, bad.body.clone());
        check(
            "http",
            bad.name,
            &http.send(&fresh).await,
            bad.status,
            bad.code,
        );
        let within = fresh.clone().session(&sid);
        check(
            "http+session",
            bad.name,
            &http.send(&within).await,
            bad.status,
            bad.code,
        );
        #[cfg(feature = "grpc-uds")]
        {
            check(
                "grpc",
                bad.name,
                &grpc::send(&mut g, &fresh).await,
                bad.status,
                bad.code,
            );
            let within = fresh.clone().session(&gsid);
            let (r, _) = grpc::send_stream(&mut g, &within).await;
            check("grpc stream+session", bad.name, &r, bad.status, bad.code);
        }
    }
    let (status, health) = http.health().await;
    assert_eq!(status, 200);
    let sessions = if cfg!(feature = "grpc-uds") { 2 } else { 1 };
    assert_eq!(health["open_sessions"], json!(sessions), "sessions minted");
    assert_eq!(http.inflight(&who, &sid).await, 0);
    let ping = http
        .send(&Call::post(&who, rpc(1, "ping", json!({}))).session(&sid))
        .await;
    assert_eq!((ping.status, ping.error_code()), (200, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_framing_with_bad_content_is_answered_and_not_executed() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let post = |body: String| Call::post(&who, Bytes::from(body)).session(&sid);

    // A 1 MiB method name: unknown method, and the name is not echoed back whole.
    let long = "m".repeat(1 << 20);
    let r = http
        .send(&post(format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{long}"}}"#
        )))
        .await;
    check("http", "1 MiB method name", &r, 200, Some(-32601));
    let r = http
        .send(&post(format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{long}","arguments":{{}}}}}}"#
        )))
        .await;
    check("http", "1 MiB tool name", &r, 200, Some(-32602));

    // 10,000 levels of nesting in `params`: valid JSON, skipped without recursion while
    // framing; parsing the arguments of a call stops at serde_json's depth limit (128), so
    // the call is invalid params and never forwarded; a ping ignores its params.
    let deep =
        |open: &str, close: &str| format!("{}1{}", open.repeat(10_000), close.repeat(10_000));
    for nested in [deep("[", "]"), deep(r#"{"a":"#, "}")] {
        let r = http
            .send(&post(format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":{nested}}}}}}}"#
            )))
            .await;
        check("http", "10,000 nested arguments", &r, 200, Some(-32602));
        let r = http
            .send(&post(format!(
                r#"{{"jsonrpc":"2.0","id":3,"method":"ping","params":{{"a":{nested}}}}}"#
            )))
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (200, None),
            "nested ping params"
        );
    }
    // A tools/call without an id is a notification: accepted, never executed.
    let r = http
        .send(&post(
            json!({"jsonrpc":"2.0","method":"tools/call","params":{"name":"sleep","arguments":{"ms":30_000}}})
                .to_string(),
        ))
        .await;
    check("http", "tools/call without an id", &r, 202, None);
    // A response posted as if it were a request: accepted, nothing runs.
    let r = http
        .send(&post(
            r#"{"jsonrpc":"2.0","id":5,"result":{"content":[]}}"#.into(),
        ))
        .await;
    check("http", "response posted as a request", &r, 202, None);
    // A lone surrogate escape in the arguments: invalid params, not forwarded.
    let r = http
        .send(&post(
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{"text":"\ud800"}}}"#.into(),
        ))
        .await;
    assert_eq!(r.status, 200, "lone surrogate: {:?}", r.body);
    assert_eq!(r.error_code(), Some(-32602), "lone surrogate");
    // Progress tokens must be strings or integers (MCP basic/progress).
    for token in [
        json!(1.5),
        json!(null),
        json!(true),
        json!({"a": 1}),
        json!([1]),
    ] {
        let r = http
            .send(&post(
                json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
                       "params":{"name":"echo","arguments":{"text":"x"},"_meta":{"progressToken": token}}})
                .to_string(),
            ))
            .await;
        check("http", "bad progressToken", &r, 200, Some(-32602));
    }
    for token in [json!("t-1"), json!(42)] {
        let r = http
            .send(&post(
                json!({"jsonrpc":"2.0","id":8,"method":"tools/call",
                       "params":{"name":"echo","arguments":{"text":"x"},"_meta":{"progressToken": token}}})
                .to_string(),
            ))
            .await;
        assert_eq!(
            r.error_code(),
            None,
            "good progressToken {token}: {:?}",
            r.json()
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(http.inflight(&who, &sid).await, 0, "something was executed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_with_an_id_in_flight_is_refused_and_the_first_stays_cancellable() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let sleep = Call::post(
        &who,
        rpc(
            77,
            "tools/call",
            json!({"name": "sleep", "arguments": {"ms": 30_000}}),
        ),
    )
    .session(&sid);
    let first = http.spawn(sleep.clone());
    let mut running = false;
    for _ in 0..250 {
        if http.inflight(&who, &sid).await == 1 {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running, "the first call never reached the upstream");
    let r = http.send(&sleep).await;
    assert_eq!(
        (r.status, r.error_code()),
        (200, Some(-32600)),
        "{:?}",
        r.json()
    );
    assert_eq!(r.json()["id"], json!(77));
    assert_eq!(http.inflight(&who, &sid).await, 1, "the duplicate ran");
    // The first call is still known by its id: the client's cancel reaches it.
    let cancel = Call::post(
        &who,
        Bytes::from(
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":77}})
                .to_string(),
        ),
    )
    .session(&sid);
    assert_eq!(http.send(&cancel).await.status, 202);
    let r = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("cancelled call answers")
        .unwrap();
    assert_eq!(r.error_code(), Some(-32603));
    for _ in 0..250 {
        if http.inflight(&who, &sid).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream call was not cancelled");
}

#[cfg(feature = "grpc-uds")]
mod raw_grpc {
    //! The gRPC envelope sent as raw HTTP/2 frames, as a broken client would.

    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// Status, grpc-status and grpc-message of one raw unary call.
    async fn raw_call(
        path: &std::path::Path,
        content_type: &str,
        frame: Vec<u8>,
    ) -> (u16, Option<String>, String) {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = hyper::Request::post("http://localhost/mcp.runtime.v1.McpRuntime/Invoke")
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(Full::new(Bytes::from(frame)))
            .expect("request");
        let resp = send.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        let mut grpc_status = resp
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut message = resp
            .headers()
            .get("grpc-message")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let collected = resp.into_body().collect().await.expect("body");
        if let Some(t) = collected.trailers() {
            if let Some(v) = t.get("grpc-status") {
                grpc_status = Some(v.to_str().unwrap().to_owned());
            }
            if let Some(v) = t.get("grpc-message") {
                message = v.to_str().unwrap().to_owned();
            }
        }
        (status, grpc_status, message)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8];
        f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_protobuf_and_wrong_content_type_are_refused_without_a_panic() {
        let fx = Fixture::start();
        let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
        let cases: Vec<(&str, &str, Vec<u8>, &[&str])> = vec![
            // grpc-status 3 INVALID_ARGUMENT is the contract; tonic's decoder says 13 INTERNAL.
            (
                "garbage protobuf",
                "application/grpc",
                frame(b"\xff\xff\xff\xff\xff"),
                &["3"],
            ),
            (
                "truncated field",
                "application/grpc",
                frame(b"\x0a\x10\x08"),
                &["3"],
            ),
            (
                "wrong wire type",
                "application/grpc",
                frame(b"\x0d\x00\x00\x00\x00"),
                &["3"],
            ),
            (
                "frame shorter than its length",
                "application/grpc",
                {
                    let mut f = frame(b"\x0a\x00");
                    f[4] = 100;
                    f
                },
                &["3", "13"],
            ),
            (
                "compressed flag without compression",
                "application/grpc",
                {
                    let mut f = frame(b"");
                    f[0] = 1;
                    f
                },
                &["3", "12", "13"],
            ),
        ];
        for (name, ct, f, want) in cases {
            let (status, grpc_status, message) = raw_call(&rt.grpc, ct, f).await;
            assert_eq!(status, 200, "{name}");
            let gs = grpc_status.unwrap_or_else(|| panic!("{name}: no grpc-status"));
            assert!(
                want.contains(&gs.as_str()),
                "{name}: grpc-status {gs} ({message})"
            );
            assert!(!message.is_empty(), "{name}: no message");
        }
        // A wrong content-type is not gRPC: refused (HTTP 415 per the gRPC HTTP/2 spec, or a
        // gRPC error), never served.
        let (status, grpc_status, _) = raw_call(&rt.grpc, "application/json", frame(b"")).await;
        assert!(
            status == 415 || grpc_status.as_deref().is_some_and(|s| s != "0"),
            "wrong content-type served: {status} {grpc_status:?}"
        );
        // Still serving, nothing minted.
        let (status, health) = Http::new(&rt.http).health().await;
        assert_eq!(status, 200);
        assert_eq!(health["open_sessions"], json!(0));
        let mut g = grpc::connect(&rt.grpc).await;
        let who = auth("alice@example.com", false, Some(&[]));
        grpc::initialize(&mut g, &who, None).await;
    }
}
