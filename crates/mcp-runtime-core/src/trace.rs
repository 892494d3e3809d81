//! The core's CLIENT spans (one per upstream call) without an OpenTelemetry dependency: the
//! spans are `tracing` spans on [`TARGET`], which only the runtime binary's OpenTelemetry
//! layer enables (`mcp-runtime`, module `otel`, feature `otel`); the log filter never does.
//! With tracing off a span macro on [`TARGET`] is one cached interest check and creates
//! nothing.
//!
//! The W3C `traceparent` sent with an upstream call is the call's span's own context, read
//! through the function the binary installs with [`install`] (the OpenTelemetry context of a
//! `tracing` span); without it (tracing off) the context the request arrived with is passed on
//! unchanged.

use std::sync::OnceLock;

/// The `tracing` target of every span meant for OpenTelemetry (request, upstream and Core
/// SPI spans).
pub const TARGET: &str = "mcp_otel";

/// Reads the W3C `traceparent` (`00-{trace id}-{span id}-{flags}`) of a span.
pub type ContextOf = fn(&tracing::Span) -> Option<String>;

static CONTEXT_OF: OnceLock<ContextOf> = OnceLock::new();

/// Switches the CLIENT spans' context on for the rest of the process: `context_of` reads a
/// span's `traceparent` (called once, by the binary, when it installs its OpenTelemetry layer;
/// a second call is ignored).
pub fn install(context_of: ContextOf) {
    let _ = CONTEXT_OF.set(context_of);
}

/// Whether tracing is on ([`install`] was called).
#[must_use]
#[inline]
pub fn is_on() -> bool {
    CONTEXT_OF.get().is_some()
}

/// The `traceparent` of `span` when tracing is on and the span is enabled; `None` otherwise.
#[must_use]
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    CONTEXT_OF.get().and_then(|f| f(span))
}
