//! JSON-RPC 2.0 framing of incoming MCP messages and of the error objects the runtime answers.
//!
//! Incoming bodies are parsed once, shallowly: the envelope fields are read and `params` stays a
//! [`RawValue`] until the method handler needs it, so a large argument is not parsed twice.
//! Error codes are those of JSON-RPC 2.0 (section 5.1) plus the MCP-specific ones used by the
//! official TypeScript SDK (`-32000` bad request, `-32001` session not found and request
//! timeout), so clients see what they see from reference servers. Codes that share a number
//! have one constant per meaning; which fault answers with which code is
//! [`crate::RequestError`]'s table.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// JSON-RPC 2.0: invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0: not a valid request object (also: batches, which MCP 2025-06-18 removed).
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0: the method does not exist or is not available.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC 2.0: invalid method parameters (also unknown tool and prompt, per the MCP spec).
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC 2.0: internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Transport-level bad request (missing session id, unsupported protocol version, unreadable
/// header), as in the MCP TypeScript SDK's streamable HTTP server.
pub const BAD_REQUEST: i64 = -32000;
/// MCP 2026-07-28: a standard header (`Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version`)
/// missing or not matching the body (HTTP 400).
pub const HEADER_MISMATCH: i64 = -32020;
/// MCP 2026-07-28: the request names a protocol version the server does not speak (HTTP 400,
/// `data` lists the supported ones).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// A per-subject limit reached (HTTP 429, e.g. too many open sessions): a transport-level
/// refusal like [`BAD_REQUEST`], with the same number.
pub const LIMIT_REACHED: i64 = -32000;
/// Not found: an unknown, ended or foreign session (the MCP TypeScript SDK's code for it), and
/// likewise an unknown virtual server or path.
pub const NOT_FOUND: i64 = -32001;
/// Missing or undecodable AuthContext. The same number as [`NOT_FOUND`], kept for
/// compatibility with what callers already see; the name says which fault it is.
pub const UNAUTHORIZED: i64 = -32001;
/// An upstream call over the upstream timeout: the MCP TypeScript SDK's `RequestTimeout`
/// (the same number as [`NOT_FOUND`]).
pub const REQUEST_TIMEOUT: i64 = -32001;
/// MCP: resource not found (spec, server/resources, error handling).
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// A parsed incoming message: envelope fields read, `params` left raw.
#[derive(Debug)]
pub enum Incoming {
    /// A request: has `method` and `id`.
    Request {
        /// The request id, any JSON-RPC id (string or number), kept as JSON.
        id: Box<RawValue>,
        /// The method name.
        method: String,
        /// Raw `params`, if present.
        params: Option<Box<RawValue>>,
    },
    /// A notification: `method`, no `id`.
    Notification {
        /// The method name.
        method: String,
        /// Raw `params`, if present.
        params: Option<Box<RawValue>>,
    },
    /// A response to a server-initiated request (`result` or `error`, with `id`): the client's
    /// answer to a request the runtime relayed from an upstream (`crate::server_requests`).
    Response {
        /// The id the runtime gave the request, as the client echoed it (raw JSON).
        id: Box<RawValue>,
        /// Raw `result`, for a success.
        result: Option<Box<RawValue>>,
        /// Raw `error`, for a failure.
        error: Option<Box<RawValue>>,
    },
}

/// Why a body is not a single JSON-RPC message; each maps to one JSON-RPC error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// Not UTF-8 or not JSON.
    #[error("Parse error: {0}")]
    Parse(String),
    /// A JSON array: batching is not supported.
    #[error("Invalid Request: batch arrays are not supported")]
    Batch,
    /// JSON, but not a JSON-RPC 2.0 message.
    #[error("Invalid Request: {0}")]
    Invalid(String),
}

impl FramingError {
    /// The JSON-RPC error code of this error.
    #[must_use]
    pub fn code(&self) -> i64 {
        match self {
            Self::Parse(_) => PARSE_ERROR,
            Self::Batch | Self::Invalid(_) => INVALID_REQUEST,
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    /// Read raw so that `"id": null` counts as present (and invalid), not as absent.
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Parses one JSON-RPC message from a request body.
///
/// # Errors
///
/// [`FramingError::Parse`] for non-UTF-8 or invalid JSON, [`FramingError::Batch`] for an array,
/// [`FramingError::Invalid`] for JSON that is not a JSON-RPC 2.0 request, notification or
/// response.
pub fn parse(body: &[u8]) -> Result<Incoming, FramingError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| FramingError::Parse(format!("body is not UTF-8: {e}")))?;
    let first = text.trim_start().as_bytes().first().copied();
    match first {
        None => return Err(FramingError::Parse("empty body".to_owned())),
        Some(b'[') => {
            // Still reject invalid JSON as a parse error first.
            serde_json::from_str::<&RawValue>(text)
                .map_err(|e| FramingError::Parse(e.to_string()))?;
            return Err(FramingError::Batch);
        }
        Some(b'{') => {}
        Some(_) => {
            serde_json::from_str::<&RawValue>(text)
                .map_err(|e| FramingError::Parse(e.to_string()))?;
            return Err(FramingError::Invalid(
                "a message must be a JSON object".into(),
            ));
        }
    }
    let env: Envelope<'_> = match serde_json::from_str(text) {
        Ok(env) => env,
        Err(e) if e.is_data() => return Err(FramingError::Invalid(e.to_string())),
        Err(e) => return Err(FramingError::Parse(e.to_string())),
    };
    if env.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(FramingError::Invalid("jsonrpc must be \"2.0\"".into()));
    }
    if env.id.as_deref().is_some_and(|id| !valid_id(id)) {
        return Err(FramingError::Invalid(
            "id must be a string or a number".into(),
        ));
    }
    if env.method.is_some() && (env.result.is_some() || env.error.is_some()) {
        return Err(FramingError::Invalid(
            "a message cannot carry both a method and a result or error".into(),
        ));
    }
    match (env.method, env.id) {
        (Some(method), Some(id)) => Ok(Incoming::Request {
            id,
            method,
            params: env.params,
        }),
        (Some(method), None) => Ok(Incoming::Notification {
            method,
            params: env.params,
        }),
        (None, Some(id)) if env.result.is_some() != env.error.is_some() => Ok(Incoming::Response {
            id,
            result: env.result.map(RawValue::to_owned),
            error: env.error.map(RawValue::to_owned),
        }),
        _ => Err(FramingError::Invalid(
            "not a request, notification or response".into(),
        )),
    }
}

/// Whether a request id is valid. MCP: "the ID MUST NOT be null" and is a string or an integer
/// (spec, basic, requests; schema `RequestId = string | integer`), so a number with a fraction
/// (`1.5`) is refused while an integral one written `1.0` or `1e2` is taken. A number must also
/// be representable: `1E400` is JSON by the grammar, but echoed back it is a response many
/// parsers (serde_json among them) refuse (found by the `jsonrpc_parse` fuzz target).
fn valid_id(id: &RawValue) -> bool {
    match id.get().as_bytes().first() {
        // A string must decode: an escaped lone surrogate (`"\uD80b"`) is valid JSON grammar
        // but no Unicode string, and strict parsers (serde_json among them) refuse a response
        // that echoes it (found by the jsonrpc_parse fuzz target).
        Some(b'"') => serde_json::from_str::<String>(id.get()).is_ok(),
        Some(b'-' | b'0'..=b'9') => {
            serde_json::from_str::<serde_json::Number>(id.get()).is_ok_and(|n| {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            })
        }
        _ => false,
    }
}

/// Encodes a JSON-RPC error response. `id` is the raw JSON id, or `None` for `null` (when the
/// request's id could not be read).
#[must_use]
pub fn error_body(id: Option<&RawValue>, code: i64, message: &str) -> Vec<u8> {
    let id: &str = id.map_or("null", RawValue::get);
    let msg = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".to_owned());
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{msg}}}}}"#)
        .into_bytes()
}

/// [`error_body`] with a `data` member (already encoded JSON).
#[must_use]
pub fn error_body_with_data(
    id: Option<&RawValue>,
    code: i64,
    message: &str,
    data: &str,
) -> Vec<u8> {
    let id: &str = id.map_or("null", RawValue::get);
    let msg = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".to_owned());
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{msg},"data":{data}}}}}"#
    )
    .into_bytes()
}

/// Encodes a JSON-RPC success response around an already-encoded `result`.
#[must_use]
pub fn result_body(id: &RawValue, result: &str) -> Vec<u8> {
    response_body(id, "result", result)
}

/// Encodes a JSON-RPC error response around an already-encoded `error` object (an upstream's
/// error, relayed unchanged under the caller's id).
#[must_use]
pub fn raw_error_body(id: &RawValue, error: &str) -> Vec<u8> {
    response_body(id, "error", error)
}

/// The same bytes as [`result_body`] (`member` `result`) or [`raw_error_body`] (`member`
/// `error`), built in the allocation of the upstream message `raw` whose `member` value is
/// `raw[span]`: the message's head is replaced by the caller's and its tail cut, so a result of
/// tens of MiB is not copied into a second buffer.
///
/// # Panics
///
/// When `span` is not inside `raw` or not on character boundaries (it must be the byte range of
/// a value parsed from `raw`, see [`span_in`]).
#[must_use]
pub fn response_body_reusing(
    mut raw: String,
    span: std::ops::Range<usize>,
    id: &RawValue,
    member: &str,
) -> Vec<u8> {
    let head = format!(r#"{{"jsonrpc":"2.0","id":{},"{member}":"#, id.get());
    raw.truncate(span.end);
    raw.push('}');
    raw.replace_range(..span.start, &head);
    raw.into_bytes()
}

/// The byte range of `part` inside `whole`, when `part` is a slice of it (a `&RawValue`
/// borrowed from `whole` by serde_json), else `None`.
#[must_use]
pub fn span_in(whole: &str, part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

/// `{"jsonrpc":"2.0","id":<id>,"<member>":<json>}` from already-encoded parts, in one
/// allocation (results can be tens of MiB).
pub(crate) fn response_body(id: &RawValue, member: &str, json: &str) -> Vec<u8> {
    let id = id.get();
    let mut out = Vec::with_capacity(json.len() + id.len() + member.len() + 24);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"");
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(json.as_bytes());
    out.push(b'}');
    out
}

/// Encodes a JSON-RPC notification.
#[must_use]
pub fn notification_body(method: &str, params: &Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn response_body_reusing_gives_the_bytes_of_result_body() {
        let id = RawValue::from_string(r#""caller-7""#.to_owned()).unwrap();
        for (raw, member) in [
            (
                r#"{"jsonrpc":"2.0","id":12,"result":{"content":[{"type":"text","text":"é"}]}}"#,
                "result",
            ),
            (
                r#"{"result":{"a":[1,2]} ,"id":3,"jsonrpc":"2.0"}"#,
                "result",
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"x"}}  "#,
                "error",
            ),
        ] {
            let parsed: std::collections::HashMap<&str, &RawValue> =
                serde_json::from_str(raw).unwrap();
            let part = parsed[member].get();
            let span = span_in(raw, part).unwrap();
            let expected = super::response_body(&id, member, part);
            assert_eq!(
                response_body_reusing(raw.to_owned(), span, &id, member),
                expected
            );
        }
        assert_eq!(span_in("abc", "abc longer"), None);
    }

    use super::*;

    #[test]
    fn classifies_messages() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Incoming::Request { .. })
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Incoming::Notification { .. })
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Incoming::Response { .. })
        ));
    }

    #[test]
    fn framing_errors_have_their_codes() {
        let code = |b: &[u8]| parse(b).unwrap_err().code();
        assert_eq!(code(b""), PARSE_ERROR);
        assert_eq!(code(b"{not json"), PARSE_ERROR);
        assert_eq!(code(b"\xff\xfe"), PARSE_ERROR);
        assert_eq!(code(b"[]"), INVALID_REQUEST);
        assert_eq!(
            code(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            INVALID_REQUEST
        );
        assert_eq!(code(b"42"), INVALID_REQUEST);
        assert_eq!(code(b"null"), INVALID_REQUEST);
        assert_eq!(
            code(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(code(br#"{"jsonrpc":"2.0","id":1}"#), INVALID_REQUEST);
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"result":{},"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            INVALID_REQUEST
        );
        // Fuzz crash (jsonrpc_parse): an id out of the range of a double was echoed back.
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":-44400.01E7582417,"method":"i"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#),
            INVALID_REQUEST
        );
        // MCP ids are strings or integers: a fraction is refused, an integral spelling is not.
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            INVALID_REQUEST
        );
        for integral in [
            &br#"{"jsonrpc":"2.0","id":1.0,"method":"ping"}"#[..],
            br#"{"jsonrpc":"2.0","id":1e2,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":-3,"method":"ping"}"#,
        ] {
            assert!(parse(integral).is_ok());
        }
        // Fuzz crash (jsonrpc_parse): a string id with an escaped lone surrogate was echoed
        // into a response that serde_json cannot parse.
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":"a\uD80b","method":"tools/list"}"#),
            INVALID_REQUEST
        );
        assert!(parse(br#"{"jsonrpc":"2.0","id":"a\uD83D\uDE00\n","method":"ping"}"#).is_ok());
        assert!(parse(br#"{"jsonrpc":"2.0","id":1.5e3,"method":"ping"}"#).is_ok());
    }

    #[test]
    fn error_body_is_json_rpc() {
        let id = RawValue::from_string("7".into()).unwrap();
        let v: Value = serde_json::from_slice(&error_body(Some(&id), -32601, "x\"y")).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"x\"y"}})
        );
    }
}
