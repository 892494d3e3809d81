//! The faults of one request, each answered with an HTTP status and a JSON-RPC error: the error
//! table of `docs/http-boundary.md` as one type.
//!
//! Every fault the core (or the HTTP/JSON adapter) answers is a [`RequestError`] variant named
//! after what went wrong; its status, JSON-RPC code and message are properties of the variant,
//! and [`RequestError::into_outcome`] is the one way it becomes an answer. The gRPC adapter's
//! own envelope faults are gRPC status codes, not JSON-RPC errors, and are not here.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::catalog::Kind;
use crate::jsonrpc::{self, FramingError};
use crate::quota::Quota;
use crate::request::Outcome;
use crate::upstream::UpstreamError;

/// A request fault. The `Display` text is the JSON-RPC error message the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No AuthContext, or one that cannot be decoded (HTTP/JSON adapter): 401.
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    /// A `Host` outside the public endpoint's allow-list (edge mode; the value as shown, quoted
    /// as the gateway quotes it): 421, before authentication.
    #[error("Forbidden: Host {0} is not allowed")]
    HostNotAllowed(String),
    /// Refused before the request was read: an `Origin` outside the public endpoint's
    /// allow-list, or valid credentials without the right (the policy core's 403): 403.
    #[error("Forbidden: {0}")]
    Forbidden(String),
    /// The request body stopped arriving for longer than the header read timeout (edge mode's
    /// public endpoint): 408, and the connection is closed.
    #[error("Request body stalled for {} s", .0.as_secs_f64())]
    BodyStalled(Duration),
    /// A request head (request line and headers) over the public endpoint's limit (edge mode):
    /// 431.
    #[error("Request head exceeds the limit of {limit} bytes")]
    HeadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The policy core (edge mode) refused the caller: its status (401 or 403) and its message,
    /// verbatim (it is the JSON-RPC error message, never the token).
    #[error("{message}")]
    CallerDenied {
        /// 401 (no valid credentials) or 403 (valid credentials without the right).
        status: u16,
        /// The core's reason.
        message: String,
    },
    /// The policy core (edge mode) cannot be asked: unreachable, timed out or broken. Nothing
    /// is served without policy: 503 with `Retry-After: 1`.
    #[error("Service unavailable: the policy core cannot be reached")]
    PolicyUnavailable,
    /// Too many caller resolutions (edge mode: ResolveCaller calls to the policy core) are in
    /// progress, from this client address (`per_client`) or in all: 503 with `Retry-After: 1`.
    /// The core was not asked; a flood of unknown credentials cannot starve other callers.
    #[error("Server busy: {limit} caller resolutions are in progress{}; retry shortly", if *.per_client { " from this client" } else { "" })]
    ResolveBusy {
        /// The cap that was reached (`--core-max-resolves-per-client` or `--core-max-resolves`).
        limit: usize,
        /// The per-client cap (else the global one).
        per_client: bool,
    },
    /// The shared state store (Redis, `--state-url`) did not answer within its command timeout
    /// or refused: nothing that needs shared state is served without it: 503 with
    /// `Retry-After: 1`. Requests recover by themselves once the store answers again.
    #[error("Service unavailable: the shared state store cannot be reached")]
    StateUnavailable,
    /// A `Last-Event-ID` that is not an event id of this runtime (malformed), or names no
    /// stream of this session whose events after it are still retained (unknown, another
    /// session's or stream's, or trimmed by retention): 400; nobody's events are sent.
    #[error("Bad Request: Last-Event-ID {} names no resumable stream of this session", shown(.0))]
    UnknownEventId(String),
    /// The replica running a resumed stream's call stopped before the call was answered: the
    /// last event of the resumed stream, 200 inside it.
    #[error(
        "Internal error: the runtime replica running this call stopped before it answered; send the request again"
    )]
    ReplicaStopped,
    /// A hook of the policy core refused the request: 200 with the hook's code and message.
    #[error("{message}")]
    HookDenied {
        /// The JSON-RPC error code the hook chose.
        code: i64,
        /// The JSON-RPC error message the hook chose.
        message: String,
    },
    /// A header that is present but not visible ASCII (HTTP/JSON adapter): 400.
    #[error("Bad Request: header {0} is not visible ASCII")]
    BadHeader(&'static str),
    /// The id in `/servers/{id}/mcp` is not UTF-8 (HTTP/JSON adapter): 400.
    #[error("Bad Request: the server id in the path is not valid UTF-8")]
    BadServerIdInPath,
    /// A path that is not an MCP endpoint (HTTP/JSON adapter): 404.
    #[error("Not found")]
    UnknownPath,
    /// The request body is over the message size limit: 413. `size` is `None` when the body was
    /// not read to its end (the HTTP/JSON adapter stops reading at the limit).
    #[error(
        "Request body{} exceeds the limit of {limit} bytes",
        .size.map_or(String::new(), |s| format!(" of {s} bytes"))
    )]
    PayloadTooLarge {
        /// The body's length in bytes, when known.
        size: Option<usize>,
        /// The limit in bytes.
        limit: usize,
    },
    /// The virtual server of the request does not exist: 404.
    #[error("Server not found: {}", shown(.0))]
    UnknownServer(String),
    /// `MCP-Protocol-Version` names a version the runtime does not speak: 400.
    #[error(
        "Bad Request: Unsupported protocol version: {0} (supported versions: {supported})",
        supported = crate::runtime::PROTOCOL_VERSIONS.join(", ")
    )]
    UnsupportedProtocolVersion(String),
    /// MCP 2026-07-28: a request of that revision names a protocol version the runtime does
    /// not speak (in `_meta` or `MCP-Protocol-Version`): 400, -32022, `data` = `{"requested",
    /// "supported"}`.
    #[error("Unsupported protocol version: {}", shown(.0))]
    UnsupportedVersion(String),
    /// MCP 2026-07-28: `Mcp-Method`, `Mcp-Name` or `MCP-Protocol-Version` missing, repeated
    /// or not matching the body: 400, -32020, checked before any work is done.
    #[error("Header mismatch: {0}")]
    HeaderMismatch(String),
    /// MCP 2026-07-28: a request of that revision whose `_meta` lacks
    /// `io.modelcontextprotocol/protocolVersion` or `io.modelcontextprotocol/clientCapabilities`
    /// (an object): 400, -32602.
    #[error("Invalid params: request _meta is missing or has malformed required fields: {0}")]
    MissingRequestMeta(String),
    /// MCP 2026-07-28 has no session: a GET stream or a DELETE named that revision: 405.
    #[error("Method Not Allowed: protocol version 2026-07-28 has no GET stream or session")]
    NoSessionInThisRevision,
    /// The body is not one JSON-RPC message: 400.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// No `Mcp-Session-Id` on a request that needs a session: 400.
    #[error("Bad Request: Mcp-Session-Id header is required")]
    MissingSessionId,
    /// `initialize` of a subject that already holds `--max-sessions-per-subject` open
    /// sessions: 429 with `Retry-After`, no session created.
    #[error(
        "Too many sessions: this subject already holds the limit of {limit} open sessions; \
         end one (DELETE) or let idle ones expire"
    )]
    TooManySessions {
        /// The limit.
        limit: usize,
    },
    /// A subject at one of its quotas ([`Quota`]): 429, with `Retry-After` unless the request
    /// alone is larger than the quota. Nothing was started.
    #[error("Too many {quota}: {}", if *.alone {
        format!("this request alone exceeds this subject's limit of {limit}")
    } else {
        format!("this subject already holds its limit of {limit}; retry when one ends")
    })]
    SubjectQuota {
        /// What the subject holds too much of.
        quota: Quota,
        /// The quota (streams, calls, or bytes).
        limit: usize,
        /// The request alone is larger than the quota: waiting would not help.
        alone: bool,
    },
    /// The process's budget of bytes in flight is spent: 503, with `Retry-After` unless the
    /// request alone is larger than the budget. Nothing was started.
    #[error("Server busy: {}", if *.alone {
        format!("this request alone exceeds the budget of {budget} bytes in flight")
    } else {
        format!("the budget of {budget} bytes in flight is spent; retry shortly")
    })]
    ProcessBusy {
        /// The budget in bytes.
        budget: usize,
        /// The request alone is larger than the budget: waiting would not help.
        alone: bool,
    },
    /// The session is unknown, ended, another subject's or another scope's: 404.
    #[error("Session not found")]
    UnknownSession,
    /// The method does not exist (or is not available): 200.
    #[error("Method not found: {}", shown(.0))]
    MethodNotFound(String),
    /// The method's params are malformed: 200, nothing sent upstream.
    #[error("Invalid params: {0}")]
    InvalidParams(String),
    /// `tools/call` of a tool that does not exist or is not visible to the caller: 200.
    #[error("Unknown tool: {}", shown(.0))]
    UnknownTool(String),
    /// `prompts/get` of a prompt that does not exist or is not visible to the caller: 200.
    #[error("Unknown prompt: {}", shown(.0))]
    UnknownPrompt(String),
    /// `resources/read` of a URI that no visible resource or template serves: 200.
    #[error("Resource not found: {}", shown(.0))]
    ResourceNotFound(String),
    /// A request whose id is already in flight in the same session: 200, nothing sent upstream.
    #[error("Invalid Request: a request with this id is already in flight in this session")]
    DuplicateRequestId,
    /// The call was cancelled (the caller's `notifications/cancelled`, the end of its session,
    /// or shutdown): 200.
    #[error("Request cancelled")]
    Cancelled,
    /// The upstream did not answer within the upstream timeout: 200.
    #[error("Request timed out after {} ms", .0.as_millis())]
    UpstreamTimeout(Duration),
    /// The upstream could not be reached or broke the connection: 200. The upstream's id and
    /// address stay in the runtime's log.
    #[error("Upstream server unavailable")]
    UpstreamUnavailable,
    /// The upstream answered something that is not MCP: 200.
    #[error("Upstream server sent an invalid answer")]
    UpstreamProtocol,
    /// An upstream message over the limit plus envelope room, read no further: 200.
    #[error("Result exceeds the message size limit of {limit} bytes")]
    UpstreamMessageTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The upstream's stream ended before the response: 200.
    #[error("Upstream stream ended without a response")]
    UpstreamStreamEnded,
    /// An upstream message that is not JSON-RPC: 200.
    #[error("Upstream sent invalid JSON-RPC")]
    UpstreamInvalidMessage,
    /// A result read whole and found over the limit: 200.
    #[error("Result of {size} bytes exceeds the message size limit of {limit} bytes")]
    ResultTooLarge {
        /// The result's length in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

impl RequestError {
    /// The HTTP status of the answer: 200 for faults of a JSON-RPC request that was read (the
    /// error is its response), a 4xx for faults of the HTTP request itself.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized(_) => 401,
            Self::HostNotAllowed(_) => 421,
            Self::Forbidden(_) => 403,
            Self::PolicyUnavailable | Self::StateUnavailable => 503,
            Self::HeadTooLarge { .. } => 431,
            Self::BodyStalled(_) => 408,
            Self::CallerDenied { status, .. } => *status,
            Self::BadHeader(_)
            | Self::BadServerIdInPath
            | Self::UnsupportedProtocolVersion(_)
            | Self::UnsupportedVersion(_)
            | Self::HeaderMismatch(_)
            | Self::MissingRequestMeta(_)
            | Self::Framing(_)
            | Self::MissingSessionId
            | Self::UnknownEventId(_) => 400,
            Self::NoSessionInThisRevision => 405,
            Self::UnknownPath | Self::UnknownServer(_) | Self::UnknownSession => 404,
            Self::PayloadTooLarge { .. } => 413,
            Self::TooManySessions { .. } | Self::SubjectQuota { .. } => 429,
            Self::ProcessBusy { .. } | Self::ResolveBusy { .. } => 503,
            _ => 200,
        }
    }

    /// The JSON-RPC error code.
    #[must_use]
    pub fn code(&self) -> i64 {
        match self {
            Self::Unauthorized(_) | Self::CallerDenied { .. } => jsonrpc::UNAUTHORIZED,
            Self::HookDenied { code, .. } => *code,
            Self::HostNotAllowed(_)
            | Self::Forbidden(_)
            | Self::PolicyUnavailable
            | Self::StateUnavailable => jsonrpc::BAD_REQUEST,
            Self::BadHeader(_)
            | Self::BadServerIdInPath
            | Self::UnsupportedProtocolVersion(_)
            | Self::MissingSessionId
            | Self::UnknownEventId(_) => jsonrpc::BAD_REQUEST,
            Self::UnknownPath | Self::UnknownServer(_) | Self::UnknownSession => jsonrpc::NOT_FOUND,
            Self::TooManySessions { .. }
            | Self::SubjectQuota { .. }
            | Self::ProcessBusy { .. }
            | Self::ResolveBusy { .. } => jsonrpc::LIMIT_REACHED,
            Self::PayloadTooLarge { .. } | Self::HeadTooLarge { .. } | Self::DuplicateRequestId => {
                jsonrpc::INVALID_REQUEST
            }
            Self::Framing(e) => e.code(),
            Self::UnsupportedVersion(_) => jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            Self::HeaderMismatch(_) => jsonrpc::HEADER_MISMATCH,
            Self::MissingRequestMeta(_) => jsonrpc::INVALID_PARAMS,
            Self::NoSessionInThisRevision => jsonrpc::BAD_REQUEST,
            Self::MethodNotFound(_) => jsonrpc::METHOD_NOT_FOUND,
            Self::InvalidParams(_) | Self::UnknownTool(_) | Self::UnknownPrompt(_) => {
                jsonrpc::INVALID_PARAMS
            }
            Self::ResourceNotFound(_) => jsonrpc::RESOURCE_NOT_FOUND,
            Self::UpstreamTimeout(_) | Self::BodyStalled(_) => jsonrpc::REQUEST_TIMEOUT,
            Self::Cancelled
            | Self::ReplicaStopped
            | Self::UpstreamUnavailable
            | Self::UpstreamProtocol
            | Self::UpstreamMessageTooLarge { .. }
            | Self::UpstreamStreamEnded
            | Self::UpstreamInvalidMessage
            | Self::ResultTooLarge { .. } => jsonrpc::INTERNAL_ERROR,
        }
    }

    /// The error for a name of `kind` that no visible entry has. Not visible is answered
    /// exactly like not existing.
    pub(crate) fn not_found(kind: Kind, name: String) -> Self {
        match kind {
            Kind::Tool => Self::UnknownTool(name),
            Kind::Prompt => Self::UnknownPrompt(name),
            Kind::Resource => Self::ResourceNotFound(name),
        }
    }

    /// The JSON-RPC error response: `id` is the request's, or `None` (`null`) when the fault
    /// came before the id was read. Also the last event of a stream that fails once its head
    /// is sent.
    #[must_use]
    pub fn body(&self, id: Option<&RawValue>) -> Vec<u8> {
        if let Self::UnsupportedVersion(requested) = self {
            let data = serde_json::json!({
                "requested": shown(requested),
                "supported": crate::runtime::all_protocol_versions(),
            });
            return jsonrpc::error_body_with_data(
                id,
                self.code(),
                &self.to_string(),
                &data.to_string(),
            );
        }
        jsonrpc::error_body(id, self.code(), &self.to_string())
    }

    /// Seconds after which the request may succeed when sent again, for a `Retry-After`
    /// header: only for a refusal that time can lift. A subject's sessions free a slot when
    /// one is deleted or reaped idle; the reaper runs at least once a minute. Streams, calls
    /// and bytes in flight end with their requests, within seconds.
    #[must_use]
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::TooManySessions { .. } => Some(SESSION_LIMIT_RETRY_AFTER_S),
            Self::SubjectQuota { alone: false, .. }
            | Self::ProcessBusy { alone: false, .. }
            | Self::ResolveBusy { .. }
            | Self::PolicyUnavailable
            | Self::StateUnavailable => Some(QUOTA_RETRY_AFTER_S),
            _ => None,
        }
    }

    /// The answer to the request: [`RequestError::status`], [`RequestError::body`] and, where
    /// it fits, `retry-after` ([`RequestError::retry_after_s`]).
    #[must_use]
    pub fn into_outcome(self, id: Option<&RawValue>) -> Outcome {
        let outcome = Outcome::json(self.status(), Bytes::from(self.body(id)));
        match self.retry_after_s() {
            Some(s) => outcome.with_header("retry-after", s.to_string()),
            None => outcome,
        }
    }
}

/// `Retry-After` of [`RequestError::TooManySessions`], in seconds: the longest period of the
/// sidecar's idle-session reaper.
pub(crate) const SESSION_LIMIT_RETRY_AFTER_S: u64 = 60;

/// `Retry-After` of [`RequestError::SubjectQuota`] and [`RequestError::ProcessBusy`], in
/// seconds.
pub(crate) const QUOTA_RETRY_AFTER_S: u64 = 1;

impl From<crate::session::SubjectLimitReached> for RequestError {
    fn from(e: crate::session::SubjectLimitReached) -> Self {
        Self::TooManySessions { limit: e.limit }
    }
}

/// The caller sees what kind of upstream fault happened, never the upstream's address or id:
/// those are logged here, where the detail is dropped.
impl From<UpstreamError> for RequestError {
    fn from(e: UpstreamError) -> Self {
        tracing::warn!(error = %e, "upstream call failed");
        match e {
            UpstreamError::Unavailable { .. } => Self::UpstreamUnavailable,
            UpstreamError::Protocol { .. } => Self::UpstreamProtocol,
            UpstreamError::TooLarge { limit } => Self::UpstreamMessageTooLarge { limit },
            // Resumed where it is read (`forward.rs`); anywhere else the stream just ended.
            UpstreamError::Polled { .. } => Self::UpstreamStreamEnded,
        }
    }
}

/// Longest caller-supplied name echoed in an error message, in bytes: a 1 MiB method name
/// must not come back as a 1 MiB error (nor fill the logs).
const SHOWN_NAME_BYTES: usize = 128;

/// `name` cut to [`SHOWN_NAME_BYTES`] on a character boundary, with `...` when cut.
fn shown(name: &str) -> Cow<'_, str> {
    if name.len() <= SHOWN_NAME_BYTES {
        return Cow::Borrowed(name);
    }
    let mut end = SHOWN_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &name[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_are_the_documented_ones() {
        let e = RequestError::PayloadTooLarge {
            size: Some(10),
            limit: 5,
        };
        assert_eq!(
            e.to_string(),
            "Request body of 10 bytes exceeds the limit of 5 bytes"
        );
        let e = RequestError::PayloadTooLarge {
            size: None,
            limit: 5,
        };
        assert_eq!(e.to_string(), "Request body exceeds the limit of 5 bytes");
        assert_eq!((e.status(), e.code()), (413, -32600));
        let e = RequestError::UpstreamTimeout(Duration::from_millis(1500));
        assert_eq!(e.to_string(), "Request timed out after 1500 ms");
        assert_eq!((e.status(), e.code()), (200, -32001));
        let e = RequestError::TooManySessions { limit: 3 };
        assert_eq!(
            (e.status(), e.code(), e.retry_after_s()),
            (429, -32000, Some(60))
        );
        assert!(e.to_string().contains("limit of 3 open sessions"), "{e}");
        let outcome = e.into_outcome(None);
        assert_eq!(outcome.head.header("retry-after"), Some("60"));
        assert_eq!(RequestError::UnknownSession.retry_after_s(), None);
        let e = RequestError::Unauthorized("missing x".into());
        assert_eq!((e.status(), e.code()), (401, -32001));
        // Edge mode: the public endpoint's refusals and the policy core's answers.
        let e = RequestError::HostNotAllowed("'evil'".into());
        assert_eq!(e.to_string(), "Forbidden: Host 'evil' is not allowed");
        assert_eq!((e.status(), e.code()), (421, -32000));
        let e = RequestError::Forbidden("Origin 'x' is not allowed".into());
        assert_eq!((e.status(), e.code()), (403, -32000));
        let e = RequestError::BodyStalled(Duration::from_secs(10));
        assert_eq!(e.to_string(), "Request body stalled for 10 s");
        assert_eq!((e.status(), e.code()), (408, -32001));
        let e = RequestError::HeadTooLarge { limit: 8 };
        assert_eq!(e.to_string(), "Request head exceeds the limit of 8 bytes");
        assert_eq!((e.status(), e.code()), (431, -32600));
        let e = RequestError::PolicyUnavailable;
        assert_eq!(
            (e.status(), e.code(), e.retry_after_s()),
            (503, -32000, Some(1))
        );
        let e = RequestError::ResolveBusy {
            limit: 8,
            per_client: true,
        };
        assert_eq!(
            e.to_string(),
            "Server busy: 8 caller resolutions are in progress from this client; retry shortly"
        );
        assert_eq!(
            (e.status(), e.code(), e.retry_after_s()),
            (503, -32000, Some(1))
        );
        let e = RequestError::ResolveBusy {
            limit: 64,
            per_client: false,
        };
        assert_eq!(
            e.to_string(),
            "Server busy: 64 caller resolutions are in progress; retry shortly"
        );
        let e = RequestError::CallerDenied {
            status: 401,
            message: "Unauthorized: token expired".into(),
        };
        assert_eq!(e.to_string(), "Unauthorized: token expired");
        assert_eq!((e.status(), e.code()), (401, -32001));
        let e = RequestError::HookDenied {
            code: -32003,
            message: "Tool denied".into(),
        };
        assert_eq!(
            (e.status(), e.code(), e.to_string()),
            (200, -32003, "Tool denied".into())
        );
        let long = "é".repeat(100);
        let shown = RequestError::UnknownTool(long).to_string();
        assert!(shown.ends_with("..."), "{shown}");
        assert!(shown.len() <= "Unknown tool: ".len() + SHOWN_NAME_BYTES + 3);
    }
}
