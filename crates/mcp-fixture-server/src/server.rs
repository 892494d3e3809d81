//! [`FixtureServer`]: the `rmcp` server handler behind every session.
//!
//! rmcp builds one handler per MCP session (through the factory given to
//! `StreamableHttpService`), so per-session state (the logging level a client asked for)
//! lives in the handler and process-wide state lives in the [`SharedState`] they all share.

// Logging (`notifications/message`, `logging/setLevel`) is deprecated by SEP-2577 for the
// 2026-07-28 protocol, but it is part of every earlier revision and the runtime relays it,
// so the fixture keeps serving it.
#![allow(deprecated)]

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams,
        CompleteResult, ContentBlock, GetPromptRequestParams, GetPromptResponse, GetPromptResult,
        Implementation, JsonObject, ListPromptsResult, ListResourceTemplatesResult,
        ListResourcesResult, ListToolsResult, LoggingLevel, LoggingMessageNotification,
        LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam,
        PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
        RequestId, ResourceContents, Role, ServerCapabilities, ServerConfig, ServerNotification,
        SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool,
        UnsubscribeRequestParams,
    },
    service::{RequestContext, SubscriptionContext},
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{catalog, conformance, mrtr};

/// Marks a server notification as part of the handling of one client request.
///
/// rmcp's session layer puts every notification except progress on the standalone GET
/// stream; `crate::session` looks for this marker to deliver the notification on the
/// request's own SSE stream instead, as the Python and TypeScript SDKs do.
#[derive(Debug, Clone)]
pub(crate) struct RelatedRequest(pub(crate) RequestId);

/// State shared by every session of one server: the catalog and the in-flight counter.
#[derive(Debug)]
pub struct SharedState {
    /// Number of generated tools (`gen_0000` ..), fixed at start-up.
    generated_tools: usize,
    /// The full tool list, built once; `tools/list` clones it.
    tools: Vec<Tool>,
    /// Calls of `sleep` and `progress` currently running (the tool `inflight` reports it).
    /// A guard decrements it when a call ends in any way (finished, cancelled, or its future
    /// dropped), so tests can see that a cancelled call, streaming or not, really stopped.
    inflight_calls: AtomicUsize,
    /// Whether the conformance catalog ([`crate::conformance`], [`crate::mrtr`]) is served
    /// too.
    conformance: bool,
    /// The multi-round-trip tools of the conformance catalog and the key sealing their
    /// `requestState` (conformance catalog only).
    mrtr: Option<mrtr::Mrtr>,
    /// A header every request must carry (name, value), else 401: an upstream with
    /// credentials.
    required_header: Option<(String, String)>,
    /// Where the `traceparent` header of every request is written (`None`: not kept).
    traceparents: Option<TraceparentLog>,
    /// How many sessions are subscribed to some resource now, if a test counts them
    /// ([`SharedState::with_subscription_count`]).
    subscribed: Option<Arc<AtomicUsize>>,
    /// How long each `resources/subscribe` waits before it takes effect and is answered
    /// ([`SharedState::with_subscribe_delay`]).
    subscribe_delay: Duration,
    /// Whether `add_tool` and `remove_tool` are served ([`SharedState::with_dynamic_tools`]).
    dynamic: bool,
    /// Tools `add_tool` added, listed after the others. A std mutex, held only to copy or
    /// change the list.
    added: Mutex<Vec<Tool>>,
    /// The peers of the initialized sessions (dynamic fixture only), told of list changes.
    peers: Mutex<Vec<rmcp::Peer<RoleServer>>>,
    /// Tell only the session that called `add_tool` / `remove_tool` (an upstream that
    /// notifies per session; several runtime replicas then hear it on one of them only).
    caller_only: bool,
}

/// The `traceparent` headers a fixture received, in order (a request without one adds
/// nothing); shared with the test that reads them ([`SharedState::with_traceparent_log`]).
pub type TraceparentLog = Arc<std::sync::Mutex<Vec<String>>>;

impl SharedState {
    /// State for a server exposing `generated_tools` generated tools.
    pub fn new(generated_tools: usize) -> Self {
        Self {
            generated_tools,
            tools: catalog::tools(generated_tools),
            inflight_calls: AtomicUsize::new(0),
            conformance: false,
            mrtr: None,
            required_header: None,
            traceparents: None,
            subscribed: None,
            subscribe_delay: Duration::ZERO,
            dynamic: false,
            added: Mutex::new(Vec::new()),
            peers: Mutex::new(Vec::new()),
            caller_only: false,
        }
    }

    /// The same state with a tool list that changes at run time: tools `add_tool {name}` and
    /// `remove_tool {name}`, each followed by `notifications/tools/list_changed` to every
    /// initialized session (on its standalone GET stream); the server declares
    /// `tools.listChanged`.
    #[must_use]
    pub fn with_dynamic_tools(mut self) -> Self {
        self.tools.extend(catalog::dynamic_tools());
        self.dynamic = true;
        self
    }

    /// The same, but a list change is told only to the session that made it (dynamic tools
    /// only).
    #[must_use]
    pub fn with_list_changes_to_the_caller_only(mut self) -> Self {
        self.caller_only = true;
        self
    }

    /// The tools listed now: the fixed ones, then those `add_tool` added.
    fn listed_tools(&self) -> Vec<Tool> {
        let mut tools = self.tools.clone();
        tools.extend(
            self.added
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        tools
    }

    /// Whether `name` is a tool `add_tool` added.
    fn is_added(&self, name: &str) -> bool {
        self.added
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|t| t.name == name)
    }

    /// `add_tool` (`add`) or `remove_tool`: changes the list, then tells every session.
    async fn change_tools(
        &self,
        name: &str,
        add: bool,
        caller: &rmcp::Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let known = self.tools.iter().any(|t| t.name == name) || self.is_generated_tool(name);
        {
            let mut added = self.added.lock().unwrap_or_else(PoisonError::into_inner);
            let present = added.iter().position(|t| t.name == name);
            match (add, present) {
                (true, None) if !known && !name.is_empty() => added.push(catalog::added_tool(name)),
                (false, Some(i)) => {
                    added.remove(i);
                }
                _ => {
                    return Err(ErrorData::invalid_params(
                        format!("cannot {} tool {name}", if add { "add" } else { "remove" }),
                        None,
                    ));
                }
            }
        }
        if self.caller_only {
            let _ = caller.notify_tool_list_changed().await;
            return Ok(text_result(format!(
                "{} tool {name}",
                if add { "added" } else { "removed" }
            )));
        }
        let peers = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut gone = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            if peer.notify_tool_list_changed().await.is_err() {
                gone.push(i);
            }
        }
        if !gone.is_empty() {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            let mut i = 0;
            peers.retain(|_| {
                i += 1;
                !gone.contains(&(i - 1))
            });
        }
        Ok(text_result(format!(
            "{} tool {name}",
            if add { "added" } else { "removed" }
        )))
    }

    /// The same state serving the conformance catalog ([`crate::conformance`]) as well:
    /// its tools after the fixed and generated ones, its resources, template and prompts
    /// after the fixture's own, plus completion and resource subscriptions.
    #[must_use]
    pub fn with_conformance(mut self) -> Self {
        self.tools.extend(conformance::tools());
        self.tools.push(crate::reconnect::tool());
        self.tools.extend(mrtr::tools());
        self.conformance = true;
        self.mrtr = Some(mrtr::Mrtr::new());
        self
    }

    /// Whether the conformance catalog is served ([`SharedState::with_conformance`]).
    pub fn conformance(&self) -> bool {
        self.conformance
    }

    /// The server answers 401 to a request without header `name` set to `value` (an upstream
    /// that needs credentials).
    #[must_use]
    pub fn with_required_header(mut self, name: &str, value: &str) -> Self {
        self.required_header = Some((name.to_owned(), value.to_owned()));
        self
    }

    /// The server writes the W3C `traceparent` header of every HTTP request it receives (as
    /// sent, when present) to `log`: what a test reads to see the trace context an upstream
    /// is given.
    #[must_use]
    pub fn with_traceparent_log(mut self, log: TraceparentLog) -> Self {
        self.traceparents = Some(log);
        self
    }

    /// The same, counting in `count` the (session, URI) subscriptions held now: one more at
    /// each `resources/subscribe` of a URI the session was not subscribed to, one fewer at each
    /// `resources/unsubscribe` of one it was (conformance catalog only).
    #[must_use]
    pub fn with_subscription_count(mut self, count: Arc<AtomicUsize>) -> Self {
        self.subscribed = Some(count);
        self
    }

    /// The same, each `resources/subscribe` waiting `delay` before it takes effect and is
    /// answered: a subscribe long enough on its way for its caller to leave meanwhile.
    #[must_use]
    pub fn with_subscribe_delay(mut self, delay: Duration) -> Self {
        self.subscribe_delay = delay;
        self
    }

    /// The log of [`SharedState::with_traceparent_log`], if any.
    pub fn traceparent_log(&self) -> Option<&TraceparentLog> {
        self.traceparents.as_ref()
    }

    /// The header every request must carry, if any.
    pub fn required_header(&self) -> Option<(&str, &str)> {
        self.required_header
            .as_ref()
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of generated tools (`gen_0000` ..) this server exposes.
    pub fn generated_tools(&self) -> usize {
        self.generated_tools
    }

    /// The number of `sleep` and `progress` calls running right now.
    pub fn inflight_calls(&self) -> usize {
        self.inflight_calls.load(Ordering::SeqCst)
    }

    /// Whether `name` is one of the generated tools of this server.
    fn is_generated_tool(&self, name: &str) -> bool {
        name.strip_prefix(catalog::GENERATED_PREFIX)
            .and_then(|index| index.parse::<usize>().ok())
            .is_some_and(|index| {
                index < self.generated_tools && catalog::generated_tool_name(index) == name
            })
    }
}

/// Counts one running `sleep` or `progress` call for as long as it lives.
struct InflightGuard<'a>(&'a AtomicUsize);

impl<'a> InflightGuard<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The MCP server handler of one session.
#[derive(Debug)]
pub struct FixtureServer {
    /// Shared with every other session of the same server.
    state: Arc<SharedState>,
    /// Minimum level set by `logging/setLevel`; `None` (the default) sends every level.
    /// A std mutex: it is held only to copy the value, never across an await.
    log_level: Mutex<Option<LoggingLevel>>,
    /// Resources this session subscribed to (conformance catalog only). A std mutex, held
    /// only to update the set.
    subscriptions: Arc<Mutex<conformance::Subscriptions>>,
}

/// Arguments of `echo` (no `text`: an empty text).
#[derive(Deserialize)]
struct EchoArgs {
    #[serde(default)]
    text: String,
}

/// Arguments of `payload`.
#[derive(Deserialize)]
struct PayloadArgs {
    size_bytes: u64,
}

/// Arguments of `sleep`.
#[derive(Deserialize)]
struct SleepArgs {
    ms: u64,
}

/// Arguments of `progress`.
#[derive(Deserialize)]
struct ProgressArgs {
    steps: u32,
    interval_ms: u64,
    /// Append the send time to each message (`step N sent_unix_ns=T`, wall clock), so a
    /// client on the same machine can measure each notification's delivery latency.
    #[serde(default)]
    stamp: bool,
}

/// Arguments of `add_tool` and `remove_tool`.
#[derive(Deserialize)]
struct NameArgs {
    name: String,
}

/// Arguments of `fail`.
#[derive(Deserialize)]
struct FailArgs {
    message: String,
}

impl FixtureServer {
    /// A handler for one new session.
    pub fn new(state: Arc<SharedState>) -> Self {
        Self {
            state,
            log_level: Mutex::new(None),
            subscriptions: Arc::new(Mutex::new(conformance::Subscriptions::default())),
        }
    }

    /// `sleep`: waits `ms` milliseconds unless the request is cancelled first.
    async fn sleep(
        &self,
        args: SleepArgs,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let _inflight = InflightGuard::enter(&self.state.inflight_calls);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(args.ms)) => {
                Ok(text_result(format!("slept {} ms", args.ms)))
            }
            () = context.ct.cancelled() => {
                tracing::debug!(id = %context.id, "sleep cancelled");
                Ok(cancelled_result())
            }
        }
    }

    /// `progress`: notifies each step, logs once, then returns. Counted in `inflight` from
    /// start to end; a cancellation (while it waits or while a notification is being sent)
    /// ends it at once.
    async fn progress(
        &self,
        args: ProgressArgs,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let _inflight = InflightGuard::enter(&self.state.inflight_calls);
        let token = context.meta.get_progress_token();
        for step in 1..=args.steps {
            if let Some(token) = &token {
                let params = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(args.steps))
                    .with_message(if args.stamp {
                        let sent = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos());
                        format!("step {step} sent_unix_ns={sent}")
                    } else {
                        format!("step {step}")
                    });
                tokio::select! {
                    sent = context.peer.notify_progress(params) => {
                        sent.map_err(|error| peer_gone(&error))?;
                    }
                    () = context.ct.cancelled() => return Ok(cancelled_result()),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(args.interval_ms)) => {}
                () = context.ct.cancelled() => {
                    tracing::debug!(id = %context.id, step, "progress cancelled");
                    return Ok(cancelled_result());
                }
            }
        }
        self.log(
            context,
            LoggingLevel::Info,
            format!("progress finished after {} steps", args.steps),
        )
        .await?;
        Ok(text_result(format!("done {} steps", args.steps)))
    }

    /// Sends one `notifications/message` tied to the request being handled, unless the
    /// client asked for a higher minimum level: a 2025-11-25 session with `logging/setLevel`
    /// (none set: every level), an MCP 2026-07-28 request with
    /// `_meta['io.modelcontextprotocol/logLevel']` (none set: nothing is sent).
    async fn log(
        &self,
        context: &RequestContext<RoleServer>,
        level: LoggingLevel,
        message: String,
    ) -> Result<(), ErrorData> {
        let minimum = if is_2026_request(context) {
            let Some(minimum) = context.meta.log_level() else {
                return Ok(());
            };
            Some(minimum)
        } else {
            *self.log_level.lock().unwrap_or_else(|e| e.into_inner())
        };
        if minimum.is_some_and(|minimum| severity(level) < severity(minimum)) {
            return Ok(());
        }
        let mut notification = LoggingMessageNotification::new(
            LoggingMessageNotificationParam::new(level, message.into()).with_logger("fixture"),
        );
        notification
            .extensions
            .insert(RelatedRequest(context.id.clone()));
        context
            .peer
            .send_notification(ServerNotification::LoggingMessageNotification(notification))
            .await
            .map_err(|error| peer_gone(&error))
    }
}

impl ServerHandler for FixtureServer {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_prompts()
            .enable_resources()
            .enable_tools()
            .build();
        if self.state.dynamic
            && let Some(tools) = capabilities.tools.as_mut()
        {
            tools.list_changed = Some(true);
        }
        if self.state.conformance {
            capabilities.completions = Some(JsonObject::new());
            if let Some(resources) = capabilities.resources.as_mut() {
                resources.subscribe = Some(true);
            }
        }
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "mcp-fixture-server",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Test fixture: echo, payload, sleep, inflight, progress, fail and generated tools.",
            )
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        if self.state.dynamic {
            self.state
                .peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(context.peer);
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.state.listed_tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // What rmcp's HTTP service checks `Mcp-Param-*` headers against (SEP-2243); only
        // conformance tools carry `x-mcp-header` annotations, so no other lookup is needed.
        if !(self.state.conformance && conformance::is_tool(name)) {
            return None;
        }
        self.state.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(mrtr) = &self.state.mrtr
            && mrtr::is_tool(&request.name)
        {
            return mrtr.call_tool(&request, &context);
        }
        let name = request.name.as_ref();
        let args = request.arguments.unwrap_or_default();
        let result = match name {
            catalog::ECHO => text_result(parse_args::<EchoArgs>(name, args)?.text),
            catalog::PAYLOAD => payload(parse_args::<PayloadArgs>(name, args)?.size_bytes)?,
            catalog::SLEEP => self.sleep(parse_args(name, args)?, &context).await?,
            catalog::INFLIGHT => text_result(self.state.inflight_calls().to_string()),
            catalog::PROGRESS => self.progress(parse_args(name, args)?, &context).await?,
            catalog::FAIL => CallToolResult::error(vec![ContentBlock::text(
                parse_args::<FailArgs>(name, args)?.message,
            )]),
            generated if self.state.is_generated_tool(generated) => text_result(generated),
            catalog::ADD_TOOL | catalog::REMOVE_TOOL if self.state.dynamic => {
                let args: NameArgs = parse_args(name, args)?;
                self.state
                    .change_tools(&args.name, name == catalog::ADD_TOOL, &context.peer)
                    .await?
            }
            added if self.state.dynamic && self.state.is_added(added) => {
                text_result(format!("added tool {added}"))
            }
            // Reached only where its stream cannot be resumed (a request of the sessionless
            // era); otherwise `crate::reconnect` answers it in front of rmcp.
            crate::reconnect::TOOL if self.state.conformance => {
                text_result(crate::reconnect::ANSWER)
            }
            test if self.state.conformance && conformance::is_tool(test) => {
                conformance::call_tool(test, &args, &context, |level, message| {
                    self.log(&context, level, message)
                })
                .await?
            }
            unknown => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool: {unknown}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = catalog::resources();
        if self.state.conformance {
            resources.extend(conformance::resources());
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let mut templates = catalog::resource_templates();
        if self.state.conformance {
            templates.extend(conformance::resource_templates());
        }
        Ok(ListResourceTemplatesResult::with_all_items(templates))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        if self.state.conformance
            && let Some(result) = conformance::read_resource(&uri)?
        {
            return Ok(result.into());
        }
        let text = if uri == catalog::README_URI {
            catalog::README_TEXT.to_owned()
        } else if let Some(id) = uri
            .strip_prefix(catalog::ITEM_URI_PREFIX)
            .filter(|id| !id.is_empty() && !id.contains('/'))
        {
            format!("item {id}")
        } else {
            return Err(ErrorData::resource_not_found(
                format!("no resource at {uri}"),
                None,
            ));
        };
        let contents = ResourceContents::text(text, uri).with_mime_type("text/plain");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let mut prompts = catalog::prompts();
        if self.state.conformance {
            prompts.extend(conformance::prompts());
            prompts.push(mrtr::prompt());
        }
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if let Some(mrtr) = &self.state.mrtr
            && request.name == mrtr::PROMPT
        {
            return mrtr.get_prompt(&request, &context);
        }
        if self.state.conformance && conformance::is_prompt(&request.name) {
            return Ok(conformance::get_prompt(&request.name, request.arguments.as_ref())?.into());
        }
        if request.name != catalog::GREET {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt: {}", request.name),
                None,
            ));
        }
        let name = request
            .arguments
            .as_ref()
            .and_then(|arguments| arguments.get("name"))
            .and_then(|name| name.as_str())
            .ok_or_else(|| {
                ErrorData::invalid_params("prompt greet requires the argument name", None)
            })?;
        let message = PromptMessage::new_text(Role::User, format!("Hello, {name}!"));
        Ok(GetPromptResult::new(vec![message])
            .with_description("A greeting")
            .into())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.log_level.lock().unwrap_or_else(|e| e.into_inner()) = Some(request.level);
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        if !self.state.conformance {
            return Err(ErrorData::method_not_found::<
                rmcp::model::CompleteRequestMethod,
            >());
        }
        Ok(conformance::complete(&request))
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if !self.state.conformance {
            return Err(ErrorData::method_not_found::<
                rmcp::model::SubscribeRequestMethod,
            >());
        }
        if !self.state.subscribe_delay.is_zero() {
            tokio::time::sleep(self.state.subscribe_delay).await;
        }
        let newly = {
            let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            let newly = !subs.contains(&request.uri);
            subs.subscribe(&request.uri)?;
            newly
        };
        if newly && let Some(count) = &self.state.subscribed {
            count.fetch_add(1, Ordering::SeqCst);
        }
        if newly {
            // The watched resource "changes" every UPDATE_PERIOD while subscribed: each
            // change is one `notifications/resources/updated` on the session's standalone
            // stream, until the session unsubscribes or goes away.
            let (subs, peer, uri) = (Arc::clone(&self.subscriptions), context.peer, request.uri);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(UPDATE_PERIOD).await;
                    if !subs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&uri)
                    {
                        break;
                    }
                    let params = rmcp::model::ResourceUpdatedNotificationParam::new(uri.clone());
                    if peer.notify_resource_updated(params).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // `subscriptions/listen` (MCP 2026-07-28) for the conformance catalog only; rmcp
        // narrows the filter to what the server advertises (resource subscriptions; tool
        // list changes with dynamic tools) and sends the acknowledgment.
        self.state.conformance.then(|| requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        // The watched resource "changes" every UPDATE_PERIOD, as for a 2025-11-25
        // `resources/subscribe`, until the client closes the stream.
        let watched = context
            .accepted()
            .resource_subscriptions
            .as_ref()
            .is_some_and(|uris| uris.iter().any(|uri| uri == conformance::WATCHED_URI));
        if !watched {
            context.cancelled().await;
            return Ok(());
        }
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = tokio::time::sleep(UPDATE_PERIOD) => {
                    if context.sink().notify_resource_updated(conformance::WATCHED_URI).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let was = {
            let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            let was = subs.contains(&request.uri);
            subs.unsubscribe(&request.uri);
            was
        };
        if was && let Some(count) = &self.state.subscribed {
            count.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Whether `context` is a request of MCP 2026-07-28 or later (by its `_meta`; a 2025-11-25
/// session's requests carry no protocol version there).
fn is_2026_request(context: &RequestContext<RoleServer>) -> bool {
    context
        .meta
        .protocol_version()
        .is_some_and(|v| v.as_str() >= rmcp::model::ProtocolVersion::V_2026_07_28.as_str())
}

/// How often a subscribed resource of the conformance catalog reports a change.
const UPDATE_PERIOD: Duration = Duration::from_millis(200);

/// `payload`: `size_bytes` ASCII bytes (`x`) in one text item.
fn payload(size_bytes: u64) -> Result<CallToolResult, ErrorData> {
    if size_bytes > catalog::MAX_PAYLOAD_BYTES {
        return Err(ErrorData::invalid_params(
            format!(
                "size_bytes {size_bytes} exceeds the fixture limit of {} bytes",
                catalog::MAX_PAYLOAD_BYTES
            ),
            None,
        ));
    }
    let size = usize::try_from(size_bytes)
        .map_err(|_| ErrorData::invalid_params("size_bytes does not fit in memory", None))?;
    Ok(text_result("x".repeat(size)))
}

/// A successful result with one text item.
fn text_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

/// Decodes a tool's arguments, answering `-32602` when they do not match its schema.
fn parse_args<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, ErrorData> {
    serde_json::from_value(serde_json::Value::Object(args)).map_err(|error| {
        ErrorData::invalid_params(format!("invalid arguments for {tool}: {error}"), None)
    })
}

/// What a tool returns once its request was cancelled. rmcp still emits a response;
/// `crate::session` drops it so the client sees none, as the spec asks. A tool result
/// rather than a JSON-RPC error keeps rmcp from logging a warning for every cancellation.
fn cancelled_result() -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text("cancelled")])
}

/// The error when a notification cannot be sent because the session is gone.
fn peer_gone(error: &rmcp::service::ServiceError) -> ErrorData {
    ErrorData::internal_error(format!("cannot notify the client: {error}"), None)
}

/// Syslog-style severity rank, lowest first, to compare logging levels.
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tools_are_recognised_only_within_range() {
        let state = SharedState::new(3);
        assert!(state.is_generated_tool("gen_0000"));
        assert!(state.is_generated_tool("gen_0002"));
        assert!(!state.is_generated_tool("gen_0003"));
        assert!(!state.is_generated_tool("gen_2"));
        assert!(!state.is_generated_tool("echo"));
    }

    #[test]
    fn payload_has_the_requested_length() {
        let result = payload(1000).unwrap();
        let text = &result.content[0].as_text().unwrap().text;
        assert_eq!(text.len(), 1000);
        assert!(text.bytes().all(|byte| byte == b'x'));
    }

    #[test]
    fn inflight_guard_counts_while_alive() {
        let counter = AtomicUsize::new(0);
        {
            let _guard = InflightGuard::enter(&counter);
            assert_eq!(counter.load(Ordering::SeqCst), 1);
        }
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }
}
