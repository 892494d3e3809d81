//! Shared fixtures of the integration tests: real processes on real sockets.
//!
//! - [`Fixture`]: the `mcp-fixture-server` binary on a loopback port.
//! - [`RuntimeProc`]: the `mcp-runtime` binary on Unix sockets in a temp dir.
//! - [`Http`]: a hyper HTTP/1.1 client over the runtime's HTTP/JSON socket.
//! - `Grpc` (with `grpc-uds`): a tonic client over the runtime's gRPC socket.
//!
//! Every process is killed when its handle drops, also when a test panics.

#![allow(dead_code, unreachable_pub, clippy::needless_pass_by_value)]

pub mod cases;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::UnixStream;

/// The runtime binary under test.
pub fn runtime_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-runtime"))
}

/// The fixture server binary, built beside the runtime (`cargo build -p mcp-fixture-server`).
pub fn fixture_bin() -> PathBuf {
    let p = runtime_bin().with_file_name("mcp-fixture-server");
    assert!(
        p.exists(),
        "{} is missing: build it first with `cargo build -p mcp-fixture-server` (make test does)",
        p.display()
    );
    p
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fixture upstream MCP server.
pub struct Fixture {
    pub url: String,
    _proc: Proc,
}

impl Fixture {
    /// `127.0.0.1:PORT` of its URL.
    pub fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_owned()
    }

    /// Starts one with `generated` extra tools.
    pub fn start(generated: usize) -> Self {
        let mut child = Command::new(fixture_bin())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--generated-tools",
                &generated.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fixture");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read url");
        let url = line
            .trim()
            .strip_prefix("MCP_FIXTURE_URL=")
            .unwrap_or_else(|| panic!("unexpected fixture output {line:?}"))
            .to_owned();
        Self {
            url,
            _proc: Proc(child),
        }
    }
}

/// A running runtime with its sockets in a temp dir.
pub struct RuntimeProc {
    pub dir: tempfile::TempDir,
    pub http: PathBuf,
    pub grpc: PathBuf,
    pub proc: Option<Proc>,
}

/// A one-upstream catalog with a virtual server exposing `echo` only.
pub fn simple_catalog(url: &str) -> String {
    format!(
        "[[upstreams]]\nid = \"fixture\"\nurl = \"{url}\"\n\n[[servers]]\nid = \"echo-only\"\ntools = [\"echo\"]\n"
    )
}

impl RuntimeProc {
    /// Starts the runtime with `catalog` (TOML) and extra flags; waits until both sockets
    /// answer (the gRPC one only when built with `grpc-uds`).
    pub fn start(catalog: &str, extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rt")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let cat = dir.path().join("catalog.toml");
        std::fs::write(&cat, catalog).expect("write catalog");
        let http = dir.path().join("http.sock");
        let grpc = dir.path().join("grpc.sock");
        let mut cmd = Command::new(runtime_bin());
        cmd.arg("--catalog").arg(&cat).arg("--http-uds").arg(&http);
        if cfg!(feature = "grpc-uds") {
            cmd.arg("--grpc-uds").arg(&grpc);
        }
        cmd.args(extra)
            // TEST_RUNTIME_LOG=debug shows the runtime's log while debugging a test.
            .env(
                "MCP_RUNTIME_LOG",
                std::env::var("TEST_RUNTIME_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stderr(Stdio::inherit());
        let proc = Proc(cmd.spawn().expect("spawn runtime"));
        let rt = Self {
            dir,
            http,
            grpc,
            proc: Some(proc),
        };
        rt.wait_ready();
        rt
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.http.exists() && (!cfg!(feature = "grpc-uds") || self.grpc.exists());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "runtime did not bind its sockets in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let mut p = self.proc.take().expect("running");
        let pid = p.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = p.0.wait().expect("wait");
        std::mem::forget(p);
        status.success()
    }
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

/// One HTTP response, body collected.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub session_id: Option<String>,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (a JSON response, or the last `data:` line of an SSE body).
    pub fn json(&self) -> Value {
        let text = std::str::from_utf8(&self.body).expect("utf8");
        if self.content_type.as_deref() == Some("text/event-stream") {
            let last = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .next_back()
                .expect("an event");
            serde_json::from_str(last).expect("json event")
        } else {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:.200}"))
        }
    }

    /// The JSON-RPC error code, if the body is an error.
    pub fn error_code(&self) -> Option<i64> {
        self.json().pointer("/error/code").and_then(Value::as_i64)
    }
}

/// A request to the runtime, independent of the transport.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    pub path_server: Option<String>,
    pub session: Option<String>,
    pub protocol_version: Option<String>,
    pub accept: Option<String>,
    pub auth: Value,
    pub body: Bytes,
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
        }
    }

    /// Adds a session id.
    pub fn session(mut self, s: &str) -> Self {
        self.session = Some(s.to_owned());
        self
    }

    /// Scopes it to a virtual server.
    pub fn server(mut self, s: &str) -> Self {
        self.path_server = Some(s.to_owned());
        self
    }
}

/// A JSON-RPC request body.
pub fn rpc(id: i64, method: &str, params: Value) -> Bytes {
    Bytes::from(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string())
}

/// The `initialize` body.
pub fn initialize_body() -> Bytes {
    rpc(
        0,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
    )
}

/// HTTP/1.1 over the runtime's Unix socket, one connection per request.
pub struct Http {
    pub path: PathBuf,
}

impl Http {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// A new HTTP/1.1 connection to the socket (its task runs until the sender drops).
    async fn connect(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let stream = UnixStream::connect(&self.path)
            .await
            .expect("connect http socket");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender
    }

    /// Sends a request with an explicit raw auth header value (or none).
    pub async fn send_raw(&self, call: &Call, auth: Option<&str>) -> Reply {
        let mut sender = self.connect().await;
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
        let req = b.body(Full::new(call.body.clone())).expect("request");
        let resp = sender.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        let h = resp.headers();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = get("content-type");
        let session_id = get("mcp-session-id");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            content_type,
            session_id,
            body,
        }
    }

    /// Sends a call with its AuthContext encoded as the boundary requires.
    pub async fn send(&self, call: &Call) -> Reply {
        self.send_raw(call, Some(&auth_header(&call.auth))).await
    }

    /// `GET /health`: the status and the JSON body.
    pub async fn health(&self) -> (u16, Value) {
        let mut sender = self.connect().await;
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
}

#[cfg(feature = "grpc-uds")]
pub mod grpc {
    //! A tonic client over the runtime's gRPC socket.

    use super::*;
    use mcp_runtime_proto::v1 as pb;
    use pb::mcp_runtime_client::McpRuntimeClient;
    use tonic::transport::{Channel, Endpoint, Uri};

    /// Connects to the gRPC socket.
    pub async fn connect(path: &Path) -> McpRuntimeClient<Channel> {
        let path = path.to_path_buf();
        let channel = Endpoint::try_from("http://localhost")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .expect("connect grpc socket");
        McpRuntimeClient::new(channel)
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

    /// Sends a call with `InvokeStream`; returns the reply with the events re-encoded as SSE,
    /// and the number of stream messages after the head.
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
                    mcp_runtime_core_sse(&e, &mut body);
                }
                Part::BodyChunk(b) => {
                    parts += 1;
                    body.extend_from_slice(&b);
                }
            }
        }
        (reply(head, Bytes::from(body)), parts)
    }

    fn mcp_runtime_core_sse(e: &pb::SseEvent, out: &mut Vec<u8>) {
        if !e.id.is_empty() {
            out.extend_from_slice(format!("id: {}\n", e.id).as_bytes());
        }
        if !e.event.is_empty() {
            out.extend_from_slice(format!("event: {}\n", e.event).as_bytes());
        }
        for line in e.data.split('\n') {
            out.extend_from_slice(format!("data: {line}\n").as_bytes());
        }
        out.push(b'\n');
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
}

/// The fixture's count of `sleep` and `progress` calls running (its `inflight` tool),
/// through `http`.
pub async fn inflight(http: &Http, who: &Value, sid: &str) -> i64 {
    let r = http
        .send(
            &Call::post(
                who,
                rpc(
                    900,
                    "tools/call",
                    json!({"name": "inflight", "arguments": {}}),
                ),
            )
            .session(sid),
        )
        .await;
    r.json()
        .pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("inflight: {:?}", r.json()))
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

/// Resident set size (`VmRSS`) of process `pid` in KiB, from `/proc/PID/status`; `None` when
/// the process is gone or the line is missing.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
