//! The table of boundary cases shared by the HTTP/JSON semantics test and the parity test:
//! every MCP method the runtime serves, every error case of the streamable HTTP transport, and
//! payloads of 1 KiB, 1 MiB and 20 MiB.

#![allow(dead_code, unreachable_pub, clippy::needless_pass_by_value)]

use bytes::Bytes;
use serde_json::{Value, json};

use super::{Call, Reply, rpc};

/// One row: a request and what the client must see.
pub struct Case {
    pub name: &'static str,
    pub call: Call,
    pub status: u16,
    /// JSON-RPC error code, or `None` for a success (or an empty body).
    pub code: Option<i64>,
    /// Further checks on a success.
    pub check: Option<fn(&Reply)>,
}

fn text_len(r: &Reply) -> usize {
    r.json()
        .pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .map_or(0, str::len)
}

/// The table, for a transport whose live session is `sid` (on `/mcp`) and `scoped`
/// (on `/servers/echo-only/mcp`).
pub fn table(auth: &Value, sid: &str, scoped: &str) -> Vec<Case> {
    let post = |body: Bytes| Call::post(auth, body).session(sid);
    let mut bad_version = post(rpc(1, "ping", json!({})));
    bad_version.protocol_version = Some("1999-01-01".into());
    let mut good_version = post(rpc(1, "ping", json!({})));
    good_version.protocol_version = Some("2025-06-18".into());
    let mut get_no_accept = post(Bytes::new());
    get_no_accept.method = "GET";
    get_no_accept.accept = Some("application/json".into());
    let ok = |name, call, check| Case {
        name,
        call,
        status: 200,
        code: None,
        check,
    };
    let err = |name, call, status, code| Case {
        name,
        call,
        status,
        code: Some(code),
        check: None,
    };
    vec![
        ok("ping", post(rpc(1, "ping", json!({}))), None),
        ok("ping with a supported protocol version", good_version, None),
        ok(
            "tools/list",
            post(rpc(2, "tools/list", json!({}))),
            Some(|r: &Reply| {
                let names: Vec<String> = r.json()["result"]["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["name"].as_str().unwrap().to_owned())
                    .collect();
                for n in ["echo", "payload", "sleep", "progress"] {
                    assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
                }
            }),
        ),
        ok(
            "tools/call echo",
            post(rpc(
                3,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "hello"}}),
            )),
            Some(|r: &Reply| {
                assert_eq!(
                    r.json().pointer("/result/content/0/text"),
                    Some(&json!("hello"))
                );
            }),
        ),
        ok(
            "tools/call payload 1 KiB",
            post(rpc(
                4,
                "tools/call",
                json!({"name": "payload", "arguments": {"size_bytes": 1024}}),
            )),
            Some(|r: &Reply| assert_eq!(text_len(r), 1024)),
        ),
        ok(
            "tools/call payload 1 MiB",
            post(rpc(
                5,
                "tools/call",
                json!({"name": "payload", "arguments": {"size_bytes": 1 << 20}}),
            )),
            Some(|r: &Reply| assert_eq!(text_len(r), 1 << 20)),
        ),
        ok(
            "tools/call payload 20 MiB",
            post(rpc(
                6,
                "tools/call",
                json!({"name": "payload", "arguments": {"size_bytes": 20 << 20}}),
            )),
            Some(|r: &Reply| assert_eq!(text_len(r), 20 << 20)),
        ),
        ok(
            "tools/call echo 1 MiB argument",
            post(rpc(
                7,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "y".repeat(1 << 20)}}),
            )),
            Some(|r: &Reply| assert_eq!(text_len(r), 1 << 20)),
        ),
        ok(
            "tools/call progress (SSE)",
            post(rpc(
                8,
                "tools/call",
                json!({"name": "progress", "arguments": {"steps": 3, "interval_ms": 5}, "_meta": {"progressToken": "p-1"}}),
            )),
            Some(|r: &Reply| {
                assert_eq!(r.content_type.as_deref(), Some("text/event-stream"));
                let text = std::str::from_utf8(&r.body).unwrap();
                let events: Vec<Value> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .map(|d| serde_json::from_str(d).unwrap())
                    .collect();
                let progress: Vec<&Value> = events
                    .iter()
                    .filter(|e| e["method"] == "notifications/progress")
                    .collect();
                assert_eq!(progress.len(), 3, "{text}");
                assert!(
                    progress
                        .iter()
                        .all(|p| p["params"]["progressToken"] == "p-1"),
                    "caller's token restored: {text}"
                );
                assert_eq!(events.last().unwrap()["id"], 8);
                assert!(
                    events
                        .iter()
                        .position(|e| e["method"] == "notifications/progress")
                        .unwrap()
                        < events.len() - 1
                );
            }),
        ),
        ok(
            "tools/call fail (tool error is a result)",
            post(rpc(
                9,
                "tools/call",
                json!({"name": "fail", "arguments": {"message": "boom"}}),
            )),
            Some(|r: &Reply| {
                assert_eq!(r.json().pointer("/result/isError"), Some(&json!(true)));
            }),
        ),
        ok(
            "resources/list",
            post(rpc(10, "resources/list", json!({}))),
            Some(|r: &Reply| {
                assert_eq!(
                    r.json().pointer("/result/resources/0/uri"),
                    Some(&json!("fixture://readme"))
                );
            }),
        ),
        ok(
            "resources/templates/list",
            post(rpc(11, "resources/templates/list", json!({}))),
            Some(|r: &Reply| {
                assert_eq!(
                    r.json().pointer("/result/resourceTemplates/0/uriTemplate"),
                    Some(&json!("fixture://items/{id}"))
                );
            }),
        ),
        ok(
            "resources/read",
            post(rpc(
                12,
                "resources/read",
                json!({"uri": "fixture://readme"}),
            )),
            Some(|r: &Reply| {
                assert_eq!(
                    r.json().pointer("/result/contents/0/text"),
                    Some(&json!("MCP fixture server"))
                );
            }),
        ),
        ok(
            "resources/read via template",
            post(rpc(
                13,
                "resources/read",
                json!({"uri": "fixture://items/42"}),
            )),
            Some(|r: &Reply| {
                assert_eq!(
                    r.json().pointer("/result/contents/0/text"),
                    Some(&json!("item 42"))
                );
            }),
        ),
        ok(
            "prompts/list",
            post(rpc(14, "prompts/list", json!({}))),
            Some(|r: &Reply| {
                assert_eq!(
                    r.json().pointer("/result/prompts/0/name"),
                    Some(&json!("greet"))
                );
            }),
        ),
        ok(
            "prompts/get",
            post(rpc(
                15,
                "prompts/get",
                json!({"name": "greet", "arguments": {"name": "Ada"}}),
            )),
            Some(|r: &Reply| {
                assert_eq!(
                    r.json().pointer("/result/messages/0/content/text"),
                    Some(&json!("Hello, Ada!"))
                );
            }),
        ),
        ok(
            "tools/list in a virtual server",
            Call::post(auth, rpc(16, "tools/list", json!({})))
                .session(scoped)
                .server("echo-only"),
            Some(|r: &Reply| {
                let tools = r.json()["result"]["tools"].as_array().unwrap().clone();
                assert_eq!(tools.len(), 1);
                assert_eq!(tools[0]["name"], "echo");
            }),
        ),
        Case {
            name: "notification accepted",
            call: post(Bytes::from_static(
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            )),
            status: 202,
            code: None,
            check: Some(|r: &Reply| assert!(r.body.is_empty())),
        },
        Case {
            name: "client response accepted",
            call: post(Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#,
            )),
            status: 202,
            code: None,
            check: Some(|r: &Reply| assert!(r.body.is_empty())),
        },
        err(
            "unknown tool",
            post(rpc(
                20,
                "tools/call",
                json!({"name": "nope", "arguments": {}}),
            )),
            200,
            -32602,
        ),
        err(
            "tool outside the virtual server",
            Call::post(
                auth,
                rpc(
                    21,
                    "tools/call",
                    json!({"name": "payload", "arguments": {"size_bytes": 1}}),
                ),
            )
            .session(scoped)
            .server("echo-only"),
            200,
            -32602,
        ),
        err(
            "unknown prompt",
            post(rpc(22, "prompts/get", json!({"name": "nope"}))),
            200,
            -32602,
        ),
        err(
            "unknown resource",
            post(rpc(23, "resources/read", json!({"uri": "nope://x"}))),
            200,
            -32002,
        ),
        err(
            "tools/call with non-object arguments",
            post(rpc(
                31,
                "tools/call",
                json!({"name": "echo", "arguments": "x"}),
            )),
            200,
            -32602,
        ),
        err(
            "tools/call with a non-object _meta",
            post(rpc(
                32,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "x"}, "_meta": "x"}),
            )),
            200,
            -32602,
        ),
        err(
            "null id",
            post(Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            )),
            400,
            -32600,
        ),
        err(
            "method together with result",
            post(Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":5,"method":"ping","result":{}}"#,
            )),
            400,
            -32600,
        ),
        err(
            "unknown method",
            post(rpc(24, "no/such/method", json!({}))),
            200,
            -32601,
        ),
        err(
            "tools/call without a name",
            post(rpc(25, "tools/call", json!({}))),
            200,
            -32602,
        ),
        err(
            "server/discover probe",
            Call::post(auth, rpc(26, "server/discover", json!({}))),
            200,
            -32601,
        ),
        err(
            "missing session id",
            Call::post(auth, rpc(27, "ping", json!({}))),
            400,
            -32000,
        ),
        err(
            "unknown session id",
            Call::post(auth, rpc(28, "ping", json!({})))
                .session("0123456789abcdef0123456789abcdef"),
            404,
            -32001,
        ),
        err(
            "session of another scope",
            Call::post(auth, rpc(29, "ping", json!({})))
                .session(sid)
                .server("echo-only"),
            404,
            -32001,
        ),
        err(
            "unknown virtual server",
            Call::post(auth, rpc(30, "ping", json!({})))
                .session(sid)
                .server("nope"),
            404,
            -32001,
        ),
        err("invalid protocol version", bad_version, 400, -32000),
        err(
            "batch array",
            post(Bytes::from_static(
                br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            )),
            400,
            -32600,
        ),
        err(
            "invalid JSON",
            post(Bytes::from_static(b"{not json")),
            400,
            -32700,
        ),
        err(
            "non-UTF-8 body",
            post(Bytes::from_static(
                b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}",
            )),
            400,
            -32700,
        ),
        err("empty body", post(Bytes::new()), 400, -32700),
        err(
            "not an object",
            post(Bytes::from_static(b"42")),
            400,
            -32600,
        ),
        err(
            "wrong jsonrpc version",
            post(Bytes::from_static(
                br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            )),
            400,
            -32600,
        ),
        err(
            "no method and no result",
            post(Bytes::from_static(br#"{"jsonrpc":"2.0","id":1}"#)),
            400,
            -32600,
        ),
        Case {
            name: "GET without text/event-stream",
            call: get_no_accept,
            status: 405,
            code: None,
            check: Some(|r: &Reply| assert!(r.body.is_empty())),
        },
    ]
}

/// Checks a reply against its case.
pub fn assert_case(case: &Case, r: &Reply, transport: &str) {
    assert_eq!(
        r.status,
        case.status,
        "[{transport}] {}: status; body {:.300}",
        case.name,
        String::from_utf8_lossy(&r.body)
    );
    match case.code {
        Some(code) => assert_eq!(
            r.error_code(),
            Some(code),
            "[{transport}] {}: code; body {:.300}",
            case.name,
            String::from_utf8_lossy(&r.body)
        ),
        None if !r.body.is_empty() => {
            let v = r.json();
            assert!(
                v.get("error").is_none(),
                "[{transport}] {}: unexpected error {v}",
                case.name
            );
        }
        None => {}
    }
    if let Some(check) = case.check {
        check(r);
    }
}

/// Replaces session ids in a body so two transports' answers compare equal.
pub fn normalise(r: &Reply, sids: &[&str]) -> Reply {
    let mut text = String::from_utf8_lossy(&r.body).into_owned();
    for s in sids {
        text = text.replace(s, "<session>");
    }
    Reply {
        body: Bytes::from(text),
        session_id: r.session_id.as_ref().map(|_| "<session>".into()),
        ..r.clone()
    }
}
