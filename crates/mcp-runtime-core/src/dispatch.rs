//! Method dispatch: the MCP streamable-HTTP semantics (spec revisions 2025-03-26, 2025-06-18,
//! 2025-11-25, section "Transports") of one [`Request`], from the checks every request passes
//! to the JSON-RPC method it names.
//!
//! Order of the checks: virtual server (404), protocol version (400), then per HTTP method. A
//! GET: `Accept` (405), then the session, then the subject's stream quota (429). A DELETE: the
//! session. A POST: body size (413), the subject's and the process's bytes in flight (429,
//! 503), framing (400), `initialize` and `server/discover` (no session needed), the session (400
//! without one, 404 for an unknown one), then the JSON-RPC method. Calls to an upstream
//! (`tools/call`, `prompts/get`, `resources/read`) are routed through the catalog and handed
//! to [`crate::forward`].

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use bytes::Bytes;

use crate::auth::AuthContext;
use crate::catalog::Kind;
use crate::error::RequestError;
use crate::hooks::{CallRecord, HookCall, HookDecision, HookPoint, Hooks};
use crate::jsonrpc::{self, Incoming};
use crate::metrics::McpMethod;
use crate::quota::{BodyReservation, Quota};
use crate::request::{Method, Outcome, Request, SseEvent};
use crate::runtime::{PROTOCOL_VERSIONS, Runtime};
use crate::session::Session;
use crate::state::{EventId, Store, memory::After};

impl Runtime {
    /// Answers one request; every fault becomes its [`RequestError`] answer here.
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        req: Request,
        reserved: Option<BodyReservation>,
    ) -> Outcome {
        let mut label = match req.method {
            Method::Post => McpMethod::UNKNOWN,
            Method::Get => McpMethod::GET,
            Method::Delete => McpMethod::DELETE,
        };
        let mut outcome = self
            .checked(req, reserved, &mut label)
            .await
            .unwrap_or_else(|e| e.into_outcome(None));
        outcome.mcp_method = label;
        outcome
    }

    /// Answers `req`; a POST sets `label` to its method's once the body is parsed.
    async fn checked(
        self: &Arc<Self>,
        req: Request,
        reserved: Option<BodyReservation>,
        label: &mut McpMethod,
    ) -> Result<Outcome, RequestError> {
        if let Some(id) = req.server_id.as_deref()
            && !self.catalog.load().has_server(id)
        {
            return Err(RequestError::UnknownServer(id.to_owned()));
        }
        if let Some(v) = req.headers.protocol_version.as_deref()
            && !PROTOCOL_VERSIONS.contains(&v)
        {
            if crate::era::sessionless_version(v).is_some() {
                // MCP 2026-07-28 has no GET stream and no session to end.
                if req.method != Method::Post {
                    return Err(RequestError::NoSessionInThisRevision);
                }
            } else if crate::era::is_newer_unknown(v) {
                // A POST is answered once its id is read (`era::of`).
                if req.method != Method::Post {
                    return Err(RequestError::UnsupportedVersion(v.to_owned()));
                }
            } else {
                return Err(RequestError::UnsupportedProtocolVersion(v.to_owned()));
            }
        }
        match req.method {
            Method::Post => self.post(req, reserved, label).await,
            Method::Get => self.get(&req).await,
            Method::Delete => self.delete(&req).await,
        }
    }

    async fn delete(&self, req: &Request) -> Result<Outcome, RequestError> {
        let sid = req.headers.session_id.as_deref();
        self.end_session(sid, &req.auth.subject_email, req.server_id.as_deref())
            .await?;
        Ok(Outcome::empty(200))
    }

    /// A GET: the standalone stream, or with `Last-Event-ID` the resumption of the stream that
    /// id belongs to ([`Runtime::resume`]).
    async fn get(&self, req: &Request) -> Result<Outcome, RequestError> {
        if !req.headers.lists_sse() {
            // Not a JSON-RPC fault: an empty 405 naming the methods that remain.
            return Ok(Outcome::empty(405).with_header("allow", "POST, DELETE".to_owned()));
        }
        let session = self.session(req).await?;
        if let Some(last) = req
            .headers
            .last_event_id
            .as_deref()
            .filter(|l| !l.is_empty())
        {
            return self.resume(&session, &req.auth, last).await;
        }
        let permit = self.quotas.acquire(&session.subject, Quota::Streams, 1)?;
        let rx = self.open_standalone(&session, &req.auth, None).await?;
        Ok(Outcome::events_holding(rx, permit)
            .until_token_expiry(req.auth.token_expires_at_unix_s, None))
    }

    /// Opens `session`'s standalone stream here for the caller `auth`. It carries resource
    /// updates and list changes (`crate::subscribe`, `crate::live`) and stays open until the
    /// session ends (its sender is dropped) or the client goes away. In memory its events are
    /// sent as they come, without ids. With Redis this replica is recorded as the stream's
    /// holder (other replicas hand it the session's notifications); then, for a resumption,
    /// the events of the old stream after `after` go first (read once the holder is recorded,
    /// so a notification produced meanwhile is either among them or comes here), and every
    /// new event is stored in the stream's history with an id before it is sent, so a
    /// `Last-Event-ID` on any replica replays what the client missed.
    ///
    /// # Errors
    ///
    /// [`RequestError::StateUnavailable`] when Redis does not answer;
    /// [`RequestError::UnknownSession`] when its record is gone.
    async fn open_standalone(
        &self,
        session: &Arc<Session>,
        auth: &AuthContext,
        after: Option<&EventId>,
    ) -> Result<mpsc::Receiver<SseEvent>, RequestError> {
        let (tx, rx) = mpsc::channel(16);
        *session
            .viewer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(auth.clone());
        let Store::Redis(r) = &self.store else {
            *session
                .standalone
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
            return Ok(rx);
        };
        // Notifications wait here until the replay is sent.
        let (input, events) = mpsc::channel(16);
        *session
            .standalone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(input);
        let replay = async {
            if !r.claim_stream(&session.id).await? {
                self.sessions.end_local(&session.id);
                return Err(RequestError::UnknownSession);
            }
            match after {
                Some(after) => Ok(r.replay(&session.id, after).await?),
                None => Ok(Vec::new()),
            }
        };
        let replay = match replay.await {
            Ok(events) => events,
            Err(e) => {
                session
                    .standalone
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                return Err(e);
            }
        };
        let writer =
            crate::state::StreamWriter::open(&self.store, session, "", self.config.state.retention);
        tokio::spawn(writer.pump(replay, events, tx));
        Ok(rx)
    }

    async fn post(
        self: &Arc<Self>,
        mut req: Request,
        reserved: Option<BodyReservation>,
        label: &mut McpMethod,
    ) -> Result<Outcome, RequestError> {
        let limit = self.config.max_message_bytes;
        if req.body.len() > limit {
            return Err(RequestError::PayloadTooLarge {
                size: Some(req.body.len()),
                limit,
            });
        }
        // The body counts against the subject's and the process's bytes in flight until the
        // request is answered (a result that follows is counted on its own, in `forward`): by
        // the adapter's reservation when it covers the body, else from here.
        let _body = match reserved {
            Some(r) if r.covers(req.body.len()) => r,
            _ => self
                .quotas
                .reserve_body(&req.auth.subject_email, req.body.len())?,
        };
        // What the request needs of its body is owned once parsed (id, method, params): the
        // raw bytes go now, not when the call ends, so a large call holds one copy fewer.
        let body = std::mem::take(&mut req.body);
        let incoming = jsonrpc::parse(&body)?;
        drop(body);
        match incoming {
            Incoming::Request { id, method, params } => {
                *label = McpMethod::of(&method);
                tracing::Span::current().record("method", method.as_str());
                // The era's own checks come first, before any work (MCP 2026-07-28: header
                // validation).
                match crate::era::of(&req.headers, &method, params.as_deref()) {
                    Err(e) => Ok(e.into_outcome(Some(&id))),
                    Ok(Some(era)) => Ok(self.sessionless(&req, &id, &method, params, era).await),
                    Ok(None) => Ok(self.request(&req, &id, &method, params).await),
                }
            }
            Incoming::Notification { method, params } => {
                *label = McpMethod::of(&method);
                tracing::Span::current().record("method", method.as_str());
                if crate::era::notification_of(&req.headers, &method)? {
                    // No session to deliver it to: a sessionless client cancels a request by
                    // closing its response stream.
                    return Ok(Outcome::empty(202));
                }
                self.notification(&req, &method, params.as_deref()).await
            }
            Incoming::Response { id, result, error } => {
                *label = McpMethod::RESPONSE;
                let session = self.session(&req).await?;
                // Accepted either way (202): a response no relayed request awaits is ignored.
                self.client_response(&session, &id, result.as_deref(), error.as_deref())
                    .await;
                Ok(Outcome::empty(202))
            }
        }
    }

    async fn session(&self, req: &Request) -> Result<Arc<Session>, RequestError> {
        self.find_session(
            req.headers.session_id.as_deref(),
            &req.auth.subject_email,
            req.server_id.as_deref(),
        )
        .await
    }

    async fn notification(
        &self,
        req: &Request,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<Outcome, RequestError> {
        let session = self.session(req).await?;
        if method == "notifications/cancelled"
            && let Some(p) = params
            && let Ok(p) = serde_json::from_str::<Map<String, Value>>(p.get())
            && let Some(rid) = p.get("requestId")
        {
            // The client's own calls first (a cancellation names a request of its sender);
            // else a relayed upstream request with that id is declined.
            let key = rid.to_string();
            if session.has_call(&key) || !self.decline(&session, rid) {
                self.cancel_call(&session, &key).await?;
            }
        }
        Ok(Outcome::empty(202))
    }

    /// A JSON-RPC request. Faults before the session is found are answered as transport
    /// faults (id `null`, 4xx); from then on as the request's JSON-RPC error (its id, 200).
    async fn request(
        self: &Arc<Self>,
        req: &Request,
        id: &RawValue,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Outcome {
        let answer = match method {
            "initialize" => self.initialize(id, params.as_deref(), req).await,
            // Clients of the 2026-07-28 revision probe with this first; a correlated
            // "method not found" tells them this server is legacy, so they fall back to
            // `initialize` (rmcp `discover_startup`, MCP 2026-07-28 backward compatibility).
            "server/discover" => Err(RequestError::MethodNotFound(method.to_owned())),
            _ => match self.session(req).await {
                Ok(session) => self.method(&session, req, id, method, params).await,
                Err(e) => return e.into_outcome(None),
            },
        };
        answer.unwrap_or_else(|e| e.into_outcome(Some(id)))
    }

    /// A request of the sessionless era (MCP 2026-07-28, its headers and `_meta` checked by
    /// [`crate::era::of`]): served without a session. `server/discover` and the lists from
    /// the catalog (what the caller may see; lists with `ttlMs` and `cacheScope`); calls
    /// (`tools/call`, `prompts/get`, `resources/read`, `completion/complete`) routed as in a
    /// session and forwarded in the runtime's own session with the upstream (which may speak
    /// only 2025-11-25), in a session of their own that ends with the request
    /// ([`crate::session::Sessions::sessionless`]). `subscriptions/listen` opens the stream of
    /// notifications the caller opted in to ([`crate::listen`]). What that revision removed
    /// (`ping`, `logging/setLevel`, `resources/subscribe`, `initialize`) answers -32601 with
    /// HTTP 404.
    async fn sessionless(
        self: &Arc<Self>,
        req: &Request,
        id: &RawValue,
        method: &str,
        params: Option<Box<RawValue>>,
        era: crate::era::Sessionless,
    ) -> Outcome {
        let (auth, scope) = (&req.auth, req.server_id.as_deref());
        let cat = self.catalog.load();
        let list = |json: String| {
            Ok(Outcome::json(
                200,
                jsonrpc::result_body(id, &crate::era::with_cache_fields(json)),
            ))
        };
        let answer = match method {
            "server/discover" => Ok(Outcome::json(
                200,
                jsonrpc::result_body(id, &self.discover_json(auth, scope)),
            )),
            "tools/list" => list(cat.list_json(Kind::Tool, auth, scope)),
            "prompts/list" => list(cat.list_json(Kind::Prompt, auth, scope)),
            "resources/list" => list(cat.list_json(Kind::Resource, auth, scope)),
            "resources/templates/list" => list(cat.templates_json(auth, scope)),
            "subscriptions/listen" => self.listen(req, id, params).await,
            "completion/complete" | "tools/call" | "prompts/get" | "resources/read" => {
                tracing::debug!(version = era.version, "sessionless call");
                let session = self.sessions.sessionless(&auth.subject_email, scope);
                let answer = match Kind::of_call(method) {
                    Some(kind) => self.call(&session, req, id, kind, method, params).await,
                    None => self.complete(&session, req, id, params).await,
                };
                drop(session);
                answer
            }
            _ => Err(RequestError::MethodNotFound(method.to_owned())),
        };
        answer.unwrap_or_else(|e| {
            // MCP 2026-07-28, transports: a method the server does not implement is HTTP 404.
            let not_found = matches!(e, RequestError::MethodNotFound(_));
            let mut outcome = e.into_outcome(Some(id));
            if not_found {
                outcome.head.status = 404;
            }
            outcome
        })
    }

    /// The `server/discover` result (MCP 2026-07-28) for this caller in this scope: every
    /// version the runtime speaks, the capabilities of what the caller may see across the
    /// upstreams (`tools`, `prompts`, `resources` only when the catalog shows it at least
    /// one, each with `listChanged`, `resources` with `subscribe`: what `subscriptions/listen`
    /// delivers; `completions` with prompts or resources), the runtime as `serverInfo` in `_meta`;
    /// `ttlMs` [`crate::era::LIST_TTL_MS`], `cacheScope` `private` (it depends on the caller).
    fn discover_json(&self, auth: &AuthContext, scope: Option<&str>) -> String {
        let cat = self.catalog.load();
        let sees = |kind| cat.sees_any(kind, auth, scope);
        let (tools, prompts) = (sees(Kind::Tool), sees(Kind::Prompt));
        let resources = sees(Kind::Resource) || cat.sees_any_template(auth, scope);
        // What `subscriptions/listen` delivers (`crate::listen`), as `initialize` declares it.
        let mut caps = Map::new();
        if tools {
            caps.insert("tools".into(), serde_json::json!({"listChanged": true}));
        }
        if prompts {
            caps.insert("prompts".into(), serde_json::json!({"listChanged": true}));
        }
        if resources {
            caps.insert(
                "resources".into(),
                serde_json::json!({"listChanged": true, "subscribe": true}),
            );
        }
        if prompts || resources {
            caps.insert("completions".into(), serde_json::json!({}));
        }
        serde_json::json!({
            "resultType": "complete",
            "supportedVersions": crate::runtime::all_protocol_versions(),
            "capabilities": caps,
            "ttlMs": crate::era::LIST_TTL_MS,
            "cacheScope": "private",
            "_meta": {
                "io.modelcontextprotocol/serverInfo": {
                    "name": "mcp-runtime",
                    "version": env!("CARGO_PKG_VERSION"),
                },
            },
        })
        .to_string()
    }

    /// `initialize`: a new session for the caller's subject and scope, unless the params are
    /// not an `InitializeRequest`'s ([`RequestError::InvalidParams`]) or the subject holds the
    /// most sessions allowed ([`RequestError::TooManySessions`]).
    async fn initialize(
        &self,
        id: &RawValue,
        params: Option<&RawValue>,
        req: &Request,
    ) -> Result<Outcome, RequestError> {
        let requested = initialize_params(params)?;
        // Echo a version we speak, else offer our newest (MCP spec, lifecycle: version
        // negotiation).
        let index = PROTOCOL_VERSIONS
            .iter()
            .position(|p| *p == requested)
            .unwrap_or(0);
        let version = PROTOCOL_VERSIONS[index];
        let caps = crate::server_requests::declared(params);
        let sid = self
            .create_session(
                &req.auth.subject_email,
                req.server_id.as_deref(),
                version,
                caps,
            )
            .await
            .inspect_err(|e| {
                if let RequestError::TooManySessions { limit } = e {
                    tracing::warn!(
                        limit,
                        "initialize refused: the subject holds the most sessions allowed"
                    );
                }
            })?;
        if let crate::session::Local::Hit(s) =
            self.sessions
                .lookup(&sid, &req.auth.subject_email, req.server_id.as_deref())
        {
            s.caps.store(caps, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(session = %sid, version, "session created");
        Ok(Outcome::json(
            200,
            jsonrpc::result_body(id, &self.initialize_results[index]),
        )
        .with_header("mcp-session-id", sid))
    }

    /// A method of an established session.
    async fn method(
        self: &Arc<Self>,
        session: &Arc<Session>,
        req: &Request,
        id: &RawValue,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<Outcome, RequestError> {
        let (auth, scope) = (&req.auth, req.server_id.as_deref());
        let cat = self.catalog.load();
        let result = match method {
            "ping" => "{}".to_owned(),
            "logging/setLevel" => {
                self.set_level(session, params).await?;
                "{}".to_owned()
            }
            "tools/list" => cat.list_json(Kind::Tool, auth, scope),
            "prompts/list" => cat.list_json(Kind::Prompt, auth, scope),
            "resources/list" => cat.list_json(Kind::Resource, auth, scope),
            "resources/templates/list" => cat.templates_json(auth, scope),
            "completion/complete" => return self.complete(session, req, id, params).await,
            "resources/subscribe" => return self.subscribe(session, req, id, params, true).await,
            "resources/unsubscribe" => {
                return self.subscribe(session, req, id, params, false).await;
            }
            _ => {
                let kind = Kind::of_call(method)
                    .ok_or_else(|| RequestError::MethodNotFound(method.to_owned()))?;
                return self.call(session, req, id, kind, method, params).await;
            }
        };
        Ok(Outcome::json(200, jsonrpc::result_body(id, &result)))
    }

    /// `logging/setLevel`: the session's upstream `notifications/message` below `level` are
    /// no longer relayed to its client, on every replica (the level is in the session record
    /// with Redis, and replicas caching the session are told).
    ///
    /// # Errors
    ///
    /// [`RequestError::InvalidParams`] without a `level` naming one of the eight MCP log
    /// levels; [`RequestError::StateUnavailable`] when Redis does not answer.
    async fn set_level(
        &self,
        session: &Session,
        params: Option<Box<RawValue>>,
    ) -> Result<(), RequestError> {
        let p = call_params(params)?;
        let level = p
            .get("level")
            .and_then(Value::as_str)
            .and_then(crate::session::log_level)
            .ok_or_else(|| {
                RequestError::InvalidParams(
                    "`level` must be one of debug, info, notice, warning, error, critical, \
                     alert, emergency"
                        .into(),
                )
            })?;
        if let Store::Redis(r) = &self.store
            && !session.sessionless
        {
            r.set_level(&session.id, level).await?;
        }
        session
            .log_level
            .store(level, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// `tools/call`, `prompts/get` or `resources/read`: checks the params, routes the name
    /// through the catalog and forwards the call with the upstream's name.
    async fn call(
        self: &Arc<Self>,
        session: &Arc<Session>,
        req: &Request,
        id: &RawValue,
        kind: Kind,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<Outcome, RequestError> {
        // The raw params go once parsed: a large call holds its arguments once (the parsed
        // map), not twice, while it runs.
        // MCP's reserved `_meta` keys stay until `forward` knows which era the upstream is
        // spoken to in.
        let p = call_params(params)?;
        check_input_responses(&p, session.sessionless)?;
        let key = kind.key();
        let Some(name) = p.get(key).and_then(Value::as_str).map(str::to_owned) else {
            return Err(RequestError::InvalidParams(format!("`{key}` is required")));
        };
        let Some(hooks) = self.hooks.as_deref() else {
            return self.route(session, req, id, kind, method, p, name).await;
        };
        let (started, at) = (std::time::Instant::now(), std::time::SystemTime::now());
        let answer = self
            .route(session, req, id, kind, method, p, name.clone())
            .await;
        let (http_status, jsonrpc_code) = match &answer {
            Ok(o) => (o.head.status, 0),
            Err(e) => (e.status(), e.code()),
        };
        hooks.record(CallRecord {
            subject_email: req.auth.subject_email.clone(),
            server_id: req.server_id.clone(),
            method: method.to_owned(),
            name,
            http_status,
            jsonrpc_code,
            duration: started.elapsed(),
            request_id: req.request_id.clone(),
            started_at: at,
        });
        answer
    }

    /// `completion/complete`: routed by its `ref` to the upstream owning the prompt
    /// (`{"type":"ref/prompt","name":...}`, renamed to the upstream's name) or the resource
    /// template (`{"type":"ref/resource","uri":...}`, matched as `resources/read` matches a URI),
    /// then forwarded like a call (MCP 2025-06-18 and later, server utilities: completion).
    ///
    /// # Errors
    ///
    /// [`RequestError::InvalidParams`] for params without a `ref` of a known type or without an
    /// `argument` object; the same "unknown prompt" / "resource not found" error as
    /// `prompts/get` / `resources/read` for a name or URI the caller may not see.
    async fn complete(
        self: &Arc<Self>,
        session: &Arc<Session>,
        req: &Request,
        id: &RawValue,
        params: Option<Box<RawValue>>,
    ) -> Result<Outcome, RequestError> {
        let mut p = call_params(params)?;
        crate::era::strip_reserved_meta(&mut p);
        if !p.get("argument").is_some_and(Value::is_object) {
            return Err(RequestError::InvalidParams(
                "`argument` must be an object".into(),
            ));
        }
        let Some(Value::Object(reference)) = p.get_mut("ref") else {
            return Err(RequestError::InvalidParams(
                "`ref` must be an object".into(),
            ));
        };
        let kind = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => Kind::Prompt,
            Some("ref/resource") => Kind::Resource,
            _ => {
                return Err(RequestError::InvalidParams(
                    "`ref.type` must be \"ref/prompt\" or \"ref/resource\"".into(),
                ));
            }
        };
        let key = kind.key();
        let Some(name) = reference
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Err(RequestError::InvalidParams(format!(
                "`ref.{key}` is required"
            )));
        };
        let cat = self.catalog.load();
        let route = cat
            .route(kind, &name, &req.auth, req.server_id.as_deref())
            .ok_or_else(|| RequestError::not_found(kind, name.clone()))?;
        reference.insert(
            key.to_owned(),
            Value::String(route.upstream_name.to_owned()),
        );
        let up = Arc::clone(route.upstream);
        let traceparent = crate::runtime::trace_id_of(&req.auth.traceparent)
            .is_some()
            .then_some(req.auth.traceparent.as_str());
        self.forward(
            session,
            id,
            up,
            "completion/complete",
            p,
            (false, false),
            None,
            (traceparent, Vec::new()),
        )
        .await
    }

    /// `resources/subscribe` (`on`) or `resources/unsubscribe`: the URI is routed as
    /// `resources/read` routes it; the upstream is told once per (upstream, URI) however many
    /// sessions subscribe, and told to unsubscribe when the last one leaves (here, or when its
    /// session ends). Answers `{}`. See [`crate::subscribe`].
    ///
    /// # Errors
    ///
    /// [`RequestError::InvalidParams`] without a string `uri`; the same "resource not found"
    /// (-32002) as `resources/read` for a URI the caller may not see; the upstream's error
    /// when its own `resources/subscribe` fails (nothing is recorded then).
    async fn subscribe(
        self: &Arc<Self>,
        session: &Arc<Session>,
        req: &Request,
        id: &RawValue,
        params: Option<Box<RawValue>>,
        on: bool,
    ) -> Result<Outcome, RequestError> {
        let p = call_params(params)?;
        let Some(uri) = p.get("uri").and_then(Value::as_str) else {
            return Err(RequestError::InvalidParams("`uri` is required".into()));
        };
        let cat = self.catalog.load();
        let route = cat
            .route(Kind::Resource, uri, &req.auth, req.server_id.as_deref())
            .ok_or_else(|| RequestError::not_found(Kind::Resource, uri.to_owned()))?;
        let up = Arc::clone(route.upstream);
        let upstream_uri = route.upstream_name.to_owned();
        let subs = &self.subscriptions;
        let shared = match &self.store {
            Store::Redis(r) if !session.sessionless => Some(r),
            _ => None,
        };
        if on
            && let Some(r) = shared
            && r.subscription_holder(&session.id, uri)
                .await?
                .is_some_and(|h| h != r.replica())
        {
            // Another live replica's upstream session already holds it: its updates reach
            // the session's stream wherever it is.
            return Ok(Outcome::json(200, jsonrpc::result_body(id, "{}")));
        }
        if on {
            let first_of_session = subs.add(&up.config.id, &upstream_uri, session, uri);
            if let Err(e) = subs.sync_to_the_end(&up, &upstream_uri).await {
                subs.remove(&up.config.id, &upstream_uri, &session.id);
                return Err(e.into());
            }
            if let Some(r) = shared {
                r.record_subscription(&session.id, uri).await?;
            }
            if first_of_session {
                // The session's end (DELETE, expiry) drops its subscriptions.
                // With Redis, only this replica's copy may have gone (the idle reaper): while
                // the record lives, its subscriptions stay (updates go to it by id).
                let rt = Arc::downgrade(self);
                let (sid, ended) = (session.id.clone(), session.ended.clone());
                tokio::spawn(async move {
                    ended.cancelled().await;
                    let Some(rt) = rt.upgrade() else { return };
                    if let Store::Redis(r) = &rt.store
                        && !matches!(r.load_session(&sid).await, Ok(None))
                    {
                        return;
                    }
                    for (upstream, uri) in rt.subscriptions.drop_session(&sid) {
                        let cat = rt.catalog.load();
                        if let Some(up) = cat.upstreams.iter().find(|u| u.config.id == upstream)
                            && let Err(e) = rt.subscriptions.sync(up, &uri).await
                        {
                            tracing::debug!(upstream, uri, error = %e, "unsubscribe failed");
                        }
                    }
                });
            }
        } else {
            subs.remove(&up.config.id, &upstream_uri, &session.id);
            subs.sync_to_the_end(&up, &upstream_uri).await?;
            if let Some(r) = shared {
                // Wherever the subscription is held, that replica ends it.
                r.drop_subscription(&session.id, uri, &up.config.id, &upstream_uri)
                    .await?;
            }
        }
        Ok(Outcome::json(200, jsonrpc::result_body(id, "{}")))
    }

    /// Routes a checked call through the catalog, runs its hooks and forwards it.
    #[allow(clippy::too_many_arguments)]
    async fn route(
        self: &Arc<Self>,
        session: &Arc<Session>,
        req: &Request,
        id: &RawValue,
        kind: Kind,
        method: &str,
        mut p: Map<String, Value>,
        name: String,
    ) -> Result<Outcome, RequestError> {
        let key = kind.key();
        let cat = self.catalog.load();
        let route = cat.route(kind, &name, &req.auth, req.server_id.as_deref());
        let Some(route) = route else {
            return Err(RequestError::not_found(kind, name));
        };
        // MCP 2026-07-28 (SEP-2243): the arguments the tool marks with `x-mcp-header` come in
        // `Mcp-Param-*` headers too, checked here before any work (when the adapter's caller
        // forwarded them), and sent on to the upstream (`forward`).
        let annotations = match route.json {
            Some(json) if kind == Kind::Tool && session.sessionless => {
                crate::era::param_annotations(json.get())
            }
            _ => Vec::new(),
        };
        if let Some(sent) = &req.headers.params
            && !annotations.is_empty()
        {
            crate::era::check_params(sent, p.get("arguments"), &annotations)?;
        }
        p.insert(
            key.to_owned(),
            Value::String(route.upstream_name.to_owned()),
        );
        let up = Arc::clone(route.upstream);
        let hook = |point| Hook::new(req, &name, method, point);
        let hooks = self.hooks.as_deref();
        if kind == Kind::Tool && hooks.is_some_and(|h| h.registered(HookPoint::PreInvoke, &name)) {
            let args = p
                .get("arguments")
                .map_or_else(|| b"{}".to_vec(), |a| a.to_string().into_bytes());
            // The serialized arguments and the copy the Core SPI transport sends are counted
            // while the hook runs, and the changed arguments once it answered.
            let mut held = self
                .quotas
                .acquire(&session.subject, Quota::Bytes, 2 * args.len())?;
            if let Some(new) = hook(HookPoint::PreInvoke)
                .run(hooks, Bytes::from(args))
                .await?
            {
                held.resize(2 * new.len())?;
                let args: Map<String, Value> =
                    serde_json::from_slice(&new).map_err(|e| hook_broken(&e))?;
                p.insert("arguments".to_owned(), Value::Object(args));
            }
            drop(held);
        }
        let post_point = if kind == Kind::Tool {
            HookPoint::PostInvoke
        } else {
            HookPoint::PostFetch
        };
        let post = hooks
            .is_some_and(|h| h.registered(post_point, &name))
            .then(|| hook(post_point));
        // With a post hook, notifications still pass as they come; the answer waits for the
        // hook (forward.rs, `pump`).
        let accepts_sse = req.headers.accepts_sse();
        // The caller's trace context goes on to the upstream (`traceparent` header): the
        // runtime's request span when tracing is on (the adapter put it there), else the
        // context it received.
        let traceparent = crate::runtime::trace_id_of(&req.auth.traceparent)
            .is_some()
            .then_some(req.auth.traceparent.as_str());
        let live = accepts_sse && req.live_events;
        // After the pre-invoke hook: the headers say what the upstream gets.
        let param_headers = crate::era::param_headers(p.get("arguments"), &annotations);
        self.forward(
            session,
            id,
            up,
            method,
            p,
            (accepts_sse, live),
            post,
            (traceparent, param_headers),
        )
        .await
    }
}

impl Runtime {
    /// A GET with `Last-Event-ID` `last`: the events of that id's stream after it, once, in
    /// order, then the stream live until its last event (with Redis: or until the replica
    /// running its call is found stopped, answered by the call's error). Counts as one of the
    /// subject's GET streams while open.
    ///
    /// # Errors
    ///
    /// [`RequestError::UnknownEventId`] for an id that is malformed, names no stream of this
    /// session, or whose successors are no longer all retained (nobody's events are sent);
    /// [`RequestError::SubjectQuota`] at the stream quota; [`RequestError::StateUnavailable`]
    /// when Redis does not answer.
    async fn resume(
        &self,
        session: &Arc<Session>,
        auth: &AuthContext,
        last: &str,
    ) -> Result<Outcome, RequestError> {
        let unknown = || RequestError::UnknownEventId(last.to_owned());
        let after = EventId::parse(last).ok_or_else(unknown)?;
        let permit = self.quotas.acquire(&session.subject, Quota::Streams, 1)?;
        let (tx, rx) = mpsc::channel(64);
        let retention = self.config.state.retention;
        match &self.store {
            Store::Memory => {
                let log = session
                    .streams
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&after.stream)
                    .cloned()
                    .ok_or_else(unknown)?;
                if log.after(after.seq, retention) == After::Unknown {
                    return Err(unknown());
                }
                tokio::spawn(
                    async move { log.follow(&after.stream, after.seq, retention, tx).await },
                );
            }
            Store::Redis(r) => {
                if r.resume(&session.id, after.clone(), tx).await?
                    == crate::state::redis::Resumed::Standalone
                {
                    // The session's standalone stream: it moves here, replays what was
                    // missed and goes on live.
                    let rx = self.open_standalone(session, auth, Some(&after)).await?;
                    return Ok(Outcome::events_holding(rx, permit)
                        .until_token_expiry(auth.token_expires_at_unix_s, None));
                }
            }
        }
        Ok(Outcome::events_holding(rx, permit))
    }
}

/// One hook point of one call, owning what the hook is told (it may run after the request's
/// borrows end, in `forward`).
pub(crate) struct Hook {
    point: HookPoint,
    name: String,
    method: String,
    caller: AuthContext,
    server_id: Option<String>,
    session_id: String,
    request_id: Option<String>,
}

impl Hook {
    fn new(req: &Request, name: &str, method: &str, point: HookPoint) -> Self {
        Self {
            point,
            name: name.to_owned(),
            method: method.to_owned(),
            caller: req.auth.clone(),
            server_id: req.server_id.clone(),
            session_id: req.headers.session_id.clone().unwrap_or_default(),
            request_id: req.request_id.clone(),
        }
    }

    /// Asks the hooks about `payload`: `Some` replacement, `None` to go on unchanged.
    ///
    /// # Errors
    ///
    /// [`RequestError::HookDenied`] when the hook refuses, [`RequestError::PolicyUnavailable`]
    /// when it cannot be asked (fail closed).
    pub(crate) async fn run(
        &self,
        hooks: Option<&dyn Hooks>,
        payload: Bytes,
    ) -> Result<Option<Bytes>, RequestError> {
        let Some(hooks) = hooks else {
            return Ok(None);
        };
        let call = HookCall {
            point: self.point,
            name: &self.name,
            method: &self.method,
            caller: &self.caller,
            server_id: self.server_id.as_deref(),
            session_id: &self.session_id,
            request_id: self.request_id.as_deref(),
            payload,
        };
        match hooks.invoke(call).await {
            Ok(HookDecision::Proceed(new)) => Ok(new.filter(|b| !b.is_empty())),
            Ok(HookDecision::Deny { code, message }) => {
                Err(RequestError::HookDenied { code, message })
            }
            Err(e) => {
                tracing::warn!(point = ?self.point, name = %self.name, error = %e, "hook failed: request refused");
                Err(RequestError::PolicyUnavailable)
            }
        }
    }
}

/// A hook's replacement payload that is not a JSON object: the policy is broken, fail closed.
pub(crate) fn hook_broken(e: &serde_json::Error) -> RequestError {
    tracing::warn!(error = %e, "hook returned a payload that is not a JSON object: request refused");
    RequestError::PolicyUnavailable
}

/// The protocol version an `initialize` asks for, after checking the fields the MCP schema
/// requires of `InitializeRequest` params (`protocolVersion` a string, `capabilities` an
/// object, `clientInfo` an object with string `name` and `version`).
///
/// # Errors
///
/// [`RequestError::InvalidParams`] naming the first field that is missing or of the wrong type.
fn initialize_params(params: Option<&RawValue>) -> Result<String, RequestError> {
    let invalid = |what: &str| RequestError::InvalidParams(format!("initialize: {what}"));
    let p: Map<String, Value> = params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .ok_or_else(|| invalid("params must be an object"))?;
    let version = p
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("`protocolVersion` must be a string"))?;
    if !p.get("capabilities").is_some_and(Value::is_object) {
        return Err(invalid("`capabilities` must be an object"));
    }
    let info = p.get("clientInfo").and_then(Value::as_object);
    let named = info.is_some_and(|i| {
        i.get("name").is_some_and(Value::is_string)
            && i.get("version").is_some_and(Value::is_string)
    });
    if !named {
        return Err(invalid(
            "`clientInfo` must be an object with string `name` and `version`",
        ));
    }
    Ok(version.to_owned())
}

/// The params of a call as an object, checked here so that a malformed call never reaches the
/// upstream: `arguments` and `_meta`, when present, must be objects. Takes the raw params and
/// drops them once parsed.
/// The multi-round-trip members of a call's params (MCP 2026-07-28, SEP-2322): only in a
/// request of that era (a session-era call carrying them is refused, never passed into the
/// runtime's session with the upstream), `inputResponses` an object and `requestState` a
/// string.
///
/// # Errors
///
/// [`RequestError::InvalidParams`] (-32602) for either member in a session-era call, or of
/// another type.
fn check_input_responses(p: &Map<String, Value>, sessionless: bool) -> Result<(), RequestError> {
    let responses = p.get("inputResponses");
    let state = p.get("requestState");
    if !sessionless && (responses.is_some() || state.is_some()) {
        return Err(RequestError::InvalidParams(
            "`inputResponses` and `requestState` belong to requests of MCP 2026-07-28, not to \
             a session"
                .into(),
        ));
    }
    if responses.is_some_and(|r| !r.is_object()) {
        return Err(RequestError::InvalidParams(
            "`inputResponses` must be an object".into(),
        ));
    }
    if state.is_some_and(|s| !s.is_string()) {
        return Err(RequestError::InvalidParams(
            "`requestState` must be a string".into(),
        ));
    }
    Ok(())
}

fn call_params(params: Option<Box<RawValue>>) -> Result<Map<String, Value>, RequestError> {
    let p: Map<String, Value> = params
        .map(|p| serde_json::from_str(p.get()))
        .transpose()
        .map_err(|e| RequestError::InvalidParams(e.to_string()))?
        .unwrap_or_default();
    for field in ["arguments", "_meta"] {
        if p.get(field).is_some_and(|v| !v.is_object()) {
            return Err(RequestError::InvalidParams(format!(
                "`{field}` must be an object"
            )));
        }
    }
    Ok(p)
}
