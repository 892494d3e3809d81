//! `subscriptions/listen` (MCP 2026-07-28, SEP-2575): the stream that replaces the session
//! era's standalone GET stream for a client without a session.
//!
//! A client POSTs `subscriptions/listen` with `params.notifications`, a filter of what it opts
//! in to: `toolsListChanged`, `promptsListChanged`, `resourcesListChanged` (booleans) and
//! `resourceSubscriptions` (URIs). The answer is a `text/event-stream` that stays open:
//!
//! 1. first `notifications/subscriptions/acknowledged`, whose `notifications` is the part of
//!    the filter the runtime honours: every flag asked for, and each URI the caller may read
//!    (routed as `resources/read` routes it) whose upstream accepted the subscription; a URI
//!    left out is not an error (the specification: the acknowledgement reports what the
//!    server agreed to honour);
//! 2. then only what it opted in to: `notifications/{tools,prompts,resources}/list_changed`
//!    when its caller's view of that list changed (as for a session's GET stream,
//!    [`crate::live`]), and `notifications/resources/updated` for its URIs
//!    ([`crate::subscribe`]), each with `_meta["io.modelcontextprotocol/subscriptionId"]` set
//!    to the listen request's id;
//! 3. it ends when the client goes away (nothing more is sent) or when the runtime drains:
//!    then its last message is the listen request's result, `{"resultType": "complete",
//!    "_meta": {"io.modelcontextprotocol/subscriptionId": id}}`.
//!
//! Each stream is a session of its own, in no session table (`listen-<n>`,
//! [`crate::session::Sessions::listener`]), so the machinery of GET streams serves it: the
//! upstream is subscribed once per (upstream, URI) while any session or listen stream wants it
//! ([`crate::subscribe::Subscriptions::sync`]) and unsubscribed when the last one leaves; a
//! listen stream leaves when its stream ends, however it ends. A listen stream counts as one of
//! its subject's streams (`--max-streams-per-subject`, the GET streams' quota) while open. With
//! Redis it lives on the replica that serves it: that replica's upstream sessions hold its
//! subscriptions, and a list change heard by any replica reaches it (every replica re-lists).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, Weak};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::catalog::Kind;
use crate::error::RequestError;
use crate::jsonrpc;
use crate::live::ListKind;
use crate::quota::Quota;
use crate::request::{Outcome, Request, SseEvent};
use crate::runtime::Runtime;
use crate::session::Session;

/// `_meta` key tagging every message of a listen stream with the listen request's id.
pub(crate) const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Most URIs one listen request may name in `resourceSubscriptions` (more: -32602).
pub(crate) const MAX_RESOURCE_SUBSCRIPTIONS: usize = 256;

/// Messages a listen stream holds for a client that is not reading; one more is dropped for
/// that stream (as for a GET stream), never waited for.
const STREAM_CAPACITY: usize = 16;

/// What one listen stream opted in to, and the id its messages carry.
#[derive(Debug)]
pub(crate) struct Opted {
    /// The listen request's JSON-RPC id, as it was sent (a number past `u64` would become a
    /// float if parsed).
    id: Box<RawValue>,
    tools: bool,
    prompts: bool,
    resources: bool,
}

impl Opted {
    /// Whether the stream asked for `kind`'s `list_changed`.
    pub(crate) fn wants(&self, kind: ListKind) -> bool {
        match kind {
            ListKind::Tools => self.tools,
            ListKind::Prompts => self.prompts,
            ListKind::Resources => self.resources,
        }
    }

    /// A notification of this stream: `params` (an object; anything else is sent as `{}`)
    /// with the stream's `_meta` tag (replacing any `_meta` it had), the listen request's id
    /// as it was sent.
    pub(crate) fn notification_body(&self, method: &str, params: Value) -> String {
        #[derive(Serialize)]
        struct Params<'a> {
            #[serde(flatten)]
            rest: Map<String, Value>,
            #[serde(rename = "_meta")]
            meta: BTreeMap<&'static str, &'a RawValue>,
        }
        #[derive(Serialize)]
        struct Notification<'a> {
            jsonrpc: &'static str,
            method: &'a str,
            params: Params<'a>,
        }
        let mut rest = match params {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        rest.remove("_meta");
        let body = Notification {
            jsonrpc: "2.0",
            method,
            params: Params {
                rest,
                meta: BTreeMap::from([(META_SUBSCRIPTION_ID, &*self.id)]),
            },
        };
        // Strings, numbers and a raw JSON value: serialising cannot fail.
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// The listen request's result, sent as the last message when the runtime ends the
    /// stream (the specification's graceful end).
    pub(crate) fn final_result(&self) -> String {
        let id = self.id.get();
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"resultType":"complete","_meta":{{"{META_SUBSCRIPTION_ID}":{id}}}}}}}"#
        )
    }
}

/// A checked `params.notifications`.
#[derive(Debug, PartialEq, Eq)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    /// Without repeats, in the order given.
    uris: Vec<String>,
}

/// Reads `params.notifications`.
///
/// # Errors
///
/// [`RequestError::InvalidParams`] (-32602) when `params` or `notifications` is not an
/// object, a flag is neither a boolean nor null, `resourceSubscriptions` is not an array of
/// strings, or names more than [`MAX_RESOURCE_SUBSCRIPTIONS`] URIs.
fn filter(params: Option<&RawValue>) -> Result<Filter, RequestError> {
    let invalid =
        |what: String| RequestError::InvalidParams(format!("subscriptions/listen: {what}"));
    let p: Map<String, Value> = params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .ok_or_else(|| invalid("params must be an object".into()))?;
    let Some(Value::Object(n)) = p.get("notifications") else {
        return Err(invalid("`notifications` must be an object".into()));
    };
    let flag = |key: &str| match n.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(format!("`notifications.{key}` must be a boolean"))),
    };
    let mut uris: Vec<String> = Vec::new();
    match n.get("resourceSubscriptions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            if items.len() > MAX_RESOURCE_SUBSCRIPTIONS {
                return Err(invalid(format!(
                    "`notifications.resourceSubscriptions` names {} URIs, more than the limit of {MAX_RESOURCE_SUBSCRIPTIONS}",
                    items.len()
                )));
            }
            for item in items {
                let Value::String(uri) = item else {
                    return Err(invalid(
                        "`notifications.resourceSubscriptions` must be an array of strings".into(),
                    ));
                };
                if !uris.contains(uri) {
                    uris.push(uri.clone());
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                "`notifications.resourceSubscriptions` must be an array of strings".into(),
            ));
        }
    }
    Ok(Filter {
        tools: flag("toolsListChanged")?,
        prompts: flag("promptsListChanged")?,
        resources: flag("resourcesListChanged")?,
        uris,
    })
}

impl Runtime {
    /// `subscriptions/listen` of the sessionless era (module documentation): the stream, or
    /// an answer without one.
    ///
    /// Answers without a stream: a unary caller (gRPC `Invoke`, which would wait for the end
    /// of a stream that does not end) gets -32600; an `Accept` that rules out
    /// `text/event-stream` gets 406.
    ///
    /// # Errors
    ///
    /// [`RequestError::InvalidParams`] (-32602) for a malformed filter ([`filter`]);
    /// [`RequestError::SubjectQuota`] (429) when the subject holds its most streams.
    pub(crate) async fn listen(
        self: &Arc<Self>,
        req: &Request,
        id: &RawValue,
        params: Option<Box<RawValue>>,
    ) -> Result<Outcome, RequestError> {
        let filter = filter(params.as_deref())?;
        drop(params);
        if !req.live_events {
            return Ok(Outcome::json(
                200,
                jsonrpc::error_body(
                    Some(id),
                    jsonrpc::INVALID_REQUEST,
                    "Invalid Request: subscriptions/listen answers with a stream that stays open: \
                     send it where the answer is streamed (gRPC InvokeStream)",
                ),
            ));
        }
        if !req.headers.accepts_sse() {
            return Ok(Outcome::json(
                406,
                jsonrpc::error_body(
                    Some(id),
                    jsonrpc::INVALID_REQUEST,
                    "Not Acceptable: subscriptions/listen answers text/event-stream",
                ),
            ));
        }
        let (auth, scope) = (&req.auth, req.server_id.as_deref());
        let permit = self
            .quotas
            .acquire(&auth.subject_email, Quota::Streams, 1)?;
        let session = self.sessions.listener(&auth.subject_email, scope);
        let opted = Opted {
            id: id.to_owned(),
            tools: filter.tools,
            prompts: filter.prompts,
            resources: filter.resources,
        };
        *session
            .viewer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(auth.clone());
        // The watcher holds the stream's sender from here: whatever ends the stream (the
        // client, this future dropped before it answered, the drain) ends the subscriptions.
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        tokio::spawn(watch(
            Arc::downgrade(self),
            Arc::clone(&session),
            tx.clone(),
        ));
        let mut honoured = Vec::new();
        let cat = self.catalog.load();
        for uri in &filter.uris {
            if session.ended.is_cancelled() {
                break;
            }
            let Some(route) = cat.route(Kind::Resource, uri, auth, scope) else {
                continue;
            };
            let up = Arc::clone(route.upstream);
            let upstream_uri = route.upstream_name.to_owned();
            self.subscriptions
                .add(&up.config.id, &upstream_uri, &session, uri);
            match self.subscriptions.sync_to_the_end(&up, &upstream_uri).await {
                Ok(()) => honoured.push(uri.clone()),
                Err(e) => {
                    tracing::debug!(upstream = %up.config.id, uri, error = %e, "listen: upstream subscription refused; left out of the acknowledgement");
                    self.subscriptions
                        .remove(&up.config.id, &upstream_uri, &session.id);
                }
            }
        }
        drop(cat);
        if session.ended.is_cancelled() {
            // The drain began meanwhile and the watcher may have dropped the subscriptions
            // before the last ones were made: dropped again (idempotent).
            self.unsubscribe_listener(&session.id).await;
        }
        let mut accepted = Map::new();
        for (key, on) in [
            ("toolsListChanged", filter.tools),
            ("promptsListChanged", filter.prompts),
            ("resourcesListChanged", filter.resources),
        ] {
            if on {
                accepted.insert(key.to_owned(), Value::Bool(true));
            }
        }
        if !honoured.is_empty() {
            accepted.insert("resourceSubscriptions".to_owned(), json!(honoured));
        }
        let ack = opted.notification_body(
            "notifications/subscriptions/acknowledged",
            json!({ "notifications": accepted }),
        );
        // First in the channel before the stream is made reachable: nothing can precede it.
        let _ = tx.try_send(SseEvent::message(ack));
        let _ = session.listen.set(opted);
        *session
            .standalone
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tx);
        if session.ended.is_cancelled() {
            // The drain began while the upstreams were asked: end it as the drain ends the
            // others.
            let tx = session
                .standalone
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let (Some(tx), Some(opted)) = (tx, session.listen.get()) {
                let _ = tx.try_send(SseEvent::message(opted.final_result()));
            }
        }
        tracing::debug!(listener = %session.id, uris = honoured.len(), "listen stream open");
        let last = session.listen.get().map(Opted::final_result);
        Ok(Outcome::events_holding(rx, permit)
            .until_token_expiry(auth.token_expires_at_unix_s, last))
    }
}

/// Waits for the end of listen stream `session` (its client gone: the receiver dropped; or
/// the drain: `ended`), then forgets it and drops its resource subscriptions, telling each
/// upstream left without a subscriber.
async fn watch(rt: Weak<Runtime>, session: Arc<Session>, tx: mpsc::Sender<SseEvent>) {
    tokio::select! {
        () = tx.closed() => {}
        () = session.ended.cancelled() => {}
    }
    drop(tx);
    session
        .standalone
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(rt) = rt.upgrade() else { return };
    rt.sessions.end_listener(&session.id);
    rt.unsubscribe_listener(&session.id).await;
    tracing::debug!(listener = %session.id, "listen stream ended");
}

impl Runtime {
    /// Drops every resource subscription of listen stream `id`, telling each upstream left
    /// without a subscriber (a failure is logged at `debug`: the upstream may be gone).
    async fn unsubscribe_listener(&self, id: &str) {
        for (upstream, uri) in self.subscriptions.drop_session(id) {
            let cat = self.catalog.load();
            if let Some(up) = cat.upstreams.iter().find(|u| u.config.id == upstream)
                && let Err(e) = self.subscriptions.sync(up, &uri).await
            {
                tracing::debug!(upstream, uri, error = %e, "unsubscribe failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &Value) -> Result<Filter, RequestError> {
        let raw = RawValue::from_string(v.to_string()).unwrap();
        filter(Some(&raw))
    }

    #[test]
    fn filters_are_read_and_bad_ones_refused() {
        let f = parse(&json!({"notifications": {"toolsListChanged": true,
            "resourceSubscriptions": ["a", "b", "a"], "promptsListChanged": null, "other": 1}}))
        .unwrap();
        assert_eq!(
            f,
            Filter {
                tools: true,
                prompts: false,
                resources: false,
                uris: vec!["a".into(), "b".into()],
            }
        );
        assert!(parse(&json!({"notifications": {}})).is_ok());
        for bad in [
            json!({}),
            json!({"notifications": []}),
            json!({"notifications": {"toolsListChanged": "yes"}}),
            json!({"notifications": {"resourceSubscriptions": "a"}}),
            json!({"notifications": {"resourceSubscriptions": [1]}}),
            json!({"notifications": {"resourceSubscriptions":
                vec!["u"; MAX_RESOURCE_SUBSCRIPTIONS + 1]}}),
        ] {
            assert_eq!(parse(&bad).unwrap_err().code(), -32602, "{bad}");
        }
        assert_eq!(filter(None).unwrap_err().code(), -32602);
    }

    #[test]
    fn messages_carry_the_subscription_id() {
        let o = Opted {
            id: RawValue::from_string(r#""l-1""#.to_owned()).unwrap(),
            tools: true,
            prompts: false,
            resources: false,
        };
        let p: Value = serde_json::from_str(&o.notification_body(
            "notifications/resources/updated",
            json!({"uri": "x", "_meta": {"k": 1}}),
        ))
        .unwrap();
        assert_eq!(p["method"], "notifications/resources/updated");
        assert_eq!(p["params"]["uri"], "x");
        assert_eq!(p["params"]["_meta"], json!({ META_SUBSCRIPTION_ID: "l-1" }));
        let end: Value = serde_json::from_str(&o.final_result()).unwrap();
        assert_eq!(end["id"], "l-1");
        assert_eq!(end["result"]["resultType"], "complete");
        assert_eq!(end["result"]["_meta"][META_SUBSCRIPTION_ID], "l-1");
        assert!(o.wants(ListKind::Tools) && !o.wants(ListKind::Prompts));
    }

    #[test]
    fn an_id_past_u64_is_carried_as_sent() {
        let big = "1180591620717411303424";
        let o = Opted {
            id: RawValue::from_string(big.to_owned()).unwrap(),
            tools: false,
            prompts: false,
            resources: false,
        };
        let note = o.notification_body("notifications/resources/updated", json!({"uri": "x"}));
        assert!(
            note.contains(&format!(r#""{META_SUBSCRIPTION_ID}":{big}"#)),
            "{note}"
        );
        let end = o.final_result();
        assert!(end.contains(&format!(r#""id":{big},"#)), "{end}");
        assert!(
            end.contains(&format!(r#""{META_SUBSCRIPTION_ID}":{big}"#)),
            "{end}"
        );
    }
}
