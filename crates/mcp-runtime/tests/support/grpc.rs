//! A tonic client over the runtime's gRPC socket, speaking in [`Call`]s and [`Reply`]s.

use std::path::Path;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use mcp_runtime_proto::v1 as pb;
use pb::mcp_runtime_client::McpRuntimeClient;
use serde_json::Value;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Call, Reply, initialize_body};

/// A channel to the gRPC socket.
pub async fn channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::try_from("http://localhost")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .expect("connect grpc socket")
}

/// An `McpRuntime` client on the gRPC socket.
pub async fn connect(path: &Path) -> McpRuntimeClient<Channel> {
    McpRuntimeClient::new(channel(path).await)
        .max_decoding_message_size(128 << 20)
        .max_encoding_message_size(128 << 20)
}

/// The protobuf AuthContext of a JSON AuthContext.
pub fn auth(a: &Value) -> pb::AuthContext {
    let teams = a.get("teams").and_then(Value::as_array);
    let (scope, teams) = match teams {
        None => (pb::TeamScope::Unrestricted, vec![]),
        Some(t) if t.is_empty() => (pb::TeamScope::PublicOnly, vec![]),
        Some(t) => (
            pb::TeamScope::Teams,
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
    };
    pb::AuthContext {
        subject_email: a["email"].as_str().unwrap_or_default().to_owned(),
        is_admin: a["is_admin"].as_bool().unwrap_or(false),
        team_scope: scope.into(),
        teams,
        ..Default::default()
    }
}

/// The envelope of a call.
pub fn envelope(call: &Call) -> pb::RequestEnvelope {
    let method = match call.method {
        "POST" => pb::HttpMethod::Post,
        "GET" => pb::HttpMethod::Get,
        "DELETE" => pb::HttpMethod::Delete,
        _ => pb::HttpMethod::Unspecified,
    };
    pb::RequestEnvelope {
        method: method.into(),
        headers: Some(pb::McpHeaders {
            session_id: call.session.clone().unwrap_or_default(),
            protocol_version: call.protocol_version.clone().unwrap_or_default(),
            accept: call.accept.clone().unwrap_or_default(),
            // A header given empty is sent empty (contract 1.1), as a gateway relays it.
            empty_headers: [
                ("mcp-session-id", &call.session),
                ("mcp-protocol-version", &call.protocol_version),
                ("accept", &call.accept),
            ]
            .into_iter()
            .filter(|(_, v)| v.as_deref() == Some(""))
            .map(|(n, _)| n.to_owned())
            .collect(),
            // The Mcp-Param-* headers, as a gateway of contract 1.4 forwards them.
            params: call
                .extra
                .iter()
                .filter(|(n, _)| n.starts_with("mcp-param-"))
                .map(|(n, v)| pb::Header {
                    name: (*n).to_owned(),
                    value: v.clone(),
                })
                .collect(),
            params_forwarded: true,
            ..Default::default()
        }),
        server_id: call.path_server.clone().unwrap_or_default(),
        request_id: String::new(),
        auth: Some(auth(&call.auth)),
        body: call.body.clone(),
    }
}

fn reply(head: Option<pb::ResponseHead>, body: Bytes) -> Reply {
    let head = head.expect("head");
    let get = |n: &str| {
        head.headers
            .iter()
            .find(|h| h.name == n)
            .map(|h| h.value.clone())
    };
    Reply {
        status: head.http_status as u16,
        content_type: get("content-type"),
        session_id: get("mcp-session-id"),
        retry_after: get("retry-after"),
        body,
    }
}

/// Sends a call with `Invoke` (or `CloseSession` for DELETE).
pub async fn send(c: &mut McpRuntimeClient<Channel>, call: &Call) -> Reply {
    if call.method == "DELETE" {
        let r = c
            .close_session(pb::CloseSessionRequest {
                envelope: Some(envelope(call)),
            })
            .await
            .expect("CloseSession")
            .into_inner();
        return reply(r.head, r.body);
    }
    let r = c
        .invoke(pb::InvokeRequest {
            envelope: Some(envelope(call)),
        })
        .await
        .expect("Invoke")
        .into_inner();
    reply(r.head, r.body)
}

/// Sends a call with `InvokeStream`; returns the reply with the events encoded as SSE (by the
/// core's own encoder, as the HTTP adapter does), and the number of stream messages after the
/// head.
pub async fn send_stream(c: &mut McpRuntimeClient<Channel>, call: &Call) -> (Reply, usize) {
    use pb::invoke_stream_response::Part;
    let mut s = c
        .invoke_stream(pb::InvokeStreamRequest {
            envelope: Some(envelope(call)),
        })
        .await
        .expect("InvokeStream")
        .into_inner();
    let mut head = None;
    let mut body = Vec::new();
    let mut parts = 0;
    while let Some(msg) = s.message().await.expect("stream") {
        match msg.part.expect("part") {
            Part::Head(h) => head = Some(h),
            Part::Event(e) => {
                parts += 1;
                let non_empty = |s: String| (!s.is_empty()).then_some(s);
                mcp_runtime_core::SseEvent {
                    id: non_empty(e.id),
                    event: non_empty(e.event),
                    data: e.data,
                    retry: None,
                }
                .encode_into(&mut body);
            }
            Part::BodyChunk(b) => {
                parts += 1;
                body.extend_from_slice(&b);
            }
        }
    }
    (reply(head, Bytes::from(body)), parts)
}

/// Runs `initialize` over gRPC and returns the session id.
pub async fn initialize(
    c: &mut McpRuntimeClient<Channel>,
    auth: &Value,
    server: Option<&str>,
) -> String {
    let mut call = Call::post(auth, initialize_body());
    call.path_server = server.map(str::to_owned);
    let r = send(c, &call).await;
    assert_eq!(r.status, 200);
    r.session_id.expect("mcp-session-id")
}
