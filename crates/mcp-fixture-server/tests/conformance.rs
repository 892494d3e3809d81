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
