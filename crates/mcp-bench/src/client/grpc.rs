//! The gRPC client: tonic over the runtime's gRPC Unix socket, calling `Invoke` with a typed
//! `RequestEnvelope` the way the Python gateway does in gRPC mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use mcp_runtime_proto::v1 as pb;
use mcp_runtime_proto::v1::mcp_runtime_client::McpRuntimeClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{
    ACCEPT, CallError, PROTOCOL_VERSION, SUBJECT_EMAIL, Workload, check_jsonrpc, initialize_body,
};

/// Largest message either side may send, matching the runtime's default limit plus slack.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024 + 64 * 1024;

/// Opens a channel (one HTTP/2 connection) to the gRPC socket.
///
/// # Errors
///
/// When the socket cannot be reached or the HTTP/2 handshake fails.
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let path: Arc<PathBuf> = Arc::new(socket.to_owned());
    Endpoint::try_from("http://localhost")
        .expect("static URI is valid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = Arc::clone(&path);
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(&*path).await?)) }
        }))
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))
}

fn client(channel: Channel) -> McpRuntimeClient<Channel> {
    McpRuntimeClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The bench's AuthContext: an administrator without team restriction.
#[must_use]
pub fn auth_context() -> pb::AuthContext {
    pb::AuthContext {
        subject_email: SUBJECT_EMAIL.to_owned(),
        is_admin: true,
        team_scope: pb::TeamScope::Unrestricted.into(),
        ..Default::default()
    }
}

/// A POST envelope with the bench's headers, scoped to virtual server `scope` when given;
/// `session_id` is empty only for `initialize`.
#[must_use]
pub fn envelope(scope: Option<&str>, session_id: &str, body: Bytes) -> pb::RequestEnvelope {
    pb::RequestEnvelope {
        method: pb::HttpMethod::Post.into(),
        headers: Some(pb::McpHeaders {
            session_id: session_id.to_owned(),
            protocol_version: PROTOCOL_VERSION.to_owned(),
            accept: ACCEPT.to_owned(),
            last_event_id: String::new(),
            content_type: "application/json".to_owned(),
            empty_headers: Vec::new(),
            params: Vec::new(),
            params_forwarded: false,
        }),
        server_id: scope.unwrap_or_default().to_owned(),
        request_id: String::new(),
        auth: Some(auth_context()),
        body,
    }
}

async fn invoke(
    client: &mut McpRuntimeClient<Channel>,
    envelope: pb::RequestEnvelope,
) -> Result<(u32, Vec<pb::Header>, Bytes), CallError> {
    let resp = client
        .invoke(pb::InvokeRequest {
            envelope: Some(envelope),
        })
        .await
        .map_err(|s| CallError::Transport(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    let head = resp.head.unwrap_or_default();
    Ok((head.http_status, head.headers, resp.body))
}

/// Runs `initialize` and `notifications/initialized` over gRPC, scoped to virtual server
/// `scope` when given; returns the session id from the `mcp-session-id` header of the
/// response head.
///
/// # Errors
///
/// When either call fails or the runtime answers unexpectedly.
pub async fn initialize(socket: &Path, scope: Option<&str>) -> anyhow::Result<String> {
    let mut c = client(connect(socket).await?);
    let body = initialize_body(0);
    let (status, headers, body) = invoke(&mut c, envelope(scope, "", Bytes::from(body))).await?;
    if status != 200 {
        bail!(
            "initialize over gRPC: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    check_jsonrpc(&body, 0).context("initialize over gRPC")?;
    let session = headers
        .into_iter()
        .find(|h| h.name.eq_ignore_ascii_case("mcp-session-id"))
        .context("initialize over gRPC: no mcp-session-id in the response head")?
        .value;
    let note = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let (status, _, body) = invoke(&mut c, envelope(scope, &session, note)).await?;
    if status != 202 {
        bail!(
            "notifications/initialized over gRPC: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(session)
}

/// One worker: a client on a channel (its own, or a clone of a shared one) and the session.
#[derive(Debug)]
pub struct GrpcWorker {
    client: McpRuntimeClient<Channel>,
    session_id: String,
}

impl GrpcWorker {
    /// A worker on `channel` (cloning a channel shares its connection).
    #[must_use]
    pub fn new(channel: Channel, session_id: &str) -> Self {
        Self {
            client: client(channel),
            session_id: session_id.to_owned(),
        }
    }

    /// Invokes one request and checks the answer; returns the response body length.
    ///
    /// # Errors
    ///
    /// [`CallError`] for a non-OK gRPC status, an `http_status` other than 200 or a
    /// non-result body.
    pub async fn call(&mut self, workload: Workload) -> Result<usize, CallError> {
        let id = super::next_request_id();
        let env = envelope(
            workload.scope(),
            &self.session_id,
            Bytes::from(workload.body(id)),
        );
        let (status, _, body) = invoke(&mut self.client, env).await?;
        if status != 200 {
            return Err(CallError::Status(u16::try_from(status).unwrap_or(u16::MAX)));
        }
        check_jsonrpc(&body, id)?;
        Ok(body.len())
    }
}
