//! The end-to-end client: MCP streamable HTTP to the gateway's public endpoint (or straight to
//! an upstream MCP server), hyper 1 over TCP, one HTTP/1.1 keep-alive connection per worker, a
//! bearer token on every request when the endpoint has one.
//!
//! Each worker opens its own MCP session (`initialize`, then `notifications/initialized`) on
//! its connection (or, split, on a connection of its own that it then drops), sends its
//! measured requests with that session id, and closes the session with `DELETE` at the end of
//! the row. Answers may be `application/json` or `text/event-stream`; for SSE the last
//! `data:` line is the JSON-RPC response. For the `progress` workload the SSE body is read as
//! it arrives and each stamped progress notification's delivery latency is recorded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use tokio::net::TcpStream;

use super::h1::Conn;
use super::{ACCEPT, CallError, PROTOCOL_VERSION, Reply, Workload, check_jsonrpc, initialize_body};

pub(super) async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    Conn::handshake(stream)
        .await
        .context("HTTP/1.1 handshake failed")
}

/// The JSON-RPC message of a response body: the body itself for JSON, the last `data:` line
/// (joined with the `data:` lines of the same event) for `text/event-stream`.
#[must_use]
pub fn jsonrpc_payload<'a>(content_type: Option<&HeaderValue>, body: &'a [u8]) -> &'a [u8] {
    let is_sse = content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return body;
    }
    // Events are separated by blank lines; the response is the last event carrying data. A
    // large result comes as one `data:` line, so the last such line is taken as is.
    body.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let data = line.strip_prefix(b"data:")?;
            Some(data.strip_prefix(b" ").unwrap_or(data))
        })
        .rfind(|d| !d.is_empty())
        .unwrap_or(b"")
}

/// An MCP endpoint: the gateway's (with the bearer token to present) or an upstream's.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `127.0.0.1:PORT` of the server.
    pub addr: SocketAddr,
    /// `Bearer <jwt>`, or `None` for a server without auth (an upstream).
    pub authorization: Option<HeaderValue>,
    /// Paths and tool names of a gateway that names them its own way (ContextForge); `None`:
    /// this project's (`/mcp`, `/servers/{scope}/mcp`, the upstream's tool names).
    pub routes: Option<Arc<Routes>>,
    /// Requests of MCP 2026-07-28: no session, the version and capabilities in each body's
    /// `_meta`, `MCP-Protocol-Version: 2026-07-28` and the `Mcp-Method` / `Mcp-Name` headers.
    pub sessionless: bool,
}

/// The protocol version without sessions (MCP 2026-07-28).
pub const SESSIONLESS_VERSION: &str = "2026-07-28";

/// The `_meta` every request of MCP 2026-07-28 carries (SEP-2575: its version and the
/// client's capabilities, none here).
const SESSIONLESS_META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

/// How a foreign gateway (ContextForge) is addressed: every request goes to a virtual
/// server's path, its tools carry a prefix, and a stateless server opens no session.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// The path of requests without a scope (`/servers/<id>/mcp` of the fixture's tools).
    pub default_path: String,
    /// The path for each scope of [`Workload::scope`] (`tools10`, `tools500`).
    pub scoped: BTreeMap<String, String>,
    /// Put before the tool name of a `tools/call` (ContextForge: `fixture-`).
    pub tool_prefix: String,
}

impl Endpoint {
    /// The gateway at `addr`, presenting `token`.
    ///
    /// # Errors
    ///
    /// When the token is not a valid header value.
    pub fn new(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            authorization: Some(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .context("token is not a header value")?,
            ),
            routes: None,
            sessionless: false,
        })
    }

    /// The same endpoint, spoken to in MCP 2026-07-28 (no session).
    #[must_use]
    pub fn sessionless(self) -> Self {
        Self {
            sessionless: true,
            ..self
        }
    }

    /// A foreign gateway at `addr` (ContextForge), presenting `token`, addressed by `routes`.
    ///
    /// # Errors
    ///
    /// When the token is not a valid header value.
    pub fn foreign(addr: SocketAddr, token: &str, routes: Routes) -> anyhow::Result<Self> {
        Ok(Self {
            routes: Some(Arc::new(routes)),
            ..Self::new(addr, token)?
        })
    }

    /// The body of `workload`'s request with id `id`, the tool name prefixed for a foreign
    /// gateway.
    #[must_use]
    pub fn body(&self, workload: Workload, id: u64) -> String {
        let body = workload.body(id);
        let body = if self.sessionless {
            const PARAMS: &str = r#""params":{"#;
            if body.contains(PARAMS) {
                body.replacen(PARAMS, &format!("{PARAMS}{SESSIONLESS_META},"), 1)
            } else {
                let open = body.strip_suffix('}').unwrap_or(&body);
                format!(r#"{open},"params":{{{SESSIONLESS_META}}}}}"#)
            }
        } else {
            body
        };
        match &self.routes {
            Some(r) if !r.tool_prefix.is_empty() && workload.method() == "tools/call" => {
                const AT: &str = r#""params":{"name":""#;
                body.replacen(AT, &format!("{AT}{}", r.tool_prefix), 1)
            }
            _ => body,
        }
    }

    /// An upstream MCP server at `addr` (path `/mcp`, no auth).
    #[must_use]
    pub fn upstream(addr: SocketAddr) -> Self {
        Self {
            addr,
            authorization: None,
            routes: None,
            sessionless: false,
        }
    }

    /// `/mcp`, or `/servers/{scope}/mcp` for a virtual server (a foreign gateway: its own
    /// paths).
    fn path(&self, scope: Option<&str>) -> String {
        if let Some(r) = &self.routes {
            return scope
                .and_then(|s| r.scoped.get(s))
                .unwrap_or(&r.default_path)
                .clone();
        }
        scope.map_or_else(|| "/mcp".to_owned(), |id| format!("/servers/{id}/mcp"))
    }

    pub(super) fn request(
        &self,
        method: Method,
        scope: Option<&str>,
        session: Option<&HeaderValue>,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri(self.path(scope))
            .header(
                http::header::HOST,
                format!("127.0.0.1:{}", self.addr.port()),
            )
            .header(http::header::ACCEPT, ACCEPT)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                "mcp-protocol-version",
                if self.sessionless {
                    SESSIONLESS_VERSION
                } else {
                    PROTOCOL_VERSION
                },
            );
        if let Some(s) = session {
            b = b.header("mcp-session-id", s.clone());
        }
        if let Some(a) = &self.authorization {
            b = b.header(http::header::AUTHORIZATION, a.clone());
        }
        b.body(Full::new(body))
            .expect("static request parts are valid")
    }
}

/// `GET path` over a fresh connection; returns the status.
///
/// # Errors
///
/// When the address cannot be reached or the exchange fails.
pub async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<StatusCode> {
    Ok(connect(addr).await?.get("127.0.0.1", path).await?.0)
}

/// Opens a session on `conn` (scoped to virtual server `scope` when given): `initialize`
/// with id `id`, then `notifications/initialized`; returns the session id (`None`: a foreign
/// gateway that serves without sessions, ContextForge's stateless default).
async fn open_session(
    conn: &mut Conn,
    endpoint: &Endpoint,
    scope: Option<&str>,
    id: u64,
) -> Result<Option<HeaderValue>, CallError> {
    let (status, headers, body) = conn
        .send(endpoint.request(Method::POST, scope, None, Bytes::from(initialize_body(id))))
        .await?;
    if status != StatusCode::OK {
        return Err(CallError::Response(format!(
            "initialize: status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )));
    }
    let payload = jsonrpc_payload(headers.get(http::header::CONTENT_TYPE), &body);
    check_jsonrpc(payload, id)?;
    let session = match headers.get("mcp-session-id") {
        Some(s) => Some(s.clone()),
        None if endpoint.routes.is_some() => None,
        None => {
            return Err(CallError::Response(
                "initialize: no mcp-session-id header".to_owned(),
            ));
        }
    };
    let note = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let (status, _, body) = conn
        .send(endpoint.request(Method::POST, scope, session.as_ref(), note))
        .await?;
    if status != StatusCode::ACCEPTED {
        return Err(CallError::Response(format!(
            "notifications/initialized: status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )));
    }
    Ok(session)
}

/// The wall clock in nanoseconds since the Unix epoch (what the fixture stamps).
fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The send time in a stamped progress notification's message (`... sent_unix_ns=T"`), when
/// `line` is one.
fn stamp_of(line: &[u8]) -> Option<u128> {
    const KEY: &[u8] = b"sent_unix_ns=";
    if !line.windows(22).any(|w| w == b"notifications/progress") {
        return None;
    }
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = line[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Sends `req` (a `tools/call progress`, [`Workload::Progress`]) on `conn` and reads its SSE
/// answer frame by frame, timing each stamped progress notification on the arrival of the
/// frame that completes its line (the MCP client here, the runtime's HTTP/JSON client in
/// `http.rs`).
///
/// # Errors
///
/// [`CallError`] for a transport failure, a status other than 200, an answer that is not the
/// call's result, or not [`super::PROGRESS_STEPS`] stamped notifications.
pub(crate) async fn read_progress(
    conn: &mut Conn,
    req: Request<Full<Bytes>>,
    id: u64,
) -> Result<Reply, CallError> {
    let (status, headers, mut body) = conn.send_streaming(req).await?;
    if status != StatusCode::OK {
        let _ = body.collect().await;
        return Err(CallError::Status(status.as_u16()));
    }
    let mut all: Vec<u8> = Vec::new();
    let mut scanned = 0;
    let mut latencies = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CallError::Transport(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = unix_ns();
        all.extend_from_slice(&data);
        while let Some(nl) = all[scanned..].iter().position(|&b| b == b'\n') {
            let line = &all[scanned..scanned + nl];
            if let Some(sent) = stamp_of(line) {
                let ns = now.saturating_sub(sent);
                latencies.push(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)));
            }
            scanned += nl + 1;
        }
    }
    check_jsonrpc(
        jsonrpc_payload(headers.get(http::header::CONTENT_TYPE), &all),
        id,
    )?;
    if latencies.len() != super::PROGRESS_STEPS as usize {
        return Err(CallError::Response(format!(
            "{} stamped progress notifications, expected {}",
            latencies.len(),
            super::PROGRESS_STEPS
        )));
    }
    Ok(Reply {
        bytes: all.len(),
        notification_latencies: latencies,
    })
}

/// A connection idle this long is replaced before its next request (uvicorn closes idle
/// keep-alive connections after 5 s).
const IDLE_RECONNECT: Duration = Duration::from_secs(2);

/// One worker: a keep-alive connection to an MCP endpoint and its own MCP session.
#[derive(Debug)]
pub struct McpWorker {
    conn: Conn,
    last_used: std::time::Instant,
    endpoint: Endpoint,
    scope: Option<&'static str>,
    session: Option<HeaderValue>,
    next_id: u64,
}

impl McpWorker {
    /// Connects and opens a session (`initialize`, `notifications/initialized`) on
    /// `/mcp` or, with `scope`, on the virtual server `/servers/{scope}/mcp`.
    ///
    /// # Errors
    ///
    /// When the endpoint cannot be reached or does not open a session.
    pub async fn connect(endpoint: &Endpoint, scope: Option<&'static str>) -> anyhow::Result<Self> {
        Self::open(endpoint, scope, false).await
    }

    /// Like [`McpWorker::connect`], but opens the session on a connection of its own, closes
    /// that one, and sends every later request on a new connection: behind a server with
    /// several worker processes, the session is then used where it was probably not created.
    ///
    /// # Errors
    ///
    /// When the endpoint cannot be reached or does not open a session.
    pub async fn connect_split(
        endpoint: &Endpoint,
        scope: Option<&'static str>,
    ) -> anyhow::Result<Self> {
        Self::open(endpoint, scope, true).await
    }

    async fn open(
        endpoint: &Endpoint,
        scope: Option<&'static str>,
        split: bool,
    ) -> anyhow::Result<Self> {
        let mut conn = connect(endpoint.addr).await?;
        let session = if endpoint.sessionless {
            None
        } else {
            open_session(&mut conn, endpoint, scope, 0)
                .await
                .map_err(|e| anyhow::anyhow!("opening a session on {}: {e}", endpoint.addr))?
        };
        if split {
            drop(conn);
            conn = connect(endpoint.addr).await?;
        }
        Ok(Self {
            conn,
            last_used: std::time::Instant::now(),
            endpoint: endpoint.clone(),
            scope,
            session,
            next_id: 1,
        })
    }

    /// POSTs one request and checks the answer.
    ///
    /// # Errors
    ///
    /// [`CallError`] for a transport failure, a status other than 200 or a non-result body.
    pub async fn call(&mut self, workload: Workload) -> Result<Reply, CallError> {
        let reply = self.call_once(workload).await;
        self.last_used = std::time::Instant::now();
        reply
    }

    async fn call_once(&mut self, workload: Workload) -> Result<Reply, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        // A server closes keep-alive connections idle past its timeout (uvicorn: 5 s; between
        // a row's warm-up and its measured phase, workers wait for the slowest one, 10 s and
        // more with 16 MiB calls). Like httpx's keep-alive expiry, a connection idle for
        // IDLE_RECONNECT or closed is replaced before use, rather than racing the server's
        // close with a request.
        if self.conn.is_closed() || self.last_used.elapsed() > IDLE_RECONNECT {
            self.conn = connect(self.endpoint.addr)
                .await
                .map_err(|e| CallError::Transport(format!("reconnecting: {e:#}")))?;
        }
        if workload == Workload::Session {
            let Some(session) =
                open_session(&mut self.conn, &self.endpoint, self.scope, id).await?
            else {
                return Ok(Reply::default());
            };
            let req =
                self.endpoint
                    .request(Method::DELETE, self.scope, Some(&session), Bytes::new());
            let (status, _, _) = self.conn.send(req).await?;
            if !status.is_success() {
                return Err(CallError::Status(status.as_u16()));
            }
            return Ok(Reply::default());
        }
        let payload = Bytes::from(self.endpoint.body(workload, id));
        let req = self.with_era_headers(
            self.endpoint.request(
                Method::POST,
                self.scope,
                self.session.as_ref(),
                payload.clone(),
            ),
            workload,
        );
        if workload == Workload::Progress {
            return self.call_streaming(req, id).await;
        }
        // The server may close an idle connection just as the request goes out; a request
        // that was never sent is sent again once, on a new connection.
        let (status, headers, body) = match self.conn.send(req).await {
            Err(CallError::NotSent(_)) => {
                self.conn = connect(self.endpoint.addr)
                    .await
                    .map_err(|e| CallError::Transport(format!("reconnecting: {e:#}")))?;
                let req = self.with_era_headers(
                    self.endpoint
                        .request(Method::POST, self.scope, self.session.as_ref(), payload),
                    workload,
                );
                self.conn.send(req).await?
            }
            other => other?,
        };
        if status != StatusCode::OK {
            return Err(CallError::Status(status.as_u16()));
        }
        check_jsonrpc(
            jsonrpc_payload(headers.get(http::header::CONTENT_TYPE), &body),
            id,
        )?;
        Ok(Reply::from(body.len()))
    }

    /// Sends `req` and reads its answer frame by frame ([`read_progress`]).
    /// `req` with MCP 2026-07-28's `Mcp-Method` and `Mcp-Name` when the endpoint speaks it.
    fn with_era_headers(
        &self,
        mut req: Request<Full<Bytes>>,
        workload: Workload,
    ) -> Request<Full<Bytes>> {
        if self.endpoint.sessionless {
            let h = req.headers_mut();
            h.insert("mcp-method", HeaderValue::from_static(workload.method()));
            if let Some(tool) = workload.tool() {
                h.insert("mcp-name", HeaderValue::from_static(tool));
            }
        }
        req
    }

    async fn call_streaming(
        &mut self,
        req: Request<Full<Bytes>>,
        id: u64,
    ) -> Result<Reply, CallError> {
        read_progress(&mut self.conn, req, id).await
    }

    /// Ends the worker's session with `DELETE`; errors are ignored (the row is over).
    pub async fn close(mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let req = self
            .endpoint
            .request(Method::DELETE, self.scope, Some(&session), Bytes::new());
        let _ = self.conn.send(req).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_stamps_are_read_from_notifications_only() {
        let line = br#"data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"message":"step 1 sent_unix_ns=1700000000123456789"}}"#;
        assert_eq!(stamp_of(line), Some(1_700_000_000_123_456_789));
        let result = br#"data: {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"sent_unix_ns=5"}]}}"#;
        assert_eq!(stamp_of(result), None);
    }

    #[test]
    fn a_foreign_gateway_gets_its_own_paths_and_tool_names() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let routes = Routes {
            default_path: "/servers/a/mcp".to_owned(),
            scoped: BTreeMap::from([("tools500".to_owned(), "/servers/b/mcp".to_owned())]),
            tool_prefix: "fixture-".to_owned(),
        };
        let cf = Endpoint::foreign(addr, "t", routes).unwrap();
        assert_eq!(cf.path(None), "/servers/a/mcp");
        assert_eq!(cf.path(Some("tools10")), "/servers/a/mcp");
        assert_eq!(cf.path(Some("tools500")), "/servers/b/mcp");
        let v: serde_json::Value = serde_json::from_str(&cf.body(Workload::Echo(3), 7)).unwrap();
        assert_eq!(v["params"]["name"], "fixture-echo");
        assert_eq!(v["params"]["arguments"]["text"], "xxx");
        assert_eq!(cf.body(Workload::Ping, 1), Workload::Ping.body(1));
        let ours = Endpoint::new(addr, "t").unwrap();
        assert_eq!(ours.path(None), "/mcp");
        assert_eq!(ours.path(Some("tools10")), "/servers/tools10/mcp");
        assert_eq!(ours.body(Workload::Echo(3), 7), Workload::Echo(3).body(7));
    }

    #[test]
    fn sse_payload_is_the_last_data_line() {
        let sse = HeaderValue::from_static("text/event-stream");
        let body = b"event: message\r\ndata: {\"a\":1}\r\n\r\nevent: message\ndata: {\"b\":2}\n\n";
        assert_eq!(jsonrpc_payload(Some(&sse), body), br#"{"b":2}"#);
        let json = HeaderValue::from_static("application/json");
        assert_eq!(jsonrpc_payload(Some(&json), b"{}"), b"{}");
        assert_eq!(jsonrpc_payload(None, b"{}"), b"{}");
    }
}
