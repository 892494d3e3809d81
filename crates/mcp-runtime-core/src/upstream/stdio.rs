//! A stdio upstream: an MCP server that is a child process of the runtime, speaking
//! newline-delimited JSON-RPC on its stdin and stdout (rmcp's transport over the child's pipes,
//! module `child`, which also caps the length of a line the server writes: a server writing a
//! line longer than the runtime's message limit plus 1 MiB is stopped, the calls waiting on it
//! fail with that reason, and it is started again like a server that exited). The same
//! supervisor runs a legacy HTTP+SSE upstream (module [`sse`](super::sse)): its connection
//! takes the place of the process, "started" meaning connected and "exited" its event stream
//! ending.
//!
//! Supervision: the server is started on first use (discovery) by a supervisor task of its
//! own, which holds the process and its transport. When the process exits, every call still
//! waiting on it fails ([`UpstreamError::Unavailable`]), and it is started again after a
//! back-off that doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] while starts follow each other
//! (reset once a run lasted [`BACKOFF_RESET`]); calls during the back-off fail at once. Each
//! start is a new MCP session (`initialize`, `notifications/initialized`). [`Stdio::stop`]
//! (shutdown) ends the supervisor and stops the server the way the MCP specification says:
//! stdin closed, then `SIGTERM`, then `SIGKILL` (`child::Child::graceful_shutdown`), to its whole
//! process group (it leads one, so a wrapper such as `npx` takes its children with it); a
//! runtime that is dropped without a stop kills the group.
//!
//! The server's stderr is logged line by line (`tracing`, at `info`, with the upstream id).
//! Its environment is the catalog's `env` over a few of the runtime's own variables
//! ([`INHERITED_ENV`], as the official Python SDK's `stdio_client` does), not the runtime's
//! whole environment.
//!
//! Multiplexing: many callers share the one session. A response is routed by its id, a
//! progress notification by its progress token (the runtime makes both the call's unique id,
//! see [`crate::forward`]); a `notifications/*/list_changed` and a
//! `notifications/resources/updated` are notices to the live catalog ([`crate::live`]), as is
//! each start of the server after the first (its new session has no resource subscriptions:
//! the runtime makes them again); other notifications (logging) cannot be told apart per call on a
//! shared stdio session and are only logged at `debug`. A request from the server is answered
//! by the runtime: `ping` with an empty result, anything else with "method not found".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use process_wrap::tokio::{CommandWrap, KillOnDrop, ProcessGroup};
use rmcp::model::{ClientJsonRpcMessage, ProtocolVersion};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::child::Child;
use super::sse::SseConn;
use super::{MessageStream, UpstreamError, message};
use crate::catalog::UpstreamConfig;

/// The first wait before a server that exited is started again.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before a server that exited is started again.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run at least this long resets the back-off to [`BACKOFF_MIN`].
pub(crate) const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// The runtime's variables a server inherits (the official Python SDK's list for Unix).
pub(crate) const INHERITED_ENV: [&str; 6] = ["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"];

type Route = mpsc::UnboundedSender<Result<String, UpstreamError>>;

/// One running server process and its MCP session.
struct Link {
    /// Messages to the server, written by the supervisor.
    out: mpsc::UnboundedSender<ClientJsonRpcMessage>,
    /// Callers waiting for messages, by the call's id (= its progress token).
    routes: Mutex<HashMap<u64, Route>>,
    /// The server's `initialize` result.
    init: Value,
}

impl Link {
    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Route>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the supervisor reports.
#[derive(Clone)]
enum State {
    /// Not started yet, or starting.
    Starting,
    /// Running, with its session.
    Up(Arc<Link>),
    /// Exited or failed to start; started again after the back-off.
    Down(String),
    /// Stopped for good (shutdown).
    Stopped,
}

/// A stdio upstream: its supervisor and the state it reports.
pub(crate) struct Stdio {
    config: UpstreamConfig,
    state: watch::Sender<State>,
    stop: CancellationToken,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    next_id: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// The upstream's instance and where its `list_changed` notices go.
    notices: (u64, crate::live::Notices),
    /// The longest line the server may write, in bytes ([`child`](super::child)); for a
    /// legacy SSE upstream, the longest event.
    max_line: usize,
    /// A legacy SSE upstream's HTTP client (its credentials and roots; module
    /// [`sse`](super::sse)); `None` for a stdio server.
    http: Option<reqwest::Client>,
}

impl Stdio {
    /// The upstream of `config`; nothing is started until [`Stdio::connect`]. `next_id` gives
    /// the ids of the runtime's own requests (`initialize`), unique in the upstream session.
    /// With `http`, the upstream is a legacy SSE server at the config's `url` reached with that
    /// client, supervised the same way (module [`sse`](super::sse)).
    pub(crate) fn new(
        config: UpstreamConfig,
        next_id: Arc<dyn Fn() -> u64 + Send + Sync>,
        notices: (u64, crate::live::Notices),
        max_line: usize,
        http: Option<reqwest::Client>,
    ) -> Self {
        Self {
            http,
            notices,
            max_line,
            config,
            state: watch::Sender::new(State::Starting),
            stop: CancellationToken::new(),
            supervisor: Mutex::new(None),
            next_id,
        }
    }

    fn unavailable(&self, detail: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.config.id.clone(),
            detail: detail.to_string(),
        }
    }

    /// Starts the supervisor if it is not running, waits for the server's first start to end,
    /// and returns its `initialize` result.
    ///
    /// # Errors
    ///
    /// [`UpstreamError::Unavailable`] when the server could not be started, exited during the
    /// handshake, or was stopped.
    pub(crate) async fn connect(&self) -> Result<Value, UpstreamError> {
        {
            let mut supervisor = self
                .supervisor
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if supervisor.is_none() && !self.stop.is_cancelled() {
                let run = Supervisor {
                    config: self.config.clone(),
                    state: self.state.clone(),
                    stop: self.stop.clone(),
                    next_id: Arc::clone(&self.next_id),
                    notices: self.notices.clone(),
                    max_line: self.max_line,
                    http: self.http.clone(),
                    sessions: std::sync::atomic::AtomicU64::new(0),
                };
                *supervisor = Some(tokio::spawn(run.supervise()));
            }
        }
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, State::Starting))
            .await
            .map(|s| s.clone())
            .unwrap_or(State::Stopped);
        match state {
            State::Up(link) => Ok(link.init.clone()),
            State::Down(why) => Err(self.unavailable(why)),
            State::Stopped | State::Starting => Err(self.unavailable("stopped")),
        }
    }

    /// The running session, waiting while the server is starting.
    async fn link(&self) -> Result<Arc<Link>, UpstreamError> {
        if self
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            self.connect().await?;
        }
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, State::Starting))
            .await
            .map(|s| s.clone())
            .unwrap_or(State::Stopped);
        match state {
            State::Up(link) => Ok(link),
            State::Down(why) => Err(self.unavailable(format!("{why}; starting it again"))),
            State::Stopped | State::Starting => Err(self.unavailable("stopped")),
        }
    }

    /// Sends one request (`id` is also its progress token) and returns its message stream:
    /// the progress notifications of the call, then its response.
    ///
    /// # Errors
    ///
    /// [`UpstreamError::Unavailable`] when the server is not running; a server that exits
    /// before answering ends the stream with the same error.
    pub(crate) async fn request(
        &self,
        id: u64,
        method: &str,
        params: Value,
    ) -> Result<MessageStream, UpstreamError> {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let msg = message(&body).map_err(|e| UpstreamError::Protocol {
            upstream: self.config.id.clone(),
            detail: e.to_string(),
        })?;
        let link = self.link().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        link.routes().insert(id, tx);
        if link.out.send(msg).is_err() {
            link.routes().remove(&id);
            return Err(self.unavailable("the server exited"));
        }
        let mut rx = rx;
        Ok(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
    }

    /// Sends a notification if the server is running; a `notifications/cancelled` also drops
    /// the route of the request it cancels (an answer to it is not awaited).
    pub(crate) async fn notify(&self, method: &'static str, params: Value) {
        let Ok(link) = self.link().await else {
            return;
        };
        if method == "notifications/cancelled"
            && let Some(id) = params.get("requestId").and_then(Value::as_u64)
        {
            link.routes().remove(&id);
        }
        if let Ok(msg) = message(&json!({"jsonrpc": "2.0", "method": method, "params": params})) {
            let _ = link.out.send(msg);
        }
    }

    /// Stops the supervisor and the server (stdin closed, then `SIGTERM`, then `SIGKILL`),
    /// and waits until it has exited.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        // The supervisor's transport is dropped with its task: the process group is killed.
        self.stop.cancel();
    }
}

/// The supervisor task's side: starts the server, runs its session, starts it again.
struct Supervisor {
    config: UpstreamConfig,
    state: watch::Sender<State>,
    stop: CancellationToken,
    next_id: Arc<dyn Fn() -> u64 + Send + Sync>,
    notices: (u64, crate::live::Notices),
    max_line: usize,
    http: Option<reqwest::Client>,
    /// MCP sessions established so far (one per start of the server).
    sessions: std::sync::atomic::AtomicU64,
}

impl Supervisor {
    async fn supervise(self) {
        let id = self.config.id.clone();
        let mut backoff = BACKOFF_MIN;
        loop {
            self.state.send_replace(State::Starting);
            let started = Instant::now();
            let why = self.run_once().await;
            if self.stop.is_cancelled() {
                break;
            }
            if started.elapsed() >= BACKOFF_RESET {
                backoff = BACKOFF_MIN;
            }
            tracing::warn!(upstream = %id, transport = self.kind(), reason = %why, retry_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "upstream down; starting it again after the back-off");
            self.state.send_replace(State::Down(why));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.state.send_replace(State::Stopped);
        tracing::info!(upstream = %id, transport = self.kind(), "upstream stopped");
    }

    /// `stdio` or `sse`, for the log.
    fn kind(&self) -> &'static str {
        if self.http.is_some() { "sse" } else { "stdio" }
    }

    /// Starts the server (stdio) or opens its event stream (SSE).
    async fn open(&self) -> Result<Conn, String> {
        let id = &self.config.id;
        if let Some(client) = &self.http {
            let conn = tokio::select! {
                r = SseConn::connect(client.clone(), &self.config.url, self.max_line) => r?,
                () = self.stop.cancelled() => return Err("stopped".to_owned()),
            };
            tracing::info!(upstream = %id, "SSE upstream stream open");
            return Ok(Conn::Sse(conn));
        }
        let cmd = self.command()?;
        let (child, stderr) = Child::spawn(cmd, self.max_line)
            .map_err(|e| format!("cannot start `{}`: {e}", self.config.command))?;
        tracing::info!(upstream = %id, pid = child.id(), "stdio upstream started");
        if let Some(stderr) = stderr {
            let id = id.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(upstream = %id, stderr = %line, "stdio upstream stderr");
                }
            });
        }
        Ok(Conn::Child(child))
    }

    /// The command of the server, its environment reduced to [`INHERITED_ENV`] plus `env`.
    fn command(&self) -> Result<CommandWrap, String> {
        let c = &self.config;
        let mut cmd = tokio::process::Command::new(&c.command);
        cmd.args(&c.args).env_clear();
        for name in INHERITED_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.envs(c.process_env().map_err(|e| e.to_string())?);
        if let Some(cwd) = &c.cwd {
            cmd.current_dir(cwd);
        }
        let mut wrap = CommandWrap::from(cmd);
        wrap.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
        Ok(wrap)
    }

    /// Starts the server and runs its session until it exits or the supervisor stops;
    /// returns why it ended.
    async fn run_once(&self) -> String {
        let id = &self.config.id;
        let mut child = match self.open().await {
            Ok(conn) => conn,
            Err(why) => return why,
        };
        let init = tokio::select! {
            r = self.handshake(&mut child) => r,
            () = self.stop.cancelled() => Err("stopped".to_owned()),
        };
        let init = match init {
            Ok(init) => init,
            Err(why) => {
                let why = if child.over_cap() {
                    self.over_cap()
                } else {
                    why
                };
                let _ = child.graceful_shutdown().await;
                return why;
            }
        };
        tracing::info!(upstream = %id, "upstream session established");
        if self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            self.notices.1.tell(crate::live::Notice::SessionStarted {
                instance: self.notices.0,
            });
        }
        let (out, mut out_rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            out,
            routes: Mutex::new(HashMap::new()),
            init,
        });
        self.state.send_replace(State::Up(Arc::clone(&link)));
        let mut sending = FuturesUnordered::new();
        let why = loop {
            tokio::select! {
                Some(msg) = out_rx.recv() => sending.push(child.send(msg)),
                Some(sent) = sending.next(), if !sending.is_empty() => {
                    if let Err(e) = sent {
                        break format!("cannot write to the server: {e}");
                    }
                }
                incoming = child.receive() => match incoming {
                    Some(msg) => {
                        if let Some(answer) = self.route(&link, &msg) {
                            sending.push(child.send(answer));
                        }
                    }
                    None if child.over_cap() => break self.over_cap(),
                    None if self.http.is_some() => break "the SSE stream ended".to_owned(),
                    None => break "the server exited".to_owned(),
                },
                () = self.stop.cancelled() => break "stopped".to_owned(),
            }
        };
        // New calls see the server down; those waiting fail.
        self.state.send_replace(State::Down(why.clone()));
        for (_, route) in link.routes().drain() {
            let _ = route.send(Err(UpstreamError::Unavailable {
                upstream: id.clone(),
                detail: why.clone(),
            }));
        }
        if let Err(e) = child.graceful_shutdown().await {
            tracing::warn!(upstream = %id, error = %e, "upstream did not stop cleanly");
        }
        why
    }

    /// Why a server whose line went over the cap was stopped.
    fn over_cap(&self) -> String {
        if self.http.is_some() {
            return format!(
                "the server sent an event longer than {} bytes (the runtime's message limit plus 1 MiB); disconnected, to connect again",
                self.max_line
            );
        }
        format!(
            "the server wrote a line longer than {} bytes (the runtime's message limit plus 1 MiB); stopped, to be started again",
            self.max_line
        )
    }

    /// `initialize`, its answer, `notifications/initialized`; returns the `initialize` result.
    async fn handshake(&self, child: &mut Conn) -> Result<Value, String> {
        let id = (self.next_id)();
        let init = message(&json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": ProtocolVersion::LATEST_WITH_INITIALIZE.to_string(),
                "capabilities": {},
                "clientInfo": {"name": "mcp-runtime", "version": env!("CARGO_PKG_VERSION")},
            }
        }))
        .map_err(|e| e.to_string())?;
        child
            .send(init)
            .await
            .map_err(|e| format!("cannot write to the server: {e}"))?;
        let result = loop {
            let Some(msg) = child.receive().await else {
                return Err("the server exited during the handshake".to_owned());
            };
            let v = serde_json::to_value(&msg).map_err(|e| e.to_string())?;
            if v.get("id").and_then(Value::as_u64) == Some(id) && v.get("method").is_none() {
                if let Some(err) = v.get("error") {
                    return Err(format!("initialize failed: {err}"));
                }
                break v.get("result").cloned().unwrap_or(Value::Null);
            }
        };
        let initialized =
            message(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                .map_err(|e| e.to_string())?;
        child
            .send(initialized)
            .await
            .map_err(|e| format!("cannot write to the server: {e}"))?;
        Ok(result)
    }

    /// Delivers one message from the server: a response to its caller (whose stream then
    /// ends), a progress notification to the call of its token; returns the answer to a
    /// request of the server's.
    fn route(
        &self,
        link: &Link,
        msg: &rmcp::model::ServerJsonRpcMessage,
    ) -> Option<ClientJsonRpcMessage> {
        let text = match serde_json::to_string(msg) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(upstream = %self.config.id, error = %e, "message from the server not re-encoded");
                return None;
            }
        };
        let v: Value = serde_json::from_str(&text).ok()?;
        let method = v.get("method").and_then(Value::as_str);
        match (v.get("id"), method) {
            (Some(id), None) => {
                let route = id.as_u64().and_then(|id| link.routes().remove(&id));
                match route {
                    Some(route) => {
                        let _ = route.send(Ok(text));
                    }
                    None => {
                        tracing::debug!(upstream = %self.config.id, %id, "answer to no call waiting");
                    }
                }
                None
            }
            (Some(id), Some(method)) => {
                let answer = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": id, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": id,
                           "error": {"code": -32601, "message": "Method not found"}})
                };
                message(&answer).ok()
            }
            (None, Some("notifications/progress")) => {
                let token = v.pointer("/params/progressToken").and_then(Value::as_u64);
                let route = token.and_then(|t| link.routes().get(&t).cloned());
                if let Some(route) = route {
                    let _ = route.send(Ok(text));
                }
                None
            }
            (None, Some("notifications/resources/updated")) => {
                if let Some(uri) = v.pointer("/params/uri").and_then(Value::as_str) {
                    self.notices.1.tell(crate::live::Notice::ResourceUpdated {
                        instance: self.notices.0,
                        uri: uri.to_owned(),
                    });
                }
                None
            }
            (None, Some(m)) if crate::live::ListKind::of_notification(m).is_some() => {
                if let Some(kind) = crate::live::ListKind::of_notification(m) {
                    self.notices.1.send(self.notices.0, kind);
                }
                None
            }
            (None, method) => {
                tracing::debug!(upstream = %self.config.id, method = method.unwrap_or(""), "notification not tied to a call; not relayed");
                None
            }
        }
    }
}

/// A supervised session's transport: a stdio server's pipes or a legacy SSE connection.
enum Conn {
    Child(Child),
    Sse(SseConn),
}

impl Conn {
    fn send(
        &mut self,
        msg: ClientJsonRpcMessage,
    ) -> futures::future::BoxFuture<'static, std::io::Result<()>> {
        match self {
            Self::Child(c) => Box::pin(c.send(msg)),
            Self::Sse(s) => Box::pin(s.send(&msg)),
        }
    }

    async fn receive(&mut self) -> Option<rmcp::model::ServerJsonRpcMessage> {
        match self {
            Self::Child(c) => c.receive().await,
            Self::Sse(s) => s.receive().await,
        }
    }

    fn over_cap(&self) -> bool {
        match self {
            Self::Child(c) => c.over_cap(),
            Self::Sse(s) => s.over_cap(),
        }
    }

    async fn graceful_shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Self::Child(c) => c.graceful_shutdown().await,
            Self::Sse(s) => {
                s.close();
                Ok(())
            }
        }
    }
}
