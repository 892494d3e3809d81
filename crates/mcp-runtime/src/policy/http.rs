//! The Core SPI over HTTP/JSON on the core's Unix socket (reqwest, HTTP/1.1, pooled
//! connections): `POST /v1/resolve-caller`, `POST /v1/invoke-hook`, the NDJSON stream of
//! `GET /v1/watch-policy` (`docs/core-spi.md`). Any answer but 200 (a transport fault of the
//! core), a connection failure or a body that breaks the shapes is [`CoreUnavailable`].

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use mcp_runtime_core::{AuthContext, HookCall, HookDecision, HookPoint};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::cache::Revocation;
use super::{
    CallerQuery, CoreUnavailable, Denial, PolicyConfig, Resolution, ResolveAnswer, WatchEvent,
    WatchStream, point_name,
};
use crate::transport::http::{AuthContextJson, auth_context_wire};

/// The base URL: the host is never resolved, the socket is.
const BASE: &str = "http://localhost";

/// A client of the core's HTTP/JSON socket.
#[derive(Debug, Clone)]
pub(crate) struct HttpCore {
    client: reqwest::Client,
    /// For the watch stream: no overall timeout (it stays open), same socket.
    streaming: reqwest::Client,
}

fn unavailable(e: impl std::fmt::Display) -> CoreUnavailable {
    CoreUnavailable(e.to_string())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResolveIn<'a> {
    authorization: &'a str,
    client_address: &'a str,
    server_id: &'a str,
    request_id: &'a str,
    traceparent: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DenialJson {
    #[serde(default)]
    http_status: u16,
    #[serde(default)]
    www_authenticate: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResolveOut {
    #[serde(default)]
    caller: Option<AuthContextJson>,
    #[serde(default)]
    denial: Option<DenialJson>,
    #[serde(default)]
    cache_max_age_ms: u32,
    #[serde(default)]
    generation: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HookIn<'a> {
    point: &'static str,
    name: &'a str,
    method: &'a str,
    caller: serde_json::Value,
    server_id: &'a str,
    session_id: &'a str,
    request_id: &'a str,
    payload: &'a RawValue,
}

#[derive(Deserialize)]
struct ProceedJson<'a> {
    /// Borrowed from the answer's bytes: the changed payload is a slice of them, not a copy.
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DenyJson {
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct HookOut<'a> {
    #[serde(default, borrow)]
    proceed: Option<ProceedJson<'a>>,
    #[serde(default)]
    deny: Option<DenyJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookRegistrationJson {
    point: String,
    name: String,
}

#[derive(Deserialize)]
struct SnapshotJson {
    #[serde(default)]
    hooks: Vec<HookRegistrationJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevocationJson {
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    subject_email: Option<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
struct WatchJson {
    #[serde(default)]
    generation: u64,
    #[serde(default)]
    snapshot: Option<SnapshotJson>,
    #[serde(default)]
    revocation: Option<RevocationJson>,
}

/// A hook point from its wire name; `None` for a name this runtime does not know.
fn point_of(name: &str) -> Option<HookPoint> {
    match name {
        "pre_invoke" => Some(HookPoint::PreInvoke),
        "post_invoke" => Some(HookPoint::PostInvoke),
        "post_fetch" => Some(HookPoint::PostFetch),
        _ => None,
    }
}

impl HttpCore {
    /// A client of the socket in `config` (reqwest connects lazily).
    pub(crate) fn new(config: &PolicyConfig) -> reqwest::Result<Self> {
        let base = || {
            reqwest::Client::builder()
                .unix_socket(config.socket.as_path())
                .connect_timeout(config.connect_timeout)
                .pool_idle_timeout(std::time::Duration::from_secs(30))
                .no_proxy()
        };
        Ok(Self {
            client: base().timeout(config.request_timeout).build()?,
            streaming: base().build()?,
        })
    }

    /// Sends `POST route` with the JSON `body` and `traceparent` (empty: none) as a header; the
    /// response whatever its status.
    async fn send_json(
        &self,
        route: &str,
        body: Vec<u8>,
        traceparent: &str,
    ) -> Result<reqwest::Response, CoreUnavailable> {
        traced(
            self.client
                .post(format!("{BASE}{route}"))
                .header("content-type", "application/json"),
            traceparent,
        )
        .body(body)
        .send()
        .await
        .map_err(unavailable)
    }

    /// `POST route` with `body` and `traceparent` (empty: none) as a header.
    async fn post(
        &self,
        route: &str,
        body: Vec<u8>,
        traceparent: &str,
    ) -> Result<Bytes, CoreUnavailable> {
        let response = self.send_json(route, body, traceparent).await?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unavailable)?;
        if status != reqwest::StatusCode::OK {
            return Err(CoreUnavailable(format!(
                "{route} answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )));
        }
        Ok(bytes)
    }

    pub(crate) async fn resolve(&self, q: &CallerQuery) -> Result<ResolveAnswer, CoreUnavailable> {
        let body = serde_json::to_vec(&ResolveIn {
            authorization: &q.authorization,
            client_address: &q.client_address,
            server_id: &q.server_id,
            request_id: &q.request_id,
            traceparent: &q.traceparent,
        })
        .map_err(unavailable)?;
        let out: ResolveOut = serde_json::from_slice(
            &self
                .post("/v1/resolve-caller", body, &q.traceparent)
                .await?,
        )
        .map_err(unavailable)?;
        let resolution = match (out.caller, out.denial) {
            (Some(c), None) => Resolution::Allowed(Arc::new(AuthContext::from(c))),
            (None, Some(d)) => Resolution::Denied(Denial {
                http_status: d.http_status,
                www_authenticate: d.www_authenticate,
                reason: d.reason,
            }),
            _ => {
                return Err(CoreUnavailable(
                    "resolve-caller: exactly one of caller and denial expected".to_owned(),
                ));
            }
        };
        Ok(ResolveAnswer {
            resolution,
            cache_max_age_ms: out.cache_max_age_ms,
            generation: out.generation,
        })
    }

    pub(crate) async fn invoke_hook(
        &self,
        call: &HookCall<'_>,
        traceparent: &str,
    ) -> Result<HookDecision, CoreUnavailable> {
        let payload: &RawValue = serde_json::from_slice(&call.payload).map_err(unavailable)?;
        let body = serde_json::to_vec(&HookIn {
            point: point_name(call.point),
            name: call.name,
            method: call.method,
            caller: auth_context_wire(call.caller),
            server_id: call.server_id.unwrap_or_default(),
            session_id: call.session_id,
            request_id: call.request_id.unwrap_or_default(),
            payload,
        })
        .map_err(unavailable)?;
        let reply = self.post("/v1/invoke-hook", body, traceparent).await?;
        let out: HookOut<'_> = serde_json::from_slice(&reply).map_err(unavailable)?;
        match (out.proceed, out.deny) {
            (Some(p), None) => Ok(HookDecision::Proceed(
                p.payload.map(|raw| reply.slice_ref(raw.get().as_bytes())),
            )),
            (None, Some(d)) => Ok(HookDecision::Deny {
                code: d.code,
                message: d.message,
            }),
            _ => Err(CoreUnavailable(
                "invoke-hook: exactly one of proceed and deny expected".to_owned(),
            )),
        }
    }

    pub(crate) async fn record_calls(
        &self,
        records: Vec<super::records::Record>,
        dropped: u64,
        traceparent: &str,
    ) -> Result<(), CoreUnavailable> {
        let body = serde_json::to_vec(&serde_json::json!({"records": records, "dropped": dropped}))
            .map_err(unavailable)?;
        let response = self
            .send_json("/v1/record-calls", body, traceparent)
            .await?;
        match response.status() {
            reqwest::StatusCode::NO_CONTENT | reqwest::StatusCode::OK => Ok(()),
            status => Err(CoreUnavailable(format!("record-calls answered {status}"))),
        }
    }

    pub(crate) async fn watch(&self, watcher: &str) -> Result<WatchStream, CoreUnavailable> {
        let response = self
            .streaming
            .get(format!(
                "{BASE}/v1/watch-policy?watcher={}",
                query_value(watcher)
            ))
            .send()
            .await
            .map_err(unavailable)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(CoreUnavailable(format!(
                "watch-policy answered {}",
                response.status()
            )));
        }
        let body = response.bytes_stream();
        // One event per line; empty lines are keep-alives. A line longer than the message
        // limit, a broken line or the end of the body ends the stream.
        let stream = futures::stream::unfold(
            (body, BytesMut::new(), false),
            |(mut body, mut buf, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                        let line = buf.split_to(pos + 1);
                        if let Some(event) = watch_event(&line) {
                            let failed = event.is_err();
                            return Some((event, (body, buf, failed)));
                        }
                        continue;
                    }
                    let Ok(next) = tokio::time::timeout(WATCH_SILENCE, body.next()).await else {
                        let e = unavailable("watch-policy silent for longer than 3 keep-alives");
                        return Some((Err(e), (body, buf, true)));
                    };
                    match next {
                        Some(Ok(chunk)) if buf.len() + chunk.len() <= MAX_LINE_BYTES => {
                            buf.extend_from_slice(&chunk);
                        }
                        Some(Ok(_)) => {
                            let e = unavailable("watch-policy line over the message limit");
                            return Some((Err(e), (body, buf, true)));
                        }
                        Some(Err(e)) => return Some((Err(unavailable(e)), (body, buf, true))),
                        None => return None,
                    }
                }
            },
        );
        Ok(stream.boxed())
    }
}

/// `request` with the `traceparent` header (left out when empty or not a W3C traceparent).
fn traced(request: reqwest::RequestBuilder, traceparent: &str) -> reqwest::RequestBuilder {
    if mcp_runtime_core::runtime::trace_id_of(traceparent).is_some() {
        request.header("traceparent", traceparent)
    } else {
        request
    }
}

/// `value` percent-encoded for a query string (RFC 3986 unreserved characters kept).
fn query_value(value: &str) -> String {
    use std::fmt::Write as _;
    value.bytes().fold(String::new(), |mut s, b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "%{b:02X}");
        }
        s
    })
}

/// Longest silence of the watch stream before it counts as broken: three of the core's 15 s
/// keep-alive lines (a stopped core that keeps its socket open is noticed).
const WATCH_SILENCE: std::time::Duration = std::time::Duration::from_secs(45);

/// Longest line of the watch stream: the Core SPI's message limit.
const MAX_LINE_BYTES: usize = 65 * 1024 * 1024;

/// One line of the watch stream as an event; `None` for an empty (keep-alive) line.
fn watch_event(line: &[u8]) -> Option<Result<WatchEvent, CoreUnavailable>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let w: WatchJson = match serde_json::from_slice(line) {
        Ok(w) => w,
        Err(e) => return Some(Err(unavailable(format!("watch-policy line: {e}")))),
    };
    let generation = w.generation;
    Some(Ok(match (w.snapshot, w.revocation) {
        (Some(s), _) => WatchEvent::Snapshot {
            generation,
            hooks: s
                .hooks
                .into_iter()
                .filter_map(|h| point_of(&h.point).map(|p| (p, h.name)))
                .collect(),
        },
        (None, Some(r)) => WatchEvent::Revoked {
            generation,
            revocation: match (r.token_sha256, r.subject_email, r.all) {
                (Some(t), _, _) => Revocation::TokenSha256(t),
                (None, Some(s), _) => Revocation::Subject(s),
                (None, None, true) => Revocation::All,
                (None, None, false) => return Some(Ok(WatchEvent::Other { generation })),
            },
        },
        (None, None) => WatchEvent::Other { generation },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> Option<WatchEvent> {
        watch_event(line.as_bytes()).map(|e| e.expect("an event"))
    }

    #[test]
    fn watch_lines_become_events() {
        assert!(event("\n").is_none(), "a keep-alive");
        let Some(WatchEvent::Snapshot { generation, hooks }) = event(
            r#"{"generation": 3, "snapshot": {"hooks": [{"point": "pre_invoke", "name": "a", "plugin": "p"}, {"point": "later", "name": "b"}], "generation": 3}}"#,
        ) else {
            panic!("a snapshot");
        };
        assert_eq!(generation, 3);
        assert_eq!(hooks, vec![(HookPoint::PreInvoke, "a".to_owned())]);
        let revoked = |line| match event(line) {
            Some(WatchEvent::Revoked {
                generation,
                revocation,
            }) => Some((generation, revocation)),
            _ => None,
        };
        assert_eq!(
            revoked(r#"{"generation": 4, "revocation": {"tokenSha256": "ab"}}"#),
            Some((4, Revocation::TokenSha256("ab".into())))
        );
        assert_eq!(
            revoked(r#"{"generation": 5, "revocation": {"subjectEmail": "a@x"}}"#),
            Some((5, Revocation::Subject("a@x".into())))
        );
        assert_eq!(
            revoked(r#"{"generation": 6, "revocation": {"all": true}}"#),
            Some((6, Revocation::All))
        );
        assert!(matches!(
            event(r#"{"generation": 7, "visibility": {}}"#),
            Some(WatchEvent::Other { generation: 7 })
        ));
        assert!(watch_event(b"not json\n").is_some_and(|e| e.is_err()));
        assert_eq!(query_value("rt pid/1"), "rt%20pid%2F1");
    }
}
