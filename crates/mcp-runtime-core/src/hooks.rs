//! Hooks: points in a request where an outside policy (the Python core, in edge mode) may look
//! at a payload and let the request go on, change the payload or refuse the request.
//!
//! The core knows no transport: the sidecar implements [`Hooks`] (over the Core SPI) and hands
//! it to [`crate::Runtime::with_hooks`]. The core asks [`Hooks::registered`] first and calls
//! [`Hooks::invoke`] only for a point and name with a hook, so a runtime without hooks (or a
//! call without one) costs one lookup and no copy.
//!
//! Points: [`HookPoint::PreInvoke`] before `tools/call` goes upstream (payload: the call's
//! `arguments` object), [`HookPoint::PostInvoke`] after it answered (payload: the JSON-RPC
//! `result` object), [`HookPoint::PostFetch`] after `resources/read` or `prompts/get` answered
//! (payload: the `result`). A call with a post hook relays the upstream's notifications as they
//! come (SSE, when the client accepts it) and its answer only after the hook decided.
//!
//! Fail closed: a hook that cannot be asked ([`HookError`]) fails the request with 503
//! ([`crate::RequestError::PolicyUnavailable`]); it is never skipped.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::auth::AuthContext;

/// Where in a request a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// Before `tools/call` is sent upstream; the payload is the call's `arguments` object.
    PreInvoke,
    /// After `tools/call` answered with a result; the payload is the `result` object.
    PostInvoke,
    /// After `resources/read` or `prompts/get` answered with a result; the payload is the
    /// `result` object.
    PostFetch,
}

/// One hook invocation: the point, what the request is about, and the payload.
#[derive(Debug, Clone)]
pub struct HookCall<'a> {
    /// The point.
    pub point: HookPoint,
    /// The tool name, resource URI or prompt name as the client named it.
    pub name: &'a str,
    /// The JSON-RPC method (`tools/call`, `resources/read`, `prompts/get`).
    pub method: &'a str,
    /// The caller.
    pub caller: &'a AuthContext,
    /// The virtual server id; `None` for `/mcp`.
    pub server_id: Option<&'a str>,
    /// The MCP session id.
    pub session_id: &'a str,
    /// The request id of the public HTTP request, if any.
    pub request_id: Option<&'a str>,
    /// UTF-8 JSON of an object (see [`HookPoint`] for which).
    pub payload: Bytes,
}

/// What a hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookDecision {
    /// Go on; `Some` replaces the payload (UTF-8 JSON of an object), `None` keeps it.
    Proceed(Option<Bytes>),
    /// Refuse the request with this JSON-RPC error (answered with HTTP 200 and the request's
    /// id, like every JSON-RPC error of a read request).
    Deny {
        /// The JSON-RPC error code (for example -32003).
        code: i64,
        /// The JSON-RPC error message.
        message: String,
    },
}

/// A hook could not be asked (the policy service is unreachable, timed out or answered
/// something unusable). The message is logged, never shown to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("hook unavailable: {0}")]
pub struct HookError(pub String);

/// One finished call (`tools/call`, `resources/read`, `prompts/get`), for the outside policy's
/// metrics ([`Hooks::record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The caller's subject; empty for anonymous.
    pub subject_email: String,
    /// The virtual server id; `None` for `/mcp`.
    pub server_id: Option<String>,
    /// The JSON-RPC method.
    pub method: String,
    /// The tool name, resource URI or prompt name.
    pub name: String,
    /// The HTTP status of the answer.
    pub http_status: u16,
    /// The JSON-RPC error code of an error the runtime made (a refusal, a hook's denial, an
    /// upstream fault); 0 for a relayed answer (a result, or an error the upstream sent).
    pub jsonrpc_code: i64,
    /// From the call's dispatch to its answer (the start of the stream for an SSE answer).
    pub duration: std::time::Duration,
    /// The request id, if any.
    pub request_id: Option<String>,
    /// When the call was dispatched.
    pub started_at: std::time::SystemTime,
}

/// The future of one [`Hooks::invoke`].
pub type HookFuture<'a> =
    Pin<Box<dyn Future<Output = Result<HookDecision, HookError>> + Send + 'a>>;

/// The hooks registered by an outside policy. Implemented by the sidecar (the Core SPI client);
/// the core only calls it.
pub trait Hooks: Send + Sync + std::fmt::Debug {
    /// Whether a hook is registered for `point` and `name` (a registration for `*` matches
    /// every name). Called on every call, so it must be cheap and must not block.
    fn registered(&self, point: HookPoint, name: &str) -> bool;

    /// Runs the hooks of one point of one request and returns their decision.
    ///
    /// # Errors
    ///
    /// [`HookError`] when the hook could not be asked: the request then fails with 503.
    fn invoke<'a>(&'a self, call: HookCall<'a>) -> HookFuture<'a>;

    /// Takes the record of one finished call. Must not block or wait: an implementation that
    /// cannot keep up drops records (and counts them). The default keeps nothing.
    fn record(&self, record: CallRecord) {
        let _ = record;
    }
}
