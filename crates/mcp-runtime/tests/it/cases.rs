//! The boundary cases shared by the HTTP/JSON semantics test and the parity test, read from
//! the language-neutral vectors in `contract/vectors/boundary.json` (format:
//! `contract/vectors/README.md`), which the Python and TypeScript tests read too: every MCP
//! method the runtime serves, every error case of the streamable HTTP transport, and payloads of
//! 1 KiB, 1 MiB and 20 MiB.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use crate::support::{Call, Reply};

/// The shared vectors file, relative to this crate.
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../contract/vectors/boundary.json"
);

/// One row: a request and what the client must see.
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) call: Call,
    pub(crate) status: u16,
    /// JSON-RPC error code, or `None` for a success (or an empty body).
    pub(crate) code: Option<i64>,
    /// The vector's whole `expect` object: further checks on a success (`result`,
    /// `content_type`, `empty_body`, `sse`).
    pub(crate) expect: Value,
}

/// The parsed vectors file.
fn vectors() -> Value {
    let text = std::fs::read_to_string(VECTORS).expect("read contract/vectors/boundary.json");
    serde_json::from_str(&text).expect("contract/vectors/boundary.json is JSON")
}

/// The request body of a vector: `body` (JSON, compact), `body_text` or `body_base64`, with
/// an optional `fill` (a string of `count` times `char` at a JSON pointer of `body`).
fn body_of(req: &Value) -> Bytes {
    if let Some(b) = req.get("body") {
        let mut b = b.clone();
        if let Some(fill) = req.get("fill") {
            let text = fill["char"]
                .as_str()
                .unwrap()
                .repeat(usize::try_from(fill["count"].as_u64().unwrap()).unwrap());
            *b.pointer_mut(fill["pointer"].as_str().unwrap())
                .expect("fill pointer") = Value::String(text);
        }
        return Bytes::from(b.to_string());
    }
    if let Some(t) = req.get("body_text") {
        return Bytes::from(t.as_str().unwrap().to_owned());
    }
    if let Some(t) = req.get("body_base64") {
        return Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(t.as_str().unwrap())
                .expect("body_base64"),
        );
    }
    Bytes::new()
}

/// The table, for a transport whose live session is `sid` (on `/mcp`) and `scoped`
/// (on `/servers/echo-only/mcp`); `auth` is the vectors' caller (`auth` in the file).
pub(crate) fn table(auth: &Value, sid: &str, scoped: &str) -> Vec<Case> {
    let v = vectors();
    assert_eq!(&v["auth"], auth, "the vectors' caller");
    let default_accept = v["default_accept"].as_str().unwrap().to_owned();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let req = &c["request"];
            let method = match req["method"].as_str().unwrap() {
                "POST" => "POST",
                "GET" => "GET",
                "DELETE" => "DELETE",
                m => panic!("unknown method {m}"),
            };
            let session = match req["session"].as_str().unwrap() {
                "live" => Some(sid.to_owned()),
                "scoped" => Some(scoped.to_owned()),
                "none" => None,
                literal => Some(literal.to_owned()),
            };
            let call = Call {
                method,
                path_server: req
                    .get("server_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                session,
                protocol_version: req
                    .get("protocol_version")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                accept: Some(
                    req.get("accept")
                        .and_then(Value::as_str)
                        .unwrap_or(&default_accept)
                        .to_owned(),
                ),
                auth: auth.clone(),
                body: body_of(req),
                extra: Vec::new(),
            };
            let e = &c["expect"];
            Case {
                name: c["name"].as_str().unwrap().to_owned(),
                call,
                status: u16::try_from(e["status"].as_u64().unwrap()).unwrap(),
                code: e["error_code"].as_i64(),
                expect: e.clone(),
            }
        })
        .collect()
}

/// The vector's further checks: `content_type`, `empty_body`, `result` (JSON pointer checks
/// `equals`, `length` of a string, `array_length`, `names_include`) and `sse`.
fn check_expect(e: &Value, r: &Reply, what: &str) {
    if let Some(ct) = e.get("content_type").and_then(Value::as_str) {
        assert_eq!(r.content_type.as_deref(), Some(ct), "{what}: content type");
    }
    if e.get("empty_body").and_then(Value::as_bool) == Some(true) {
        assert!(r.body.is_empty(), "{what}: body not empty");
    }
    for check in e
        .get("result")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let json = r.json();
        let at = json.pointer(check["pointer"].as_str().unwrap());
        if let Some(want) = check.get("equals") {
            assert_eq!(at, Some(want), "{what}: {check}");
        }
        if let Some(n) = check.get("length").and_then(Value::as_u64) {
            let len = at.and_then(Value::as_str).map_or(0, str::len);
            assert_eq!(len as u64, n, "{what}: {check}");
        }
        if let Some(n) = check.get("array_length").and_then(Value::as_u64) {
            let len = at.and_then(Value::as_array).map_or(0, Vec::len);
            assert_eq!(len as u64, n, "{what}: {check}");
        }
        if let Some(names) = check.get("names_include").and_then(Value::as_array) {
            let have: Vec<&Value> = at
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|t| &t["name"]).collect())
                .unwrap_or_default();
            for n in names {
                assert!(have.contains(&n), "{what}: {n} missing from {have:?}");
            }
        }
    }
    if let Some(sse) = e.get("sse") {
        let text = String::from_utf8_lossy(&r.body);
        let events = r.events();
        let progress: Vec<&Value> = events
            .iter()
            .filter(|e| e["method"] == "notifications/progress")
            .collect();
        assert_eq!(
            progress.len() as u64,
            sse["progress"].as_u64().unwrap(),
            "{what}: {text}"
        );
        assert!(
            progress
                .iter()
                .all(|p| p["params"]["progressToken"] == sse["progress_token"]),
            "{what}: caller's token restored: {text}"
        );
        assert_eq!(
            events.last().unwrap()["id"],
            sse["final_id"],
            "{what}: {text}"
        );
        assert!(
            events
                .iter()
                .position(|e| e["method"] == "notifications/progress")
                .unwrap()
                < events.len() - 1,
            "{what}: progress before the result: {text}"
        );
    }
}

/// Checks a reply against its case.
pub(crate) fn assert_case(case: &Case, r: &Reply, transport: &str) {
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
    check_expect(&case.expect, r, &format!("[{transport}] {}", case.name));
}
