//! The HTTP/JSON client: hyper 1 over the runtime's HTTP/JSON Unix socket, one HTTP/1.1
//! keep-alive connection per worker, the headers the Python gateway sends
//! (`docs/http-boundary.md`).

use std::path::Path;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use tokio::net::UnixStream;

use super::h1::Conn;
use super::{
    ACCEPT, CallError, PROTOCOL_VERSION, Reply, SUBJECT_EMAIL, Workload, check_jsonrpc,
    initialize_body,
};

/// Header carrying the caller's AuthContext (base64url of its JSON form).
pub const AUTH_CONTEXT_HEADER: &str = "x-contextforge-auth-context";

/// The bench's AuthContext as the HTTP/JSON boundary encodes it: base64url (no padding) of
/// `{"email":"bench@example.com","is_admin":true,"teams":null}`.
#[must_use]
pub fn auth_context_header() -> String {
    let json = format!(r#"{{"email":"{SUBJECT_EMAIL}","is_admin":true,"teams":null}}"#);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

async fn connect(socket: &Path) -> anyhow::Result<Conn> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    Conn::handshake(stream)
        .await
        .context("HTTP/1.1 handshake failed")
}

/// Header naming the virtual server a request is scoped to.
pub const SERVER_ID_HEADER: &str = "x-contextforge-server-id";

/// A POST to `/mcp` with the bench's headers, scoped to virtual server `scope` when given;
/// `session` is `None` only for `initialize`.
fn post(
    auth: &HeaderValue,
    scope: Option<&str>,
    session: Option<&HeaderValue>,
    body: String,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(AUTH_CONTEXT_HEADER, auth.clone())
        .header(http::header::ACCEPT, ACCEPT)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("mcp-protocol-version", PROTOCOL_VERSION);
    if let Some(s) = session {
        b = b.header("mcp-session-id", s.clone());
    }
    if let Some(id) = scope {
        b = b.header(SERVER_ID_HEADER, id);
    }
    b.body(Full::new(Bytes::from(body)))
        .expect("static request parts are valid")
}

/// `GET path` on the socket over a fresh connection; returns the status and body.
///
/// # Errors
///
/// When the socket cannot be reached or the exchange fails.
pub async fn get(socket: &Path, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    connect(socket).await?.get("localhost", path).await
}

/// `POST path` with a JSON `body` on the socket over a fresh connection (the core's admin
/// routes); returns the status and body.
///
/// # Errors
///
/// When the socket cannot be reached, the path is not a URI, or the exchange fails.
pub async fn post_json(
    socket: &Path,
    path: &str,
    body: String,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| anyhow::anyhow!("bad request path {path}: {e}"))?;
    let (status, _, body) = connect(socket).await?.send(req).await?;
    Ok((status, body))
}

/// Runs `initialize` and `notifications/initialized` over HTTP/JSON, scoped to virtual server
/// `scope` when given; returns the session id from the `mcp-session-id` response header.
///
/// # Errors
///
/// When either exchange fails or the runtime answers unexpectedly.
pub async fn initialize(socket: &Path, scope: Option<&str>) -> anyhow::Result<String> {
    let mut conn = connect(socket).await?;
    let auth = HeaderValue::from_str(&auth_context_header()).expect("base64url is a valid header");
    let body = initialize_body(0);
    let (status, headers, body) = conn.send(post(&auth, scope, None, body)).await?;
    if status != StatusCode::OK {
        bail!(
            "initialize over HTTP/JSON: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    check_jsonrpc(&body, 0).context("initialize over HTTP/JSON")?;
    let session = headers
        .get("mcp-session-id")
        .context("initialize over HTTP/JSON: no mcp-session-id header")?
        .clone();
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned();
    let (status, _, body) = conn.send(post(&auth, scope, Some(&session), note)).await?;
    if status != StatusCode::ACCEPTED {
        bail!(
            "notifications/initialized over HTTP/JSON: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(session
        .to_str()
        .context("session id is not ASCII")?
        .to_owned())
}

/// One worker: a keep-alive HTTP/1.1 connection and the headers of the session.
#[derive(Debug)]
pub struct HttpWorker {
    conn: Conn,
    auth: HeaderValue,
    session: HeaderValue,
}

impl HttpWorker {
    /// Opens the worker's connection.
    ///
    /// # Errors
    ///
    /// When the socket cannot be reached or the session id is not a valid header value.
    pub async fn connect(socket: &Path, session_id: &str) -> anyhow::Result<Self> {
        Ok(Self {
            conn: connect(socket).await?,
            auth: HeaderValue::from_str(&auth_context_header())
                .expect("base64url is a valid header"),
            session: HeaderValue::from_str(session_id)
                .context("session id is not a header value")?,
        })
    }

    /// POSTs one request (scoped to [`Workload::scope`]; the worker's session must be of the
    /// same scope) and checks the answer; returns the response body length.
    ///
    /// # Errors
    ///
    /// [`CallError`] for a transport failure, a status other than 200 or a non-result body.
    pub async fn call(&mut self, workload: Workload) -> Result<usize, CallError> {
        let id = super::next_request_id();
        let req = post(
            &self.auth,
            workload.scope(),
            Some(&self.session),
            workload.body(id),
        );
        let (status, _, body) = self.conn.send(req).await?;
        if status != StatusCode::OK {
            return Err(CallError::Status(status.as_u16()));
        }
        check_jsonrpc(&body, id)?;
        Ok(body.len())
    }

    /// POSTs one `tools/call progress` ([`Workload::Progress`]) and reads its SSE answer as it
    /// comes, timing each stamped progress notification (as the end-to-end client does).
    ///
    /// # Errors
    ///
    /// [`CallError`] for a transport failure, a status other than 200, a non-result answer or
    /// missing notifications.
    pub async fn call_progress(&mut self) -> Result<Reply, CallError> {
        let id = super::next_request_id();
        let req = post(
            &self.auth,
            Workload::Progress.scope(),
            Some(&self.session),
            Workload::Progress.body(id),
        );
        super::mcp::read_progress(&mut self.conn, req, id).await
    }
}

/// Workers on several runtimes (replicas sharing one session through Redis), used in turn:
/// each request goes to the next one, as a per-request round-robin balancer would send it.
#[derive(Debug)]
pub struct RoundRobin {
    workers: Vec<HttpWorker>,
    next: usize,
}

impl RoundRobin {
    /// Requests go to `workers` in this order, starting with the first.
    #[must_use]
    pub fn new(workers: Vec<HttpWorker>) -> Self {
        Self { workers, next: 0 }
    }

    /// Sends one request of `workload` to the next runtime ([`HttpWorker::call`], or
    /// [`HttpWorker::call_progress`] for [`Workload::Progress`]).
    ///
    /// # Errors
    ///
    /// As the worker's call; [`CallError::Response`] when there is no worker.
    pub async fn call(&mut self, workload: Workload) -> Result<Reply, CallError> {
        if self.workers.is_empty() {
            return Err(CallError::Response("no runtime to send to".to_owned()));
        }
        let i = self.next % self.workers.len();
        self.next = self.next.wrapping_add(1);
        let w = &mut self.workers[i];
        if workload == Workload::Progress {
            w.call_progress().await
        } else {
            w.call(workload).await.map(Reply::from)
        }
    }
}
