//! `mcp-rmcp-client`: rmcp's own client (the Rust SDK) run through a gateway endpoint, in either
//! protocol era, by a fixed script; one JSON object of results on stdout.
//!
//! A client nobody in this project wrote (issue 16, item 5): the Python tests
//! (`python/tests/test_rmcp_client.py`) run it against every gateway mode and check what it
//! prints. rmcp drives the protocol; this program only chooses the lifecycle, answers what the
//! server asks and reports what came back.
//!
//! * `--era 2025-11-25`: the `initialize` session. The client declares `sampling`,
//!   `elicitation` and `roots`; the script lists the tools, calls `echo`, then — when the
//!   endpoint lists them (the fixture's conformance catalog, `mcp-fixture-server --conformance`)
//!   — `test_sampling`, `test_elicitation` and `test_list_roots`, whose server-to-client
//!   requests the [`Answers`] handler answers on the call's stream.
//! * `--era 2026-07-28`: no session. `server/discover` first (rmcp's `Discover` lifecycle, which
//!   does not fall back to `initialize`), then the tool list, `echo`, and — when listed —
//!   `test_input_required_result_elicitation`, `..._sampling` and `..._list_roots`: the server
//!   answers `resultType: "input_required"`, rmcp's `call_tool` fulfils the `inputRequests`
//!   through the same handler and retries with `inputResponses`; and `test_sampling`, whose
//!   upstream asks a server-to-client request this era does not have outside
//!   `input_required`: the call must end (an error or an error result), and the handler is not
//!   asked for it.
//!
//! Output (one line of JSON): `era`, `protocolVersion` (negotiated), `serverName` (or null),
//! `tools` (names, sorted), and one entry per step under `steps`: `{"text": ...,
//! "isError": bool}` for a call that returned a result, `{"error": "..."}` for one that failed,
//! absent for a step whose tool is not listed. `asked` records what the handler was asked:
//! `sampling` (the prompts' texts), `elicitation` (the messages) and `roots` (how many times).
//! Exit status 0 once the script ran (whatever its steps returned), 1 when the client could not
//! start (the error on stderr), 2 for bad arguments.

// Sampling is deprecated in rmcp (SEP-2577 removes it from 2026-07-28); this client still
// answers it, since a 2025-11-25 server may ask it, and the tests check that it does.
#![allow(deprecated)]

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rmcp::{
    ClientHandler, ClientLifecycleMode, ClientServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
        CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams, ElicitResult,
        ElicitationAction, ErrorData, Implementation, ListRootsResult, ProtocolVersion, Root,
        SamplingMessage,
    },
    service::{RequestContext, RoleClient, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Map, Value, json};

/// The text the sampling handler answers with.
const SAMPLING_ANSWER: &str = "forty-two";
/// The root the `roots/list` handler answers with.
const ROOT_URI: &str = "file:///srv/rmcp-client";
/// The session-era tools the script calls when listed (the fixture's conformance catalog).
const SAMPLING_TOOL: &str = "test_sampling";
const ELICITATION_TOOL: &str = "test_elicitation";
const ROOTS_TOOL: &str = "test_list_roots";
/// The 2026-era multi-round-trip tools the script calls when listed: each answers
/// `input_required` with one input request (an elicitation, a sampling, a `roots/list`) first.
const INPUT_REQUIRED_TOOLS: &[&str] = &[
    "test_input_required_result_elicitation",
    "test_input_required_result_sampling",
    "test_input_required_result_list_roots",
];

#[derive(Parser, Debug)]
#[command(about = "Run rmcp's client through an MCP endpoint and print what came back as JSON")]
struct Args {
    /// The streamable HTTP endpoint, e.g. http://127.0.0.1:4444/mcp.
    #[arg(long)]
    url: String,
    /// The bearer token (without `Bearer `); none sent when absent.
    #[arg(long, env = "MCP_RMCP_CLIENT_TOKEN")]
    token: Option<String>,
    /// The protocol era: 2025-11-25 (initialize, a session) or 2026-07-28 (server/discover, no
    /// session).
    #[arg(long, value_parser = ["2025-11-25", "2026-07-28"])]
    era: String,
}

/// What the server asked the client, in order.
#[derive(Default, Debug)]
struct Asked {
    sampling: Vec<String>,
    elicitation: Vec<String>,
    roots: usize,
}

/// The client's handler: answers sampling with [`SAMPLING_ANSWER`], `roots/list` with
/// [`ROOT_URI`], and accepts every form elicitation with a value for each property of the
/// requested schema (see [`fill`]).
#[derive(Clone)]
struct Answers {
    info: ClientConfig,
    asked: Arc<Mutex<Asked>>,
}

impl Answers {
    fn record(&self, what: impl FnOnce(&mut Asked)) {
        // A poisoned lock only means another handler call panicked; the record is still usable.
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        what(&mut asked);
    }
}

impl ClientHandler for Answers {
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let prompts: Vec<String> = params
            .messages
            .iter()
            .filter_map(|m| {
                let content = serde_json::to_value(&m.content).ok()?;
                content
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        self.record(|a| a.sampling.extend(prompts));
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(SAMPLING_ANSWER),
            "mcp-rmcp-client".into(),
        )
        .with_stop_reason(CreateMessageResult::STOP_REASON_END_TURN))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        match request {
            ElicitRequestParams::FormElicitationParams {
                message,
                requested_schema,
                ..
            } => {
                self.record(|a| a.elicitation.push(message));
                let schema = serde_json::to_value(&requested_schema)
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                Ok(ElicitResult::new(ElicitationAction::Accept).with_content(fill(&schema)))
            }
            ElicitRequestParams::UrlElicitationParams { message, .. } => {
                self.record(|a| a.elicitation.push(message));
                Ok(ElicitResult::new(ElicitationAction::Decline))
            }
            _ => Ok(ElicitResult::new(ElicitationAction::Decline)),
        }
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        self.record(|a| a.roots += 1);
        Ok(ListRootsResult::new(vec![Root::new(ROOT_URI)]))
    }

    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }
}

/// An answer to a form elicitation: each property of `schema` gets its `default`, else the first
/// of its `enum`/`oneOf` values, else a value of its type (`"rmcp"`, `1`, `true`, `[]`).
fn fill(schema: &Value) -> Value {
    let mut answer = Map::new();
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, property) in properties.into_iter().flatten() {
        let value = if let Some(default) = property.get("default") {
            default.clone()
        } else if let Some(first) = property
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            first.clone()
        } else if let Some(first) = property
            .get("oneOf")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
            .and_then(|o| o.get("const"))
        {
            first.clone()
        } else {
            match property.get("type").and_then(Value::as_str) {
                Some("integer" | "number") => json!(1),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                _ if name == "email" => json!("rmcp@example.com"),
                _ => json!("rmcp"),
            }
        };
        answer.insert(name.clone(), value);
    }
    Value::Object(answer)
}

/// A call's result as the report shows it: its text items joined by newlines, and `isError`.
fn call_report(result: Result<CallToolResult, rmcp::ServiceError>) -> Value {
    match result {
        Ok(result) => {
            let texts: Vec<&str> = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                .collect();
            json!({"text": texts.join("\n"), "isError": result.is_error.unwrap_or(false)})
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// `name` called with `arguments` (a JSON object literal).
async fn call(client: &RunningService<RoleClient, Answers>, name: &str, arguments: Value) -> Value {
    let arguments = match arguments {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
    call_report(client.call_tool(params).await)
}

async fn run(args: Args) -> Result<Value> {
    if args.url.is_empty() {
        bail!("--url must not be empty");
    }
    let session_era = args.era == "2025-11-25";
    // rmcp's capability builders come with its server feature; the JSON is the same.
    let capabilities: ClientCapabilities =
        serde_json::from_value(json!({"sampling": {}, "elicitation": {"form": {}}, "roots": {}}))
            .context("client capabilities")?;
    let version = if session_era {
        ProtocolVersion::V_2025_11_25
    } else {
        ProtocolVersion::V_2026_07_28
    };
    let info = ClientConfig::new(
        capabilities,
        Implementation::new("mcp-rmcp-client", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(version.clone());
    let asked = Arc::new(Mutex::new(Asked::default()));
    let handler = Answers {
        info,
        asked: asked.clone(),
    };
    let mut config = StreamableHttpClientTransportConfig::with_uri(args.url.as_str());
    if let Some(token) = &args.token {
        config = config.auth_header(token.clone());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let lifecycle = if session_era {
        ClientLifecycleMode::Initialize
    } else {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![version],
        }
    };
    let client = handler
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .with_context(|| format!("starting the {} client at {}", args.era, args.url))?;

    let peer = client.peer_info();
    let protocol = peer.as_ref().map(|p| p.protocol_version.to_string());
    let server_name = peer
        .as_ref()
        .and_then(|p| p.server_info.as_ref())
        .map(|s| s.name.clone());

    let mut steps = Map::new();
    let mut tools: Vec<String> = match client.list_all_tools().await {
        Ok(tools) => tools.into_iter().map(|t| t.name.to_string()).collect(),
        Err(e) => {
            steps.insert("tools/list".into(), json!({"error": e.to_string()}));
            Vec::new()
        }
    };
    tools.sort();
    let listed = |name: &str| tools.iter().any(|t| t == name);
    steps.insert(
        "echo".into(),
        call(&client, "echo", json!({"text": "hello from rmcp"})).await,
    );
    if session_era {
        if listed(SAMPLING_TOOL) {
            let step = call(&client, SAMPLING_TOOL, json!({"prompt": "the answer?"})).await;
            steps.insert(SAMPLING_TOOL.into(), step);
        }
        if listed(ELICITATION_TOOL) {
            let step = call(
                &client,
                ELICITATION_TOOL,
                json!({"message": "who are you?"}),
            )
            .await;
            steps.insert(ELICITATION_TOOL.into(), step);
        }
        if listed(ROOTS_TOOL) {
            let step = call(&client, ROOTS_TOOL, json!({})).await;
            steps.insert(ROOTS_TOOL.into(), step);
        }
    } else {
        for tool in INPUT_REQUIRED_TOOLS.iter().filter(|t| listed(t)) {
            let step = call(&client, tool, json!({})).await;
            steps.insert((*tool).into(), step);
        }
        if listed(SAMPLING_TOOL) {
            // 2026-07-28 has no server-to-client request outside an `input_required` result:
            // an upstream that asks one anyway must end the call, never hold it.
            let step = call(&client, SAMPLING_TOOL, json!({"prompt": "the answer?"})).await;
            steps.insert(SAMPLING_TOOL.into(), step);
        }
    }
    // Ends the session (DELETE) in the session era; closes the transport in both.
    if let Err(e) = client.cancel().await {
        steps.insert("close".into(), json!({"error": e.to_string()}));
    }
    let asked = std::mem::take(&mut *asked.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(json!({
        "era": args.era,
        "protocolVersion": protocol,
        "serverName": server_name,
        "tools": tools,
        "steps": steps,
        "asked": {
            "sampling": asked.sampling,
            "elicitation": asked.elicitation,
            "roots": asked.roots,
        },
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The whole cause chain on one line, without a backtrace whatever RUST_BACKTRACE says.
            eprintln!("mcp-rmcp-client: {e:#}");
            ExitCode::from(1)
        }
    }
}
