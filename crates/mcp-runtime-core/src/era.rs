//! The two protocol eras served side by side on one endpoint: the session era (MCP 2025-03-26
//! to 2025-11-25: `initialize`, `Mcp-Session-Id`) and the sessionless era (MCP 2026-07-28: no
//! session, no `initialize`, `ping` or GET stream; every request carries its protocol version
//! and client capabilities in `_meta`; `Mcp-Method` and `Mcp-Name` headers repeat the body's
//! method and name; `server/discover` is mandatory; lists carry `ttlMs` and `cacheScope`).
//!
//! [`of`] tells which era a request belongs to and checks what that revision requires of it
//! before any work is done; `Runtime::sessionless` (`dispatch.rs`) serves it. The rules follow
//! the specification and rmcp 3.11's server (`streamable_http_server/tower.rs`,
//! `transport/common/mcp_headers.rs`): a request whose `_meta` names
//! `io.modelcontextprotocol/protocolVersion` is of that version, and the `MCP-Protocol-Version`
//! header must equal it (-32020 otherwise); a request with a 2026-07-28 header and no such
//! `_meta` is malformed (-32602, 400); `initialize` is always of the session era.

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::catalog::Kind;
use crate::error::RequestError;
use crate::request::McpHeaders;
use crate::runtime::{PROTOCOL_VERSIONS, SESSIONLESS_PROTOCOL_VERSIONS};

/// `_meta` key of the request's protocol version (MCP 2026-07-28, SEP-2575).
pub(crate) const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client's capabilities (MCP 2026-07-28, SEP-2575).
pub(crate) const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// Prefix of the `_meta` keys MCP reserves for itself: removed from a call's params before it
/// goes to an upstream, which the runtime speaks to in its own session (2025-11-25).
pub(crate) const RESERVED_META_PREFIX: &str = "io.modelcontextprotocol/";

/// How long a list result of the sessionless era may be reused, in milliseconds (`ttlMs`). The
/// catalog changes at run time (an upstream's `list_changed`, a SIGHUP reload: `live.rs`); a
/// 2026 client that holds a `subscriptions/listen` stream hears of it there (`listen.rs`), one
/// that does not has only this hint, so it is short: such a client sees a change within five
/// seconds.
pub(crate) const LIST_TTL_MS: u64 = 5_000;

/// A request of the sessionless era: its protocol version (one of
/// [`SESSIONLESS_PROTOCOL_VERSIONS`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sessionless {
    /// The version it names.
    pub(crate) version: &'static str,
}

/// The part of `params` the era rules read: `_meta` and the routing name.
#[derive(Deserialize, Default)]
struct Head<'a> {
    #[serde(rename = "_meta", default)]
    meta: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    uri: Option<Cow<'a, str>>,
}

/// Which era the request `method` with `params` belongs to: `Some` for the sessionless era
/// (its standard headers checked), `None` for the session era (served as before).
///
/// # Errors
///
/// - [`RequestError::UnsupportedVersion`] (400, -32022) for a `_meta` protocol version the
///   runtime does not speak;
/// - [`RequestError::HeaderMismatch`] (400, -32020) for an `MCP-Protocol-Version` header absent
///   or different from `_meta`'s version, or `Mcp-Method` / `Mcp-Name` missing or different
///   from the body (unless the adapter checked them: `McpHeaders::standard_headers_checked`);
/// - [`RequestError::MissingRequestMeta`] (400, -32602) for a 2026-07-28 header without the
///   `_meta` keys that revision requires.
pub(crate) fn of(
    headers: &McpHeaders,
    method: &str,
    params: Option<&RawValue>,
) -> Result<Option<Sessionless>, RequestError> {
    let header = headers.protocol_version.as_deref();
    if let Some(h) = header
        && is_newer_unknown(h)
    {
        // Answered here, not before the body is read, so the error carries the request's id.
        return Err(RequestError::UnsupportedVersion(h.to_owned()));
    }
    let header_sessionless = header.and_then(sessionless_version);
    if method == "initialize" {
        // The handshake exists only in the session era: named with a sessionless version it
        // is a method that revision removed (`Runtime::sessionless` answers it 404, -32601).
        return Ok(header_sessionless.map(|version| Sessionless { version }));
    }
    // The session era's requests (no 2026-07-28 header, no reserved `_meta` key) are not
    // parsed here: their params are read once, by their method.
    if header_sessionless.is_none()
        && !params.is_some_and(|p| may_name(p.get(), META_PROTOCOL_VERSION))
    {
        return Ok(None);
    }
    // Params that are not an object are the method's own fault, answered as before.
    let head: Head<'_> = params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let meta = head.meta.as_ref();
    let version = match meta.and_then(|m| m.get(META_PROTOCOL_VERSION)) {
        None if header_sessionless.is_none() => return Ok(None),
        None => return Err(missing_meta(meta)),
        Some(Value::String(v)) => v.as_str(),
        Some(_) => return Err(missing_meta(meta)),
    };
    match header {
        None => {
            return Err(RequestError::HeaderMismatch(
                "request _meta protocolVersion requires the MCP-Protocol-Version header".into(),
            ));
        }
        Some(h) if h != version => {
            return Err(RequestError::HeaderMismatch(format!(
                "MCP-Protocol-Version header ({}) does not match request _meta protocolVersion ({})",
                shown(h),
                shown(version)
            )));
        }
        Some(_) => {}
    }
    let Some(version) = sessionless_version(version) else {
        if PROTOCOL_VERSIONS.contains(&version) {
            // A session-era version named in `_meta` too: served as that era.
            return Ok(None);
        }
        return Err(RequestError::UnsupportedVersion(version.to_owned()));
    };
    if !meta
        .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
        .is_some_and(Value::is_object)
    {
        return Err(missing_meta(meta));
    }
    if !headers.standard_headers_checked {
        check_standard_headers(headers, method, &head)?;
    }
    Ok(Some(Sessionless { version }))
}

/// Checks a notification of the sessionless era (a 2026-07-28 `MCP-Protocol-Version`): its
/// `Mcp-Method` must name it. Returns whether it is of that era.
///
/// # Errors
///
/// [`RequestError::HeaderMismatch`] when `Mcp-Method` is missing or names another method.
pub(crate) fn notification_of(headers: &McpHeaders, method: &str) -> Result<bool, RequestError> {
    let sessionless = headers
        .protocol_version
        .as_deref()
        .and_then(sessionless_version)
        .is_some();
    if sessionless && !headers.standard_headers_checked {
        check_method_header(headers, method)?;
    }
    Ok(sessionless)
}

/// Whether raw JSON `text` may hold the string `key`: spelled plainly, or with a `\/` or `\u`
/// escape, which JSON allows anywhere in a string (`io.modelcontextprotocol\/protocolVersion` is
/// how PHP's `json_encode` writes the reserved keys by default). A bytes check that spares the
/// parse of a body that cannot hold it; a false positive costs only that parse.
pub(crate) fn may_name(text: &str, key: &str) -> bool {
    text.contains(key) || text.contains("\\/") || text.contains("\\u")
}

/// `version` as one of [`SESSIONLESS_PROTOCOL_VERSIONS`].
pub(crate) fn sessionless_version(version: &str) -> Option<&'static str> {
    SESSIONLESS_PROTOCOL_VERSIONS
        .iter()
        .copied()
        .find(|v| *v == version)
}

/// Whether an `MCP-Protocol-Version` header the runtime does not speak names a revision newer
/// than the session era's (answered -32022, as the sessionless era answers it) rather than an
/// unknown one (answered as the session era always did).
pub(crate) fn is_newer_unknown(version: &str) -> bool {
    version > PROTOCOL_VERSIONS[0] && sessionless_version(version).is_none()
}

fn missing_meta(meta: Option<&Map<String, Value>>) -> RequestError {
    let version_ok = meta
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .is_some_and(Value::is_string);
    let caps_ok = meta
        .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
        .is_some_and(Value::is_object);
    let missing: Vec<&str> = [
        (!version_ok).then_some(META_PROTOCOL_VERSION),
        (!caps_ok).then_some(META_CLIENT_CAPABILITIES),
    ]
    .into_iter()
    .flatten()
    .collect();
    RequestError::MissingRequestMeta(missing.join(", "))
}

/// A header value without the whitespace around it (RFC 9110 section 5.5: it is not part of
/// the value).
fn ows_trimmed(value: Option<&str>) -> Option<&str> {
    value.map(|v| v.trim_matches([' ', '\t']))
}

fn check_method_header(headers: &McpHeaders, method: &str) -> Result<(), RequestError> {
    match ows_trimmed(headers.mcp_method.as_deref()) {
        None => Err(RequestError::HeaderMismatch(
            "missing required Mcp-Method header".into(),
        )),
        Some(m) if m != method => Err(RequestError::HeaderMismatch(format!(
            "Mcp-Method header `{}` does not match body method `{}`",
            shown(m),
            shown(method)
        ))),
        Some(_) => Ok(()),
    }
}

/// `Mcp-Method` equals the body's method; for a method routed by name (`tools/call`,
/// `prompts/get`: `params.name`; `resources/read`, `completion/complete` has none) `Mcp-Name`
/// equals that name, read plain or in the `=?base64?<standard base64>?=` form.
fn check_standard_headers(
    headers: &McpHeaders,
    method: &str,
    head: &Head<'_>,
) -> Result<(), RequestError> {
    check_method_header(headers, method)?;
    let expected = match Kind::of_call(method) {
        Some(Kind::Tool | Kind::Prompt) => head.name.as_deref(),
        Some(Kind::Resource) => head.uri.as_deref(),
        None => None,
    };
    let Some(expected) = expected else {
        return Ok(());
    };
    let Some(raw) = ows_trimmed(headers.mcp_name.as_deref()) else {
        return Err(RequestError::HeaderMismatch(format!(
            "missing required Mcp-Name header for `{method}`"
        )));
    };
    let decoded = decode_header_value(raw).ok_or_else(|| {
        RequestError::HeaderMismatch("Mcp-Name header is not valid Base64".into())
    })?;
    if decoded != expected {
        return Err(RequestError::HeaderMismatch(format!(
            "Mcp-Name header `{}` does not match body value `{}`",
            shown(&decoded),
            shown(expected)
        )));
    }
    Ok(())
}

/// A header value as sent: plain, or `=?base64?<base64 of UTF-8>?=` (MCP 2026-07-28, standard
/// headers: values that are not plain visible ASCII are sent that way). `None` for a wrapped
/// value that is not base64 of UTF-8.
fn decode_header_value(raw: &str) -> Option<Cow<'_, str>> {
    let Some(inner) = raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Some(Cow::Borrowed(raw));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inner)
        .ok()?;
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// The `x-mcp-header` annotations of a tool's listed JSON (MCP 2026-07-28, SEP-2243): for
/// each argument of its `inputSchema` (nested objects' properties too) whose schema names a
/// header, the argument's path and the header's `<Name>` (of `Mcp-Param-<Name>`). Empty for a
/// tool without any (the common case, found without parsing the tool).
pub(crate) fn param_annotations(tool: &str) -> Vec<(Vec<String>, String)> {
    if !tool.contains("x-mcp-header") {
        return Vec::new();
    }
    let Ok(tool) = serde_json::from_str::<Value>(tool) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(schema) = tool.get("inputSchema") {
        annotations_in(schema, &mut Vec::new(), &mut found);
    }
    found
}

fn annotations_in(schema: &Value, path: &mut Vec<String>, found: &mut Vec<(Vec<String>, String)>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        path.push(name.clone());
        if let Some(header) = property.get("x-mcp-header").and_then(Value::as_str) {
            found.push((path.clone(), header.to_owned()));
        } else {
            annotations_in(property, path, found);
        }
        path.pop();
    }
}

/// The value an argument has in its `Mcp-Param-*` header: a string as it is, a number or a
/// boolean as JSON writes it; `None` for an absent or null argument, or one of another type
/// (no header carries it).
fn param_text(arguments: Option<&Value>, path: &[String]) -> Option<String> {
    let mut v = arguments?;
    for key in path {
        v = v.get(key)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks the caller's `Mcp-Param-*` headers against the call's `arguments` (MCP 2026-07-28,
/// SEP-2243), for a tool with `annotations` ([`param_annotations`]): each annotated argument
/// present in the body must come with its header, equal to it once decoded (plain, or
/// `=?base64?...?=`); a header for an absent argument is refused too.
///
/// # Errors
///
/// [`RequestError::HeaderMismatch`] (400, -32020) naming the header, for a header missing,
/// repeated, not valid base64, or not equal to the argument.
pub(crate) fn check_params(
    sent: &[(String, String)],
    arguments: Option<&Value>,
    annotations: &[(Vec<String>, String)],
) -> Result<(), RequestError> {
    for (path, name) in annotations {
        let header = format!("Mcp-Param-{name}");
        let lower = name.to_ascii_lowercase();
        let mut named = sent.iter().filter(|(n, _)| *n == lower);
        let value = named.next().map(|(_, v)| v.as_str());
        if named.next().is_some() {
            return Err(RequestError::HeaderMismatch(format!(
                "duplicate {header} header"
            )));
        }
        let argument = path.join(".");
        match (ows_trimmed(value), param_text(arguments, path)) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(RequestError::HeaderMismatch(format!(
                    "{header} header for absent or null argument `{}`",
                    shown(&argument)
                )));
            }
            (None, Some(_)) => {
                return Err(RequestError::HeaderMismatch(format!(
                    "missing {header} header for argument `{}`",
                    shown(&argument)
                )));
            }
            (Some(raw), Some(expected)) => {
                let decoded = decode_header_value(raw).ok_or_else(|| {
                    RequestError::HeaderMismatch(format!("{header} header is not valid base64"))
                })?;
                if decoded != expected {
                    return Err(RequestError::HeaderMismatch(format!(
                        "{header} header `{}` does not match argument `{}`",
                        shown(&decoded),
                        shown(&argument)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers of a call with `arguments` to a tool with `annotations`, as the
/// runtime sends them upstream as that call's client (MCP 2026-07-28, SEP-2243): (header name,
/// value); a value that is not plain visible ASCII without surrounding spaces, or that looks
/// like the base64 form itself, goes as `=?base64?<standard base64 of its UTF-8>?=`.
pub(crate) fn param_headers(
    arguments: Option<&Value>,
    annotations: &[(Vec<String>, String)],
) -> Vec<(String, String)> {
    annotations
        .iter()
        .filter_map(|(path, name)| {
            let text = param_text(arguments, path)?;
            Some((format!("Mcp-Param-{name}"), encode_header_value(&text)))
        })
        .collect()
}

/// `text` as a header value of MCP 2026-07-28 (standard headers, `Mcp-Name` and
/// `Mcp-Param-*`): as it is when it is plain visible ASCII without surrounding spaces and does
/// not look like the base64 form itself, else `=?base64?<standard base64 of its UTF-8>?=`.
pub(crate) fn encode_header_value(text: &str) -> String {
    let plain = text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.starts_with("=?base64?");
    if plain {
        text.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
        )
    }
}

/// Longest caller-supplied value echoed in an error message, in characters.
fn shown(s: &str) -> Cow<'_, str> {
    const MAX: usize = 128;
    match s.char_indices().nth(MAX) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}...", &s[..end])),
    }
}

/// Removes the keys MCP reserves (`io.modelcontextprotocol/...`) from a call's `_meta`, and
/// `_meta` itself when nothing else is left: the upstream is spoken to in the runtime's own
/// session, in which they mean nothing (an rmcp upstream would read a 2026-07-28 version there
/// as a header mismatch).
pub(crate) fn strip_reserved_meta(params: &mut Map<String, Value>) {
    let Some(Value::Object(meta)) = params.get_mut("_meta") else {
        return;
    };
    meta.retain(|k, _| !k.starts_with(RESERVED_META_PREFIX));
    if meta.is_empty() {
        params.remove("_meta");
    }
}

/// `result` (an encoded JSON object) with the members every result of the sessionless era's
/// lists carries: `ttlMs` ([`LIST_TTL_MS`]), `cacheScope` `"private"` (what a caller sees is
/// filtered by its visibility) and `resultType` `"complete"`.
pub(crate) fn with_cache_fields(mut result: String) -> String {
    if result.ends_with('}') {
        result.pop();
        let sep = if result.trim_end().ends_with('{') {
            ""
        } else {
            ","
        };
        result.push_str(&format!(
            r#"{sep}"ttlMs":{LIST_TTL_MS},"cacheScope":"private","resultType":"complete"}}"#
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(version: Option<&str>, method: Option<&str>, name: Option<&str>) -> McpHeaders {
        McpHeaders {
            protocol_version: version.map(str::to_owned),
            mcp_method: method.map(str::to_owned),
            mcp_name: name.map(str::to_owned),
            ..McpHeaders::default()
        }
    }

    fn params(v: &Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn meta(version: &str) -> Value {
        serde_json::json!({META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: {}})
    }

    #[test]
    fn a_version_in_meta_is_seen_however_its_key_is_escaped() {
        // The rule's bytes check must not let an escaped key past: without the header (or
        // with a session-era one) it is -32020, as with the key spelled plainly.
        let plain =
            r#"{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#;
        let slash = plain.replace("modelcontextprotocol/", "modelcontextprotocol\\/");
        let unicode = plain.replace("io.model", "\\u0069o.model");
        for body in [plain.to_owned(), slash, unicode] {
            let raw = RawValue::from_string(body.clone()).unwrap();
            for version in [None, Some("2025-11-25")] {
                let h = headers(version, None, None);
                assert!(
                    matches!(
                        of(&h, "tools/call", Some(&raw)),
                        Err(RequestError::HeaderMismatch(_))
                    ),
                    "{body} with {version:?}"
                );
            }
        }
        let text =
            RawValue::from_string(r#"{"name":"echo","arguments":{"text":"a\nb"}}"#.into()).unwrap();
        assert!(
            of(&headers(None, None, None), "tools/call", Some(&text))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn eras_are_told_apart_and_checked() {
        let call = params(&serde_json::json!({"name": "echo", "_meta": meta("2026-07-28")}));
        let h = headers(Some("2026-07-28"), Some("tools/call"), Some("echo"));
        assert!(of(&h, "tools/call", Some(&call)).unwrap().is_some());
        // The session era: no `_meta` version, a 2025 header or none.
        let old = params(&serde_json::json!({"name": "echo"}));
        assert!(
            of(&headers(None, None, None), "tools/call", Some(&old))
                .unwrap()
                .is_none()
        );
        let h25 = headers(Some("2025-11-25"), None, None);
        assert!(of(&h25, "tools/call", Some(&old)).unwrap().is_none());
        assert!(of(&h25, "initialize", Some(&call)).unwrap().is_none());
        assert!(of(&h, "initialize", Some(&call)).unwrap().is_some());
        let code = |r: Result<Option<Sessionless>, RequestError>| r.unwrap_err().code();
        // Mismatches.
        let wrong_name = headers(Some("2026-07-28"), Some("tools/call"), Some("other"));
        assert_eq!(code(of(&wrong_name, "tools/call", Some(&call))), -32020);
        let no_name = headers(Some("2026-07-28"), Some("tools/call"), None);
        assert_eq!(code(of(&no_name, "tools/call", Some(&call))), -32020);
        let wrong_method = headers(Some("2026-07-28"), Some("tools/list"), Some("echo"));
        assert_eq!(code(of(&wrong_method, "tools/call", Some(&call))), -32020);
        assert_eq!(code(of(&h25, "tools/call", Some(&call))), -32020);
        let no_header = headers(None, Some("tools/call"), Some("echo"));
        assert_eq!(code(of(&no_header, "tools/call", Some(&call))), -32020);
        // Whitespace around a value is not part of it; a base64-wrapped name is decoded.
        let spaced = headers(Some("2026-07-28"), Some(" tools/call"), Some("  echo\t"));
        assert!(of(&spaced, "tools/call", Some(&call)).unwrap().is_some());
        let wrapped = headers(
            Some("2026-07-28"),
            Some("tools/call"),
            Some("=?base64?ZWNobw==?="),
        );
        assert!(of(&wrapped, "tools/call", Some(&call)).unwrap().is_some());
        // Versions and `_meta`.
        let future = params(&serde_json::json!({"_meta": meta("2099-01-01")}));
        let hf = headers(Some("2099-01-01"), Some("tools/list"), None);
        assert_eq!(code(of(&hf, "tools/list", Some(&future))), -32022);
        assert_eq!(code(of(&h, "tools/list", None)), -32602);
        // Checked by the adapter's caller: not again.
        let mut trusted = headers(Some("2026-07-28"), None, None);
        trusted.standard_headers_checked = true;
        assert!(of(&trusted, "tools/call", Some(&call)).unwrap().is_some());
    }

    #[test]
    fn param_headers_follow_the_annotations() {
        use serde_json::json;
        let tool = json!({"name": "t", "inputSchema": {"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "opts": {"type": "object", "properties": {"n": {"type": "integer", "x-mcp-header": "N"}}},
            "plain": {"type": "string"}
        }}})
        .to_string();
        let mut found = param_annotations(&tool);
        found.sort();
        assert_eq!(
            found,
            vec![
                (vec!["opts".to_owned(), "n".to_owned()], "N".to_owned()),
                (vec!["region".to_owned()], "Region".to_owned()),
            ]
        );
        assert!(param_annotations(r#"{"name":"t","inputSchema":{}}"#).is_empty());
        let args = json!({"region": " padded", "opts": {"n": 7}, "plain": "x"});
        let mut sent = param_headers(Some(&args), &found);
        sent.sort();
        assert_eq!(
            sent,
            vec![
                ("Mcp-Param-N".to_owned(), "7".to_owned()),
                (
                    "Mcp-Param-Region".to_owned(),
                    "=?base64?IHBhZGRlZA==?=".to_owned()
                ),
            ]
        );
        let looks_wrapped = json!({"region": "=?base64?eA==?="});
        let sent = param_headers(Some(&looks_wrapped), &found);
        assert_eq!(sent[0].1, "=?base64?PT9iYXNlNjQ/ZUE9PT89?=");
        let mut h = vec![
            ("n".to_owned(), "7".to_owned()),
            ("region".to_owned(), " padded".to_owned()),
        ];
        // The surrounding whitespace is not part of the value: " padded" must come wrapped.
        assert!(check_params(&h, Some(&args), &found).is_err());
        h[1].1 = "=?base64?IHBhZGRlZA==?=".to_owned();
        assert!(check_params(&h, Some(&args), &found).is_ok());
        let absent = json!({"opts": {"n": 7}});
        assert!(
            check_params(&h, Some(&absent), &found).is_err(),
            "a header without its argument"
        );
    }

    #[test]
    fn reserved_meta_is_stripped_and_lists_get_cache_fields() {
        let mut p: Map<String, Value> = serde_json::from_value(
            serde_json::json!({"name": "x", "_meta": {META_PROTOCOL_VERSION: "2026-07-28", "progressToken": 1}}),
        )
        .unwrap();
        strip_reserved_meta(&mut p);
        assert_eq!(
            Value::Object(p.clone()),
            serde_json::json!({"name": "x", "_meta": {"progressToken": 1}})
        );
        p["_meta"] = serde_json::json!({META_CLIENT_CAPABILITIES: {}});
        strip_reserved_meta(&mut p);
        assert_eq!(Value::Object(p), serde_json::json!({"name": "x"}));
        let v: Value = serde_json::from_str(&with_cache_fields(r#"{"tools":[]}"#.into())).unwrap();
        assert_eq!(v["ttlMs"], LIST_TTL_MS);
        assert_eq!(v["cacheScope"], "private");
        assert_eq!(v["resultType"], "complete");
    }
}
