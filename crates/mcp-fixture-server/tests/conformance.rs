//! The conformance catalog (`--conformance`): served only when asked for, and each entry
//! answers what the MCP conformance suite checks. The fixture runs in-process on a loopback
//! listener; rmcp's streamable HTTP client talks to it.

// Logging and subscriptions are deprecated by SEP-2577 (2026-07-28); the suite checks them.
#![allow(deprecated)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mcp_fixture_server::{SharedState, conformance, mcp_url, serve_state};
use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{
        ArgumentInfo, CallToolRequestParams, CompleteRequestParams, GetPromptRequestParams,
        JsonObject, LoggingMessageNotificationParam, ProgressNotificationParam,
        ReadResourceRequestParams, Reference, SubscribeRequestParams, UnsubscribeRequestParams,
    },
    service::{NotificationContext, RunningService},
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot};

/// Records progress values and log messages, in arrival order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let total = params.total.unwrap_or_default();
        let event = format!("progress {}/{total}", params.progress);
        self.0.lock().unwrap().push(event);
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let event = format!(
            "log {:?} {}",
            params.level,
            params.data.as_str().unwrap_or("")
        );
        self.0.lock().unwrap().push(event);
    }
}

/// Serves `state` on a loopback port until the returned sender is dropped.
async fn start(state: SharedState) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = mcp_url(listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_state(listener, state, async move {
        let _ = stopped.await;
    }));
    (url, stop)
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

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        other => panic!("expected an object, got {other}"),
    }
}

async fn wait_for_events(recorder: &Recorder, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorder.events().len() < count {
        assert!(Instant::now() < deadline, "events: {:?}", recorder.events());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    recorder.events()
}

#[tokio::test]
async fn default_catalog_has_no_conformance_entries() {
    let (url, _stop) = start(SharedState::new(0)).await;
    let (client, _) = connect(&url).await;
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().all(|tool| !tool.name.starts_with("test_")));
    let info = client.peer_info().expect("server info");
    assert!(info.capabilities.completions.is_none());
    let subscribe = SubscribeRequestParams::new(conformance::WATCHED_URI);
    assert!(client.subscribe(subscribe).await.is_err());
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn conformance_catalog_answers_what_the_suite_checks() {
    let (url, _stop) = start(SharedState::new(0).with_conformance()).await;
    let (client, recorder) = connect(&url).await;
    let info = client.peer_info().expect("server info");
    assert!(info.capabilities.completions.is_some());
    assert_eq!(
        info.capabilities
            .resources
            .as_ref()
            .and_then(|r| r.subscribe),
        Some(true)
    );

    let names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|tool| tool.name.into_owned())
        .collect();
    assert!(
        conformance::TOOLS
            .iter()
            .all(|t| names.iter().any(|n| n == t))
    );

    let call = |name: &'static str| client.call_tool(CallToolRequestParams::new(name));
    let text = call("test_simple_text").await.expect("call");
    assert_eq!(
        serde_json::to_value(&text.content).unwrap(),
        json!([{"type": "text", "text": "This is a simple text response for testing."}])
    );
    let error = call("test_error_handling").await.expect("call");
    assert_eq!(error.is_error, Some(true));
    let mixed = serde_json::to_value(call("test_multiple_content_types").await.expect("call"));
    let kinds: Vec<_> = mixed.unwrap()["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].clone())
        .collect();
    assert_eq!(kinds, [json!("text"), json!("image"), json!("resource")]);

    // rmcp's client attaches a progress token to every request.
    call("test_tool_with_progress").await.expect("call");
    call("test_tool_with_logging").await.expect("call");
    assert_eq!(
        wait_for_events(&recorder, 6).await,
        [
            "progress 0/100",
            "progress 50/100",
            "progress 100/100",
            "log Info Tool execution started",
            "log Info Tool processing data",
            "log Info Tool execution completed",
        ]
    );

    let read = client
        .read_resource(ReadResourceRequestParams::new("test://template/7/data"))
        .await
        .expect("read the template");
    let read = serde_json::to_value(&read).unwrap();
    assert_eq!(read["contents"][0]["mimeType"], "application/json");
    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("test_prompt_with_arguments")
                .with_arguments(object(json!({"arg1": "hello", "arg2": "world"}))),
        )
        .await
        .expect("prompts/get");
    assert_eq!(
        prompt.messages[0].content.as_text().expect("text").text,
        "Prompt with arguments: arg1='hello', arg2='world'"
    );

    let complete = client
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("test_prompt_with_arguments"),
            ArgumentInfo::new("arg1", "par"),
        ))
        .await
        .expect("completion/complete");
    assert_eq!(complete.completion.values, ["paris", "park", "party"]);

    client
        .subscribe(SubscribeRequestParams::new(conformance::WATCHED_URI))
        .await
        .expect("subscribe");
    client
        .unsubscribe(UnsubscribeRequestParams::new(conformance::WATCHED_URI))
        .await
        .expect("unsubscribe");
    let unknown = SubscribeRequestParams::new("test://nowhere");
    assert!(client.subscribe(unknown).await.is_err());
    client.cancel().await.expect("close");
}

// --- MCP 2026-07-28: the multi-round-trip tools, spoken to as raw HTTP so each check sees the
// wire (status, `resultType`, `requestState`, error codes) as the conformance suite does. ---

/// The `_meta` of a 2026-07-28 request declaring `capabilities`, plus `extra` keys.
fn meta_2026(capabilities: Value, extra: &[(&str, Value)]) -> Value {
    let mut meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
    meta["io.modelcontextprotocol/clientCapabilities"] = capabilities;
    for (key, value) in extra {
        meta[*key] = value.clone();
    }
    meta
}

/// Every capability an input request may need.
fn all_capabilities() -> Value {
    json!({"sampling": {}, "elicitation": {}, "roots": {}})
}

/// POSTs one 2026-07-28 request (`params` without `_meta`; `meta` is added) with the
/// standard headers and `extra_headers`: the HTTP status and every JSON-RPC message of the
/// answer (one JSON body, or the `data:` lines of an SSE body), in order.
async fn post_2026(
    url: &str,
    method: &str,
    mut params: Value,
    meta: Value,
    extra_headers: &[(&str, &str)],
) -> (u16, Vec<Value>) {
    params["_meta"] = meta;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        request = request.header("mcp-name", name);
    }
    for (name, value) in extra_headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body.to_string()).send().await.expect("POST");
    let status = response.status().as_u16();
    let sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = response.text().await.expect("body");
    let messages = if sse {
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect()
    } else {
        vec![serde_json::from_str(&text).expect("a JSON body")]
    };
    (status, messages)
}

/// The response (the message with the request's id) among `messages`.
fn response(messages: &[Value]) -> &Value {
    messages
        .iter()
        .find(|m| m["id"] == 7)
        .unwrap_or_else(|| panic!("no response among {messages:?}"))
}

/// A `tools/call` of `name` in 2026-07-28 with every capability: status and response.
async fn call_2026(url: &str, name: &str, retry: Value) -> (u16, Value) {
    let mut params = json!({"name": name, "arguments": {}});
    if let (Value::Object(params), Value::Object(retry)) = (&mut params, retry) {
        params.extend(retry);
    }
    let (status, messages) = post_2026(
        url,
        "tools/call",
        params,
        meta_2026(all_capabilities(), &[]),
        &[],
    )
    .await;
    (status, response(&messages).clone())
}

#[tokio::test]
async fn input_required_round_trip_with_request_state() {
    let (url, _stop) = start(SharedState::new(0).with_conformance()).await;
    let tool = "test_input_required_result_request_state";

    let (status, first) = call_2026(&url, tool, json!({})).await;
    assert_eq!(status, 200, "{first}");
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    assert_eq!(
        result["inputRequests"]["confirm"]["method"],
        "elicitation/create"
    );
    let state = result["requestState"]
        .as_str()
        .expect("a requestState")
        .to_owned();

    // A retry without the asked key (only an unknown one) is asked again, not refused.
    let wrong = json!({"inputResponses": {"wrong_key": {"action": "accept", "content": {}}},
                       "requestState": state});
    let (_, again) = call_2026(&url, tool, wrong).await;
    assert_eq!(again["result"]["resultType"], "input_required", "{again}");
    assert!(again["result"]["inputRequests"]["confirm"].is_object());

    let answer = json!({"inputResponses": {"confirm": {"action": "accept", "content": {"ok": true}}},
                        "requestState": state});
    let (status, done) = call_2026(&url, tool, answer).await;
    assert_eq!(status, 200);
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(done["result"]["content"][0]["text"], "state-ok: ok=true");

    // An answer of the wrong shape is a protocol error.
    let malformed = json!({"inputResponses": {"confirm": 12345}, "requestState": state});
    let (_, refused) = call_2026(&url, tool, malformed).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
}

#[tokio::test]
async fn tampered_or_foreign_request_state_is_refused() {
    let (url, _stop) = start(SharedState::new(0).with_conformance()).await;
    let (other_url, _other_stop) = start(SharedState::new(0).with_conformance()).await;
    let tool = "test_input_required_result_tampered_state";
    let (_, first) = call_2026(&url, tool, json!({})).await;
    let state = first["result"]["requestState"]
        .as_str()
        .expect("state")
        .to_owned();
    let answer = |state: String| {
        json!({"inputResponses": {"confirm": {"action": "accept", "content": {"ok": true}}},
               "requestState": state})
    };

    let (_, tampered) = call_2026(&url, tool, answer(format!("{state}-TAMPERED"))).await;
    assert_eq!(tampered["error"]["code"], -32602, "{tampered}");
    // Sealed for another tool of the same process, or by another process: refused too.
    let (_, other_tool) = call_2026(
        &url,
        "test_input_required_result_request_state",
        answer(state.clone()),
    )
    .await;
    assert_eq!(other_tool["error"]["code"], -32602, "{other_tool}");
    let (_, other_process) = call_2026(&other_url, tool, answer(state.clone())).await;
    assert_eq!(other_process["error"]["code"], -32602, "{other_process}");

    let (_, accepted) = call_2026(&url, tool, answer(state)).await;
    assert_eq!(accepted["result"]["resultType"], "complete", "{accepted}");
}

#[tokio::test]
async fn input_requests_follow_the_declared_capabilities() {
    let (url, _stop) = start(SharedState::new(0).with_conformance()).await;
    let call = |name: &'static str, capabilities: Value| {
        let url = url.clone();
        async move {
            let params = json!({"name": name, "arguments": {}});
            let (status, messages) = post_2026(
                &url,
                "tools/call",
                params,
                meta_2026(capabilities, &[]),
                &[],
            )
            .await;
            (status, response(&messages).clone())
        }
    };

    let (status, missing) = call("test_missing_capability", json!({})).await;
    assert_eq!(status, 400, "{missing}");
    assert_eq!(missing["error"]["code"], -32021);
    assert_eq!(
        missing["error"]["data"]["requiredCapabilities"],
        json!({"sampling": {}})
    );
    let (status, missing) = call(
        "test_input_required_result_elicitation",
        json!({"sampling": {}}),
    )
    .await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (400, &json!(-32021)),
        "{missing}"
    );

    let (_, only_sampling) = call(
        "test_input_required_result_capabilities",
        json!({"sampling": {}}),
    )
    .await;
    let requests = only_sampling["result"]["inputRequests"]
        .as_object()
        .expect("inputRequests");
    let methods: Vec<&Value> = requests.values().map(|r| &r["method"]).collect();
    assert_eq!(
        methods,
        [&json!("sampling/createMessage")],
        "{only_sampling}"
    );

    // The elicitation is asked as a result: the stream carries no request of the server's.
    let params = json!({"name": "test_streaming_elicitation", "arguments": {}});
    let meta = meta_2026(json!({"elicitation": {}}), &[]);
    let (_, messages) = post_2026(&url, "tools/call", params, meta, &[]).await;
    assert!(
        messages
            .iter()
            .all(|m| m.get("method").is_none_or(|method| {
                method
                    .as_str()
                    .is_some_and(|method| method.starts_with("notifications/"))
            })),
        "{messages:?}"
    );
    assert_eq!(
        response(&messages)["result"]["resultType"],
        "input_required"
    );
}

#[tokio::test]
async fn logging_in_2026_needs_a_log_level_in_meta() {
    let (url, _stop) = start(SharedState::new(0).with_conformance()).await;
    let logs = |messages: &[Value]| {
        messages
            .iter()
            .filter(|m| m["method"] == "notifications/message")
            .count()
    };
    let params = json!({"name": "test_logging_tool", "arguments": {}});
    let (_, quiet) = post_2026(
        &url,
        "tools/call",
        params.clone(),
        meta_2026(json!({}), &[]),
        &[],
    )
    .await;
    assert_eq!(logs(&quiet), 0, "{quiet:?}");
    assert_eq!(response(&quiet)["result"]["resultType"], "complete");

    let info = meta_2026(
        json!({}),
        &[("io.modelcontextprotocol/logLevel", json!("info"))],
    );
    let (_, told) = post_2026(&url, "tools/call", params.clone(), info, &[]).await;
    assert_eq!(logs(&told), 3, "{told:?}");
    let error = meta_2026(
        json!({}),
        &[("io.modelcontextprotocol/logLevel", json!("error"))],
    );
    let (_, filtered) = post_2026(&url, "tools/call", params, error, &[]).await;
    assert_eq!(logs(&filtered), 0, "{filtered:?}");
}

#[tokio::test]
async fn mcp_param_headers_are_checked_against_the_body() {
    let (url, _stop) = start(SharedState::new(0).with_conformance()).await;
    let params = json!({"name": "test_custom_headers",
                        "arguments": {"region": "eu-west", "priority": 3, "query": "q"}});
    let meta = || meta_2026(json!({}), &[]);
    let good = [("mcp-param-region", "eu-west"), ("mcp-param-priority", "3")];
    let (status, ok) = post_2026(&url, "tools/call", params.clone(), meta(), &good).await;
    assert_eq!(status, 200, "{ok:?}");
    let base64 = [
        ("mcp-param-region", "=?base64?ZXUtd2VzdA==?="),
        ("mcp-param-priority", "3"),
    ];
    let (status, ok) = post_2026(&url, "tools/call", params.clone(), meta(), &base64).await;
    assert_eq!(status, 200, "{ok:?}");

    for headers in [
        &[("mcp-param-region", "us-east"), ("mcp-param-priority", "3")][..],
        &[("mcp-param-priority", "3")][..],
        &[
            ("mcp-param-region", "=?base64?ZXUtd2VzdA?="),
            ("mcp-param-priority", "3"),
        ][..],
    ] {
        let (status, refused) =
            post_2026(&url, "tools/call", params.clone(), meta(), headers).await;
        assert_eq!(status, 400, "{headers:?}: {refused:?}");
        assert_eq!(response(&refused)["error"]["code"], -32020, "{refused:?}");
    }
}

/// A 2026-07-28 client that answers every input request: name `Alice`, colour `blue`,
/// context `tests`.
#[derive(Clone, Default)]
struct Answers;

impl ClientHandler for Answers {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let capabilities = serde_json::from_value(all_capabilities()).expect("capabilities");
        rmcp::model::ClientConfig::new(capabilities, rmcp::model::Implementation::new("t", "1"))
            .with_protocol_version(rmcp::model::ProtocolVersion::V_2026_07_28)
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        let message = match &request {
            rmcp::model::ElicitRequestParams::FormElicitationParams { message, .. } => {
                message.clone()
            }
            _ => String::new(),
        };
        let content = if message.contains("color") {
            json!({"color": "blue"})
        } else if message.contains("context") {
            json!({"context": "tests"})
        } else {
            json!({"name": "Alice"})
        };
        Ok(
            rmcp::model::ElicitResult::new(rmcp::model::ElicitationAction::Accept)
                .with_content(content),
        )
    }
}

#[tokio::test]
async fn rmcp_client_drives_the_rounds_in_2026_and_a_2025_session_is_refused() {
    let (url, _stop) = start(SharedState::new(0).with_conformance()).await;
    let lifecycle = rmcp::service::ClientLifecycleMode::Discover {
        preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
    };
    let client = rmcp::service::ClientServiceExt::serve_with_lifecycle(
        Answers,
        StreamableHttpClientTransport::from_uri(url.as_str()),
        lifecycle,
    )
    .await
    .expect("server/discover in 2026-07-28");
    let done = client
        .call_tool(CallToolRequestParams::new(
            "test_input_required_result_multi_round",
        ))
        .await
        .expect("three rounds");
    assert_eq!(
        done.content[0].as_text().expect("text").text,
        "Alice likes blue"
    );
    let prompt = client
        .get_prompt(GetPromptRequestParams::new(
            "test_input_required_result_prompt",
        ))
        .await
        .expect("two rounds");
    assert_eq!(
        prompt.messages[0].content.as_text().expect("text").text,
        "Use this context: tests"
    );
    client.cancel().await.expect("close");

    // rmcp lets no input_required result reach a 2025-11-25 session: an error instead.
    let (legacy, _) = connect(&url).await;
    let refused = legacy
        .call_tool(CallToolRequestParams::new(
            "test_input_required_result_elicitation",
        ))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    legacy.cancel().await.expect("close");
}
