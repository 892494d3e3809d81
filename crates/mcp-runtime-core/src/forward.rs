//! The life of one upstream call: claimed under the caller's request id, sent with an id and
//! progress token unique within the shared upstream session, bounded by the upstream timeout
//! and by cancellation, and relayed back under the caller's id and token, as one JSON answer
//! when the response comes first or as an SSE stream when notifications (progress, logging)
//! precede it. A request the upstream sends on the call's stream (sampling, elicitation, roots)
//! goes to the caller on that stream too ([`crate::server_requests`]).
//!
//! Tasks: a call that turns into an SSE stream continues in a task ([`pump`]) spawned on the
//! runtime's [`TaskTracker`]; a call that ends unanswered (caller gone, deadline, cancel)
//! spawns its `notifications/cancelled` on the same tracker. A [`Call`] holds a token of that
//! tracker and spawns its notification in `drop` before the token is released (fields drop
//! after `drop` runs), so the tracker never reaches zero between the call and its
//! notification: [`Runtime::cancel_calls`] cannot return before the notification is sent.
//!
//! What is relayed: SSE event data is the upstream's text, passed through unparsed except
//! for the envelope (`id`, `result`/`error` copied as raw JSON, notifications' params
//! re-encoded). A plain `application/json` answer is parsed by rmcp into its typed message and
//! serialised again (see [`crate::upstream`]), so its bytes are rmcp's encoding of that message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use crate::dispatch::{Hook, hook_broken};
use crate::error::RequestError;
use crate::jsonrpc;
use crate::quota::{Permit, Quota};
use crate::request::{Outcome, SseEvent};
use crate::runtime::Runtime;
use crate::server_requests::CallRequests;
use crate::session::Session;
use crate::state::StreamWriter;
use crate::upstream::{MessageStream, Upstream, UpstreamError};

impl Runtime {
    /// Calls an upstream and relays its answer: JSON when the response comes first, an SSE
    /// stream when notifications precede it and the caller accepts SSE.
    ///
    /// `(accepts_sse, live)`: whether the caller takes an SSE answer, and whether it reads its
    /// events as they come ([`crate::request::Request::live_events`]); a server-to-client
    /// request of the upstream is relayed only to a live caller, and refused to the upstream
    /// otherwise.
    ///
    /// # Errors
    ///
    /// The [`RequestError`] the caller is answered with (under its request id) when the call
    /// fails before an SSE stream starts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn forward(
        self: &Arc<Self>,
        session: &Arc<Session>,
        id: &RawValue,
        up: Arc<Upstream>,
        method: &str,
        mut params: Map<String, Value>,
        (accepts_sse, live): (bool, bool),
        post: Option<Hook>,
        (traceparent, param_headers): (Option<&str>, Vec<(String, String)>),
    ) -> Result<Outcome, RequestError> {
        check_progress_token(&params)?;
        // A sessionless client's call that may need its input (SEP-2322) goes to an upstream
        // of its era as a request of that era, its `_meta` (protocol version, the client's
        // capabilities) kept, so the upstream may answer `input_required` and the client's
        // retry reaches the same upstream the same way. Anything else goes through the
        // runtime's own session with the upstream, which the reserved `_meta` keys are not
        // for.
        let sessionless = session.sessionless
            && matches!(method, "tools/call" | "prompts/get" | "resources/read")
            && up.speaks_sessionless().await;
        if !sessionless {
            crate::era::strip_reserved_meta(&mut params);
        }
        let uid = up.next_id();
        let caller_token = swap_progress_token(&mut params, uid);
        let slot = self.quotas.acquire(&session.subject, Quota::Calls, 1)?;
        let cancel = claim(session, id)?;
        let mut call = Call::start(self, Arc::clone(&up), uid, session, id, slot);
        call.sessionless = sessionless;
        call.method = crate::metrics::McpMethod::of(method);
        // The CLIENT span of the call (tracing on: the child of the request span), whose
        // context the upstream receives as `traceparent`; with tracing off the context the
        // request arrived with goes on unchanged.
        let span = tracing::info_span!(
            target: crate::trace::TARGET,
            "upstream call",
            otel.name = %format_args!("{} {}", call.method.as_str(), up.config.id),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            mcp.method.name = call.method.as_str(),
            mcp.upstream = up.config.id.as_str(),
            error.type = tracing::field::Empty,
        );
        let own = crate::trace::traceparent_of(&span);
        let traceparent = own.as_deref().or(traceparent);
        if !span.is_disabled() {
            call.span = Some(span.clone());
        }
        let bounds = Bounds {
            deadline: Instant::now() + self.config.upstream_timeout,
            timeout: self.config.upstream_timeout,
            cancel,
        };
        let mut stream = match bounds
            .run(
                up.request(
                    uid,
                    method,
                    Value::Object(params),
                    traceparent,
                    sessionless.then_some(param_headers.as_slice()),
                )
                .instrument(span),
            )
            .await?
        {
            Ok(s) => s,
            Err(e) => {
                call.done = true;
                call.failed = true;
                return Err(e.into());
            }
        };
        let relay = Relay {
            id: id.to_owned(),
            caller_token,
            limit: self.config.max_message_bytes,
            requests: CallRequests {
                session: Arc::clone(session),
                up: Arc::clone(&up),
                call: id.get().to_owned(),
                tasks: self.tasks.clone(),
            },
            streams: live,
            result_fields: if !session.sessionless {
                &[]
            } else if method == "resources/read" {
                // A read says how long it may be cached: not at all, since the upstream told
                // nothing (0: immediately stale), and only by this caller.
                &[
                    ("resultType", r#""complete""#),
                    ("ttlMs", "0"),
                    ("cacheScope", r#""private""#),
                ]
            } else {
                &[("resultType", r#""complete""#)]
            },
        };
        let first = loop {
            let next = bounds.run(stream.next()).await?;
            let next = match next {
                Some(Err(UpstreamError::Polled {
                    last_event_id,
                    retry_ms,
                })) => {
                    if accepts_sse && !session.sessionless {
                        // The caller's stream is closed the same way (`pump`).
                        stream = futures::stream::iter([Err(UpstreamError::Polled {
                            last_event_id,
                            retry_ms,
                        })])
                        .boxed();
                        break None;
                    }
                    match bounds.run(repoll(&up, last_event_id, retry_ms)).await? {
                        Ok(s) => {
                            stream = s;
                            continue;
                        }
                        Err(e) => Some(Err(e)),
                    }
                }
                next => next,
            };
            match relay.classify(next) {
                Step::Final(body) => {
                    call.done = true;
                    // Counted from here until the adapter has written it (or the caller went
                    // away); a post hook's payloads are counted while it runs (`post_hook`).
                    let mut held =
                        self.quotas
                            .acquire(&session.subject, Quota::Bytes, body.len())?;
                    let body = match &post {
                        Some(hook) => self.post_hook(hook, id, body, &mut held).await?,
                        None => Bytes::from(body),
                    };
                    let status = if session.sessionless {
                        sessionless_status(&body)
                    } else {
                        200
                    };
                    return Ok(Outcome::json(status, held.hold_in(body)));
                }
                Step::Skip => {}
                Step::Event(_) if !accepts_sse => {}
                Step::Event(ev) => break Some(ev),
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let post = post.map(|hook| PostHook {
            hook,
            runtime: Arc::clone(self),
            subject: session.subject.clone(),
        });
        // Every event of the stream gets an id and is stored before it is sent
        // (`crate::state`), so the stream can be resumed.
        let log = StreamWriter::open(&self.store, session, id.get(), self.config.state.retention);
        let out = Out::new(tx, log);
        let rest = pump(stream, out, first, call, relay, bounds, post);
        self.tasks.spawn(rest.instrument(tracing::Span::current()));
        Ok(Outcome::events(rx))
    }
}

/// The HTTP status of a sessionless call's JSON answer `body`: 400 for the errors MCP
/// 2026-07-28 sends with it (transports: `-32020` a header that does not match the body,
/// `-32021` a capability the request did not declare, `-32022` an unsupported version), as
/// the upstream sent them; 200 for anything else.
fn sessionless_status(body: &[u8]) -> u16 {
    #[derive(Deserialize)]
    struct Answer {
        error: Option<Code>,
    }
    #[derive(Deserialize)]
    struct Code {
        code: i64,
    }
    // Only an error answer is read, and it is small. Its key may be followed by whitespace
    // (`"error": {`, as Python's `json.dumps` writes it, or pretty-printed) or spelled with a
    // `\u` escape: the bytes check looks for the key alone, or for an escape.
    if body.len() > 64 * 1024 {
        return 200;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return 200;
    };
    if !crate::era::may_name(text, "\"error\"") {
        return 200;
    }
    match serde_json::from_str::<Answer>(text) {
        Ok(Answer {
            error: Some(Code {
                code: -32022..=-32020,
            }),
        }) => 400,
        _ => 200,
    }
}

/// How long to wait before resuming an upstream stream closed to be polled: the `retry` it
/// asked for, within 10 ms and 5 s (1 s when it sent none), so that neither a zero nor a
/// day-long value holds the call; the call's deadline bounds the polling as a whole.
fn poll_delay(retry_ms: Option<u64>) -> Duration {
    Duration::from_millis(retry_ms.unwrap_or(1_000).clamp(10, 5_000))
}

/// Resumes a call whose stream `up` closed after `last_event_id`, after [`poll_delay`].
async fn repoll(
    up: &Upstream,
    last_event_id: String,
    retry_ms: Option<u64>,
) -> Result<MessageStream, UpstreamError> {
    tokio::time::sleep(poll_delay(retry_ms)).await;
    tracing::debug!(upstream = %up.config.id, %last_event_id, "resuming a call's stream the upstream closed");
    up.resume(last_event_id).await
}

impl Runtime {
    /// Runs a post hook on the `result` of a call's answer `body` (an error answer is relayed
    /// as it is) and returns the body to send.
    ///
    /// `held` counts `body` on entry and what is returned on exit. While the hook runs it also
    /// counts the payload's copy the Core SPI transport sends, and, once the hook answered, its
    /// changed payload: a budget with room for the answer but not for the hook's copies refuses
    /// the request (503 or 429) instead of growing the process. The result is shown to the hook
    /// as a slice of `body` (no copy in the runtime).
    ///
    /// # Errors
    ///
    /// The hook's [`RequestError`] (denied, or the policy unavailable), or the quota's when
    /// the hook's payloads do not fit.
    async fn post_hook(
        &self,
        hook: &Hook,
        id: &RawValue,
        body: Vec<u8>,
        held: &mut Permit,
    ) -> Result<Bytes, RequestError> {
        let body = Bytes::from(body);
        let result = match serde_json::from_slice::<UpMessage<'_>>(&body) {
            Ok(UpMessage {
                result: Some(r), ..
            }) => body.slice_ref(r.get().as_bytes()),
            // An error answer has no result to show the hook: relayed as it is.
            Ok(_) => return Ok(body),
            // A result the hook cannot be shown is refused, never relayed unchecked.
            Err(e) => {
                tracing::warn!(error = %e, "answer not readable for its post hook: request refused");
                return Err(RequestError::PolicyUnavailable);
            }
        };
        held.resize(body.len() + result.len())?;
        let answer = hook.run(self.hooks.as_deref(), result).await?;
        match answer {
            None => {
                held.resize(body.len())?;
                Ok(body)
            }
            Some(new) => {
                // The changed payload and the answer built from it (about as large).
                held.resize(body.len() + 2 * new.len())?;
                drop(body);
                let raw: &RawValue = serde_json::from_slice(&new).map_err(|e| hook_broken(&e))?;
                if !raw.get().trim_start().starts_with('{') {
                    return Err(RequestError::PolicyUnavailable);
                }
                let out = jsonrpc::result_body(id, raw.get());
                drop(new);
                held.resize(out.len())?;
                Ok(Bytes::from(out))
            }
        }
    }
}

/// Checks the caller's progress token, if any.
///
/// # Errors
///
/// [`RequestError::InvalidParams`] for a token that is neither a string nor an integer (MCP,
/// basic, progress: "The progress token MUST be a string or integer value").
fn check_progress_token(params: &Map<String, Value>) -> Result<(), RequestError> {
    match params
        .get("_meta")
        .and_then(Value::as_object)
        .and_then(|m| m.get("progressToken"))
    {
        Some(t) if !(t.is_string() || t.is_i64() || t.is_u64()) => {
            Err(RequestError::InvalidParams(
                "_meta.progressToken must be a string or an integer".to_owned(),
            ))
        }
        _ => Ok(()),
    }
}

/// Replaces the caller's progress token by `uid`, which is unique within the shared upstream
/// session, and returns the caller's, to be restored on the way back.
fn swap_progress_token(params: &mut Map<String, Value>, uid: u64) -> Option<Value> {
    let meta = params.get_mut("_meta").and_then(Value::as_object_mut)?;
    meta.contains_key("progressToken")
        .then(|| meta.insert("progressToken".to_owned(), json!(uid)))
        .flatten()
}

/// Registers the call under the caller's request id and returns its cancellation (by the
/// caller's `notifications/cancelled`, or by the end of the session).
///
/// # Errors
///
/// [`RequestError::DuplicateRequestId`] when a request with this id is in flight in the
/// session (MCP, basic, requests: an id "MUST NOT have been previously used by the requestor
/// within the same session"): a second call would make the first uncancellable, so it is
/// refused and nothing is sent upstream.
fn claim(session: &Session, id: &RawValue) -> Result<CancellationToken, RequestError> {
    use std::collections::hash_map::Entry;
    let mut inflight = session
        .inflight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match inflight.entry(id.get().to_owned()) {
        Entry::Occupied(_) => Err(RequestError::DuplicateRequestId),
        Entry::Vacant(v) => {
            let cancel = session.ended.child_token();
            v.insert(cancel.clone());
            Ok(cancel)
        }
    }
}

/// The bounds of one upstream call: its deadline and its cancellation.
struct Bounds {
    deadline: Instant,
    timeout: Duration,
    cancel: CancellationToken,
}

impl Bounds {
    /// Runs `step` of the call unless the deadline passes or the call is cancelled first.
    async fn run<T>(&self, step: impl Future<Output = T>) -> Result<T, RequestError> {
        tokio::select! {
            r = tokio::time::timeout_at(self.deadline, step) => {
                r.map_err(|_| RequestError::UpstreamTimeout(self.timeout))
            }
            () = self.cancel.cancelled() => Err(RequestError::Cancelled),
        }
    }
}

/// One upstream call under way, from its claim to its answer. Dropped before `done` (caller
/// gone, deadline, cancel), it sends `notifications/cancelled` upstream so the upstream stops
/// working.
struct Call {
    up: Arc<Upstream>,
    uid: u64,
    /// Set once the upstream answered (or failed): nothing to cancel then.
    done: bool,
    /// Set when the upstream could not be reached (the `error` outcome of the metrics, as is
    /// a call dropped before `done`: timed out or cancelled).
    failed: bool,
    /// When the call started and its `mcp_method` label (metrics only).
    started: Instant,
    method: crate::metrics::McpMethod,
    session: Arc<Session>,
    /// The caller's raw request id, its key in the session's in-flight table.
    key: String,
    /// [`Runtime::inflight_upstream_calls`]: observability only.
    counter: Arc<AtomicUsize>,
    /// The call's CLIENT span (tracing on), ended when the call ends; ERROR when `failed` or
    /// dropped before `done`.
    span: Option<tracing::Span>,
    /// Sent as a request of the sessionless era: no session to send
    /// `notifications/cancelled` in; closing the request (dropping its stream) cancels it.
    sessionless: bool,
    /// The call's place in its subject's quota of calls in flight.
    _slot: Permit,
    /// Counts the call as a task of the runtime's tracker. A field, so it is released after
    /// `drop` has spawned the notification on the same tracker.
    tracked: TaskTrackerToken,
}

impl Call {
    fn start(
        rt: &Runtime,
        up: Arc<Upstream>,
        uid: u64,
        session: &Arc<Session>,
        id: &RawValue,
        slot: Permit,
    ) -> Self {
        rt.inflight_upstream.fetch_add(1, Ordering::Relaxed);
        Self {
            up,
            uid,
            done: false,
            failed: false,
            sessionless: false,
            started: Instant::now(),
            method: crate::metrics::McpMethod::UNKNOWN,
            session: Arc::clone(session),
            key: id.get().to_owned(),
            counter: Arc::clone(&rt.inflight_upstream),
            span: None,
            _slot: slot,
            tracked: rt.tasks.token(),
        }
    }

    fn tracker(&self) -> &TaskTracker {
        self.tracked.task_tracker()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(span) = &self.span
            && (self.failed || !self.done)
        {
            span.record("otel.status_code", "ERROR");
            span.record(
                "error.type",
                if self.failed {
                    "unavailable"
                } else {
                    "cancelled"
                },
            );
        }
        if let Some(m) = crate::metrics::get() {
            m.record_upstream(
                &self.up.label,
                self.method,
                self.done && !self.failed,
                self.started.elapsed().as_secs_f64(),
            );
        }
        self.session
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        // The upstream requests of the call still awaiting the client get an error answer.
        crate::server_requests::abandon(&self.session, &self.key, self.tracker());
        if !self.done && !self.sessionless {
            tracing::debug!(upstream = %self.up.config.id, request = self.uid, "cancelling upstream call");
            let cancelled = Arc::clone(&self.up).notify(
                "notifications/cancelled",
                json!({"requestId": self.uid, "reason": "caller cancelled or timed out"}),
            );
            self.tracker().spawn(cancelled);
        }
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Restores the caller's id and progress token on messages coming back from upstream, and
/// passes the upstream's requests to the caller under the runtime's ids.
struct Relay {
    id: Box<RawValue>,
    caller_token: Option<Value>,
    limit: usize,
    /// The upstream requests of this call ([`crate::server_requests`]).
    requests: CallRequests,
    /// The caller takes an SSE answer: only then can an upstream request reach it.
    streams: bool,
    /// The caller speaks MCP 2026-07-28 (a sessionless request): the members that revision
    /// requires of this call's result and a 2025-11-25 upstream does not send, with the value
    /// each gets when absent (`with_fields`).
    result_fields: &'static [(&'static str, &'static str)],
}

/// What one upstream message means for the caller.
enum Step {
    /// The call's answer (its response, or the error that ends it): a JSON-RPC body.
    Final(Vec<u8>),
    /// A notification, or an upstream request under the runtime's id, to relay.
    Event(SseEvent),
    /// Nothing to relay.
    Skip,
}

#[derive(Deserialize)]
struct UpMessage<'a> {
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

impl Relay {
    /// Classifies the next item of the upstream's message stream (`None`: it ended).
    fn classify(&self, next: Option<Result<String, UpstreamError>>) -> Step {
        let raw = match next {
            None => return self.fail(&RequestError::UpstreamStreamEnded),
            Some(Err(e)) => return self.fail(&e.into()),
            Some(Ok(raw)) => raw,
        };
        let Ok(m) = serde_json::from_str::<UpMessage<'_>>(&raw) else {
            return self.fail(&RequestError::UpstreamInvalidMessage);
        };
        let (member, value) = match (m.method, m.id) {
            (Some(method), None) => return self.notification(&method, m.params),
            // A server-to-client request (sampling, elicitation, roots, ...): relayed under
            // the runtime's id, or answered by the runtime (`crate::server_requests`).
            (Some(method), Some(id)) => {
                return match self.requests.request(&method, id, m.params, self.streams) {
                    Some(ev) => Step::Event(ev),
                    None => Step::Skip,
                };
            }
            (None, _) => match (m.result, m.error) {
                (Some(result), _) if result.get().len() > self.limit => {
                    return self.fail(&RequestError::ResultTooLarge {
                        size: result.get().len(),
                        limit: self.limit,
                    });
                }
                (Some(result), _) if !self.result_fields.is_empty() => {
                    if let Some(completed) = with_fields(result.get(), self.result_fields) {
                        return Step::Final(jsonrpc::response_body(&self.id, "result", &completed));
                    }
                    ("result", result.get())
                }
                (Some(result), _) => ("result", result.get()),
                (None, Some(err)) => ("error", err.get()),
                (None, None) => return Step::Skip,
            },
        };
        // The answer is built in the upstream message's own buffer (its head swapped for the
        // caller's id): a large result is never held twice here.
        let Some(span) = jsonrpc::span_in(&raw, value) else {
            return Step::Final(jsonrpc::response_body(&self.id, member, value));
        };
        Step::Final(jsonrpc::response_body_reusing(raw, span, &self.id, member))
    }

    /// A notification under the caller's progress token; a progress notification of a call
    /// that had none is dropped.
    fn notification(&self, method: &str, params: Option<&RawValue>) -> Step {
        let mut params: Value = params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null);
        if method == "notifications/progress" {
            match (&self.caller_token, params.as_object_mut()) {
                (Some(t), Some(p)) => {
                    p.insert("progressToken".to_owned(), t.clone());
                }
                _ => return Step::Skip,
            }
        }
        if method == "notifications/message" {
            // Below the level the client set (`logging/setLevel`): not relayed.
            let floor = self
                .requests
                .session
                .log_level
                .load(std::sync::atomic::Ordering::Relaxed);
            let level = params
                .get("level")
                .and_then(Value::as_str)
                .and_then(crate::session::log_level)
                .unwrap_or(u8::MAX);
            if level < floor {
                return Step::Skip;
            }
        }
        if method == "notifications/cancelled" {
            // The upstream cancels one of its own requests: relayed under the runtime's id
            // when it reached the client, else there is nothing to tell the client.
            let ours = params
                .get("requestId")
                .and_then(|rid| self.requests.cancelled(rid));
            match (ours, params.as_object_mut()) {
                (Some(ours), Some(p)) => {
                    p.insert("requestId".to_owned(), ours);
                }
                _ => return Step::Skip,
            }
        }
        Step::Event(SseEvent::message(jsonrpc::notification_body(
            method, &params,
        )))
    }

    fn fail(&self, e: &RequestError) -> Step {
        Step::Final(e.body(Some(&self.id)))
    }
}

/// `result` (a result object) with each of `fields` (name, encoded value) it lacks put first
/// (MCP 2026-07-28: every result names its `resultType`, a read its `ttlMs` and `cacheScope`;
/// a 2025 upstream's results have none); `None` when it lacks none or is not an object.
fn with_fields(result: &str, fields: &[(&str, &str)]) -> Option<String> {
    let rest = result.trim_start().strip_prefix('{')?;
    let present: std::collections::HashMap<String, serde::de::IgnoredAny> =
        serde_json::from_str(result).ok()?;
    let missing: Vec<String> = fields
        .iter()
        .filter(|(name, _)| !present.contains_key(*name))
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    Some(format!("{{{}{sep}{rest}", missing.join(",")))
}

/// The post hook of a streamed call and the runtime that asks it, moved into [`pump`].
struct PostHook {
    hook: Hook,
    runtime: Arc<Runtime>,
    /// The caller's subject, whose bytes quota counts the hook's payloads.
    subject: String,
}

impl PostHook {
    /// The answer `body` after the post hook, or the error answer that replaces it; the bytes
    /// are counted while the hook runs (then the event channel holds the answer, as it holds
    /// every event).
    async fn run(&self, id: &RawValue, body: Vec<u8>) -> Vec<u8> {
        let counted = async {
            let mut held = self
                .runtime
                .quotas
                .acquire(&self.subject, Quota::Bytes, body.len())?;
            let out = self
                .runtime
                .post_hook(&self.hook, id, body, &mut held)
                .await?;
            Ok::<_, RequestError>(Vec::from(out))
        };
        counted.await.unwrap_or_else(|e| e.body(Some(id)))
    }
}

/// Relays the rest of a streamed upstream call into an SSE response, until the answer, the
/// deadline, a cancel, or the caller going away (then `call` sends `notifications/cancelled`).
/// With a shared store (Redis, [`StreamWriter::outlives_its_client`]) the caller going away
/// does not end the call: as the MCP transport says a disconnect SHOULD NOT cancel, the call
/// runs on and each event is still stored, so the client resumes the stream with
/// `Last-Event-ID` (on any replica) and gets the answer.
/// Notifications pass as they come; the answer goes through `post`, when the call has a post
/// hook, before it is sent (a refusal or an unreachable policy becomes the request's error).
///
/// An upstream that closes the call's stream to be polled (SEP-1699) is resumed with
/// `Last-Event-ID`; a caller of the session era is treated the same way: it gets a priming
/// event (an id, `retry`) and its stream closes, the call runs on with its events stored, and
/// the caller resumes with `Last-Event-ID` as the upstream asked the runtime to.
async fn pump(
    mut stream: MessageStream,
    mut out: Out,
    first: Option<SseEvent>,
    mut call: Call,
    relay: Relay,
    bounds: Bounds,
    post: Option<PostHook>,
) {
    if let Some(first) = first
        && out.send(first, false).await.is_err()
    {
        out.gone(&relay).await;
        return;
    }
    loop {
        let next = if out.log.outlives_its_client() || out.detached {
            bounds.run(stream.next()).await
        } else {
            tokio::select! {
                r = bounds.run(stream.next()) => r,
                () = out.tx.closed() => {
                    out.gone(&relay).await;
                    return;
                }
            }
        };
        let next = match next {
            Ok(Some(Err(UpstreamError::Polled {
                last_event_id,
                retry_ms,
            }))) => {
                if !relay.requests.session.sessionless && !out.detached {
                    out.close_for_polling(poll_delay(retry_ms)).await;
                }
                match bounds.run(repoll(&call.up, last_event_id, retry_ms)).await {
                    Ok(Ok(s)) => {
                        stream = s;
                        continue;
                    }
                    Ok(Err(e)) => Ok(Some(Err(e))),
                    Err(e) => Err(e),
                }
            }
            next => next,
        };
        let step = match next {
            Ok(next) => relay.classify(next),
            // Cancelled by the client, by the end of the session or at shutdown: the stream
            // still ends with an answer to its request, without waiting for room in it.
            Err(e @ RequestError::Cancelled) => {
                let mut ev = event(e.body(Some(&relay.id)));
                out.log.record(&mut ev, true).await;
                let _ = out.tx.try_send(ev);
                return;
            }
            Err(e) => {
                let _ = out.send(event(e.body(Some(&relay.id))), true).await;
                return;
            }
        };
        match step {
            Step::Skip => {}
            Step::Event(ev) => {
                if out.send(ev, false).await.is_err() {
                    out.gone(&relay).await;
                    return;
                }
            }
            Step::Final(body) => {
                call.done = true;
                let body = match &post {
                    Some(p) => p.run(&relay.id, body).await,
                    None => body,
                };
                let _ = out.send(event(body), true).await;
                return;
            }
        }
    }
}

/// The caller's side of a streamed call and the stream's history.
struct Out {
    tx: mpsc::Sender<SseEvent>,
    log: StreamWriter,
    /// The caller went away and the stream outlives it: events are only stored.
    detached: bool,
}

impl Out {
    fn new(tx: mpsc::Sender<SseEvent>, log: StreamWriter) -> Self {
        Self {
            tx,
            log,
            detached: false,
        }
    }

    /// Numbers and stores `ev` (`end`: the stream's last event), then sends it; once the
    /// caller went away from a stream that outlives its client, only stores it.
    ///
    /// # Errors
    ///
    /// The caller went away (and the stream does not outlive it).
    async fn send(&mut self, mut ev: SseEvent, end: bool) -> Result<(), ()> {
        self.log.record(&mut ev, end).await;
        if self.detached {
            return Ok(());
        }
        if self.tx.send(ev).await.is_ok() {
            return Ok(());
        }
        if self.log.outlives_its_client() {
            tracing::debug!("the client left a resumable stream: the call runs on");
            self.detached = true;
            return Ok(());
        }
        Err(())
    }

    /// Closes the caller's stream to be polled (SEP-1699): a priming event (the next id,
    /// `retry`) is stored and sent, then the stream ends; the call runs on, its events stored
    /// for the caller's `Last-Event-ID`.
    async fn close_for_polling(&mut self, retry: Duration) {
        let retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
        let mut ev = SseEvent::priming(retry_ms);
        self.log.record(&mut ev, false).await;
        let _ = self.tx.send(ev).await;
        self.detached = true;
        // Dropping the caller's sender ends its stream.
        self.tx = mpsc::channel(1).0;
    }

    /// The caller went away: the call is cancelled (its `Call` drops), and the stream's history
    /// ends with that answer, so a resumption ends instead of waiting for an answer that will
    /// never come.
    async fn gone(&mut self, relay: &Relay) {
        let mut ev = event(RequestError::Cancelled.body(Some(&relay.id)));
        self.log.record(&mut ev, true).await;
    }
}

fn event(body: Vec<u8>) -> SseEvent {
    SseEvent::message(String::from_utf8(body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_2026_errors_that_mean_a_bad_request_are_400() {
        let error = |code: i64| {
            format!(r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":{code},"message":"m"}}}}"#)
        };
        for code in [-32020, -32021, -32022] {
            assert_eq!(sessionless_status(error(code).as_bytes()), 400, "{code}");
        }
        for code in [-32019, -32023, -32602, -32603] {
            assert_eq!(sessionless_status(error(code).as_bytes()), 200, "{code}");
        }
        assert_eq!(
            sessionless_status(br#"{"jsonrpc":"2.0","id":1,"result":{"error":-32021}}"#),
            200
        );
        // However the upstream's encoder spaces or escapes it (Python's json.dumps writes
        // `"error": {`; pretty printers add a newline).
        for body in [
            "{\"jsonrpc\": \"2.0\", \"id\": 1, \"error\": {\"code\": -32020, \"message\": \"m\"}}",
            "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"error\" :\n {\"code\":-32022}\n}",
            r#"{"jsonrpc":"2.0","id":1,"\u0065rror":{"code":-32021,"message":"m"}}"#,
        ] {
            assert_eq!(sessionless_status(body.as_bytes()), 400, "{body}");
        }
    }

    #[test]
    fn a_result_gets_the_fields_it_lacks() {
        let typed = &[("resultType", r#""complete""#)];
        assert_eq!(
            with_fields(r#"{"content":[]}"#, typed).as_deref(),
            Some(r#"{"resultType":"complete","content":[]}"#)
        );
        assert_eq!(
            with_fields("{ }", typed).as_deref(),
            Some(r#"{"resultType":"complete" }"#)
        );
        assert_eq!(
            with_fields(r#"{"resultType":"input_required"}"#, typed),
            None
        );
        assert_eq!(with_fields("[]", typed), None);
        let read = &[("resultType", r#""complete""#), ("ttlMs", "0")];
        assert_eq!(
            with_fields(r#"{"ttlMs":5,"contents":[]}"#, read).as_deref(),
            Some(r#"{"resultType":"complete","ttlMs":5,"contents":[]}"#)
        );
    }
}
