//! End-to-end tests of the `mcp-fixture-server` binary: spawn it, read its URL line, and
//! talk to it with rmcp's streamable HTTP client (and, for the exact wire order of a POST's
//! SSE stream, with plain HTTP).

// The logging notification types are deprecated by SEP-2577 (2026-07-28); the fixture
// still serves logging because every earlier protocol revision has it.
#![allow(deprecated)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, GetPromptRequestParams, JsonObject,
        LoggingMessageNotificationParam, ProgressNotificationParam, ReadResourceRequestParams,
        ResourceContents,
    },
    service::{NotificationContext, Peer, RunningService},
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};

/// A spawned fixture server, killed when dropped.
struct FixtureProcess {
    child: Child,
    url: String,
}

impl FixtureProcess {
    /// Spawns the binary with `args` and waits for its `MCP_FIXTURE_URL=` line.
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-fixture-server"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mcp-fixture-server");
        let stdout = child.stdout.take().expect("piped stdout");
        // Build the guard before reading, so a failed read still kills the child.
        let mut fixture = Self {
            child,
            url: String::new(),
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the URL line");
        fixture.url = line
            .trim_end()
            .strip_prefix("MCP_FIXTURE_URL=")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        fixture
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FixtureProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client handler that records the notifications it receives, in order.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.events.lock().unwrap().push(format!(
            "progress {}/{} {}",
            params.progress,
            params.total.unwrap_or_default(),
            params.message.unwrap_or_default()
        ));
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.events.lock().unwrap().push(format!(
            "log {:?} {}",
            params.level,
            params.logger.unwrap_or_default()
        ));
    }
}

/// The text of the only content item of a tool result.
fn only_text(result: &CallToolResult) -> &str {
    assert_eq!(result.content.len(), 1, "one content item: {result:?}");
    &result.content[0].as_text().expect("text content").text
}

fn arguments(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        other => panic!("arguments must be an object, got {other}"),
    }
}

async fn call(peer: &Peer<RoleClient>, name: &'static str, args: Value) -> CallToolResult {
    peer.call_tool(CallToolRequestParams::new(name).with_arguments(arguments(args)))
        .await
        .unwrap_or_else(|error| panic!("call {name}: {error}"))
}

async fn connect(url: &str) -> (RunningService<RoleClient, Recorder>, Recorder) {
    let recorder = Recorder::default();
    let client = recorder
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(url))
        .await
        .expect("initialize");
    (client, recorder)
}

/// Waits until `condition` holds, polling, or panics after `timeout`.
async fn wait_for(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn serves_the_catalog_resources_and_prompt() {
    let fixture = FixtureProcess::spawn(&["--generated-tools", "3"]);
    let (client, recorder) = connect(&fixture.url).await;

    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().unwrap().name,
        "mcp-fixture-server"
    );
    assert!(info.capabilities.tools.is_some());
    assert!(info.capabilities.resources.is_some());
    assert!(info.capabilities.prompts.is_some());

    let names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|tool| tool.name.into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "echo", "payload", "sleep", "inflight", "progress", "fail", "gen_0000", "gen_0001",
            "gen_0002"
        ]
    );

    let echo = call(&client, "echo", json!({"text": "hello fixture"})).await;
    assert_eq!(only_text(&echo), "hello fixture");
    assert_ne!(echo.is_error, Some(true));
    // `text` is optional (the conformance suite's header scenario calls echo with no arguments).
    let empty = call(&client, "echo", json!({})).await;
    assert_eq!(only_text(&empty), "");

    let size = 1024 * 1024;
    let payload = call(&client, "payload", json!({"size_bytes": size})).await;
    let text = only_text(&payload);
    assert_eq!(text.len(), size);
    assert!(text.bytes().all(|byte| byte == b'x'));

    let generated = call(&client, "gen_0002", json!({})).await;
    assert_eq!(only_text(&generated), "gen_0002");

    let fail = call(&client, "fail", json!({"message": "it broke"})).await;
    assert_eq!(fail.is_error, Some(true));
    assert_eq!(only_text(&fail), "it broke");

    // rmcp's client attaches a progress token to every request.
    let progress = call(&client, "progress", json!({"steps": 3, "interval_ms": 20})).await;
    assert_eq!(only_text(&progress), "done 3 steps");
    // The client dispatches notifications on their own tasks, so give them a moment.
    let expected = [
        "progress 1/3 step 1",
        "progress 2/3 step 2",
        "progress 3/3 step 3",
        "log Info fixture",
    ];
    wait_for(
        "the progress notifications",
        Duration::from_secs(5),
        async || recorder.events().len() >= expected.len(),
    )
    .await;
    assert_eq!(recorder.events(), expected);

    let readme = client
        .read_resource(ReadResourceRequestParams::new("fixture://readme"))
        .await
        .expect("read readme");
    assert_eq!(resource_text(&readme.contents), "MCP fixture server");
    let item = client
        .read_resource(ReadResourceRequestParams::new("fixture://items/42"))
        .await
        .expect("read item");
    assert_eq!(resource_text(&item.contents), "item 42");
    let templates = client
        .list_resource_templates(None)
        .await
        .expect("resources/templates/list");
    assert_eq!(
        templates.resource_templates[0].uri_template,
        "fixture://items/{id}"
    );

    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("greet").with_arguments(arguments(json!({"name": "Ada"}))),
        )
        .await
        .expect("prompts/get");
    assert_eq!(prompt.messages.len(), 1);
    assert_eq!(
        prompt.messages[0].content.as_text().expect("text").text,
        "Hello, Ada!"
    );

    client.cancel().await.expect("close the client");
}

fn resource_text(contents: &[ResourceContents]) -> &str {
    match contents {
        [ResourceContents::TextResourceContents { text, .. }] => text,
        other => panic!("expected one text resource, got {other:?}"),
    }
}

/// `sleep` and the streaming `progress` are both counted by `inflight` while they run, and
/// both stop (the count drops) once the client cancels them.
#[tokio::test]
async fn cancelled_sleep_and_progress_stop() {
    let fixture = FixtureProcess::spawn(&[]);
    let (client, recorder) = connect(&fixture.url).await;
    let inflight = async |peer: &Peer<RoleClient>| -> usize {
        only_text(&call(peer, "inflight", json!({})).await)
            .parse()
            .expect("a number")
    };

    // A progress call of 1,000 steps 50 ms apart runs for 50 s unless cancelled.
    for (name, args) in [
        ("sleep", json!({"ms": 60_000})),
        ("progress", json!({"steps": 1000, "interval_ms": 50})),
    ] {
        let peer = client.peer().clone();
        let running = tokio::spawn(async move { call(&peer, name, args).await });
        wait_for(
            &format!("the {name} call to start"),
            Duration::from_secs(5),
            async || inflight(client.peer()).await == 1,
        )
        .await;
        if name == "progress" {
            wait_for(
                "a progress notification",
                Duration::from_secs(5),
                async || !recorder.events().is_empty(),
            )
            .await;
        }
        // Dropping rmcp's call future sends notifications/cancelled for it.
        running.abort();
        wait_for(
            &format!("the {name} call to stop"),
            Duration::from_secs(5),
            async || inflight(client.peer()).await == 0,
        )
        .await;
    }

    let short = call(&client, "sleep", json!({"ms": 10})).await;
    assert_eq!(only_text(&short), "slept 10 ms");
    let progress = call(&client, "progress", json!({"steps": 1, "interval_ms": 0})).await;
    assert_eq!(only_text(&progress), "done 1 steps");
    assert_eq!(
        inflight(client.peer()).await,
        0,
        "finished calls are not counted"
    );
    client.cancel().await.expect("close the client");
}

/// The `data:` payloads of an SSE body, parsed as JSON (priming events carry none).
fn sse_messages(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| !data.is_empty())
        .map(|data| serde_json::from_str(data).expect("JSON in an SSE data line"))
        .collect()
}

/// POSTs one JSON-RPC message; returns the status, the session id header and the body.
async fn post(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    message: &Value,
) -> (u16, Option<String>, String) {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(message.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, session, response.text().await.expect("body"))
}

/// The exact wire shape the runtime relays: a POST answered as SSE carrying the progress
/// notifications, then the log message, then the result.
#[tokio::test]
async fn post_stream_carries_progress_and_log_before_the_result() {
    let fixture = FixtureProcess::spawn(&[]);
    let http = reqwest::Client::new();

    let (status, session, body) = post(
        &http,
        &fixture.url,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw-http-test", "version": "0"}
        }}),
    )
    .await;
    assert_eq!(status, 200);
    let session = session.expect("an Mcp-Session-Id header");
    assert_eq!(
        sse_messages(&body)[0]["result"]["serverInfo"]["name"],
        "mcp-fixture-server"
    );
    let (status, _, _) = post(
        &http,
        &fixture.url,
        Some(&session),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(status, 202);

    let (status, _, body) = post(
        &http,
        &fixture.url,
        Some(&session),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "progress",
            "arguments": {"steps": 2, "interval_ms": 5},
            "_meta": {"progressToken": "p-1"}
        }}),
    )
    .await;
    assert_eq!(status, 200);
    let messages = sse_messages(&body);
    let kinds: Vec<String> = messages
        .iter()
        .map(|message| match message["method"].as_str() {
            Some(method) => method.to_owned(),
            None => format!("result {}", message["id"]),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "notifications/progress",
            "notifications/progress",
            "notifications/message",
            "result 2"
        ]
    );
    assert_eq!(
        messages[1]["params"],
        json!({"progressToken": "p-1", "progress": 2.0, "total": 2.0, "message": "step 2"})
    );
    assert_eq!(messages[2]["params"]["level"], "info");
    assert_eq!(messages[2]["params"]["logger"], "fixture");
    assert_eq!(messages[3]["result"]["content"][0]["text"], "done 2 steps");
}

#[tokio::test]
async fn exits_cleanly_on_sigterm() {
    let mut fixture = FixtureProcess::spawn(&[]);
    // Hold a session open so shutdown has something to drain.
    let (client, _recorder) = connect(&fixture.url).await;
    let status = fixture.terminate();
    assert!(status.success(), "exit status {status}");
    drop(client);
}
