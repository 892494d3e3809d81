//! A legacy HTTP+SSE upstream (the "HTTP with SSE" transport of MCP 2024-11-05, replaced by
//! streamable HTTP in 2025-03-26): one long-lived `GET` of the server's SSE endpoint carries
//! every message of the server; its first event, `endpoint`, names the URL the client POSTs
//! its own messages to (each answered `202 Accepted`, the answer itself coming on the stream).
//! rmcp, the runtime's MCP client library, has no client for it; the SSE parsing is the
//! `sse-stream` crate's (the one rmcp uses).
//!
//! The connection is run like a stdio server's pipes (module `stdio`): one supervisor holds
//! it, multiplexes every caller's requests over the one session, and connects again with
//! back-off when the stream ends. What the runtime checks that a hostile server could abuse:
//! the `endpoint` must be on the SSE URL's origin (the POSTs carry the upstream's
//! credentials), it must come within [`ENDPOINT_WAIT`], and no event may be longer than the
//! runtime's message limit plus 1 MiB (bytes between two blank lines; longer ends the
//! connection, as a stdio line over the cap does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};

/// How long the server has to send its `endpoint` event after the stream opened.
pub(crate) const ENDPOINT_WAIT: Duration = Duration::from_secs(10);

/// An open legacy SSE session: the event stream and the endpoint to POST to.
pub(crate) struct SseConn {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    events: BoxStream<'static, Result<sse_stream::Sse, String>>,
    over: Arc<AtomicBool>,
}

impl SseConn {
    /// Opens the SSE stream at `url` with `client` (the upstream's credentials and roots)
    /// and reads its `endpoint` event; events longer than `max_event` bytes end the stream.
    ///
    /// # Errors
    ///
    /// Why the session could not be opened, as one line that does not repeat the URL (it may
    /// carry a secret): unreachable, an HTTP status other than 200, a body that is not
    /// `text/event-stream`, no `endpoint` event within [`ENDPOINT_WAIT`], or an endpoint on
    /// another origin.
    pub(crate) async fn connect(
        client: reqwest::Client,
        url: &str,
        max_event: usize,
    ) -> Result<Self, String> {
        let base = reqwest::Url::parse(url).map_err(|e| format!("bad SSE URL: {e}"))?;
        let resp = client
            .get(base.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| format!("cannot open the SSE stream: {}", chain(&e)))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("the SSE endpoint answered HTTP {}", resp.status()));
        }
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_sse {
            return Err("the SSE endpoint did not answer with text/event-stream".to_owned());
        }
        let over = Arc::new(AtomicBool::new(false));
        let capped = cap_events(resp.bytes_stream().boxed(), max_event, Arc::clone(&over));
        let mut events = sse_stream::SseStream::from_bytes_stream(capped)
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed();
        let endpoint = tokio::time::timeout(ENDPOINT_WAIT, async {
            while let Some(ev) = events.next().await {
                let ev = ev?;
                if ev.event.as_deref() == Some("endpoint") {
                    return Ok(ev.data.unwrap_or_default());
                }
            }
            Err("the SSE stream ended before its `endpoint` event".to_owned())
        })
        .await
        .map_err(|_| format!("no `endpoint` event within {ENDPOINT_WAIT:?}"))??;
        let endpoint = base
            .join(endpoint.trim())
            .map_err(|e| format!("the `endpoint` event is not a URL: {e}"))?;
        if endpoint.origin() != base.origin() {
            return Err(
                "the `endpoint` event names another origin than the SSE URL's; refused (the \
                 upstream's credentials go with every POST)"
                    .to_owned(),
            );
        }
        Ok(Self {
            client,
            endpoint,
            events,
            over,
        })
    }

    /// Whether the stream ended because an event went over the cap.
    pub(crate) fn over_cap(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// POSTs one message to the endpoint.
    pub(crate) fn send(
        &self,
        msg: &ClientJsonRpcMessage,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        let (client, url) = (self.client.clone(), self.endpoint.clone());
        let body = serde_json::to_vec(msg);
        async move {
            let body = body.map_err(std::io::Error::other)?;
            let resp = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| std::io::Error::other(chain(&e)))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "the server answered the POST with HTTP {}",
                    resp.status()
                )))
            }
        }
    }

    /// The next message of the stream (events named other than `message` skipped, data that
    /// is not a JSON-RPC message logged and skipped); `None` once it ended.
    pub(crate) async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        loop {
            let ev = match self.events.next().await? {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::debug!(error = %e, "SSE upstream stream broke");
                    return None;
                }
            };
            if !matches!(ev.event.as_deref(), None | Some("message")) {
                continue;
            }
            let Some(data) = ev.data else { continue };
            match serde_json::from_str(&data) {
                Ok(msg) => return Some(msg),
                Err(e) => {
                    tracing::debug!(error = %e, "SSE upstream event is not a JSON-RPC message; skipped");
                }
            }
        }
    }

    /// Closes the stream (the server sees the GET end).
    pub(crate) fn close(&mut self) {
        self.events = futures::stream::empty().boxed();
    }
}

/// `e` with its causes, each said once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    super::with_causes(e.to_string(), e.source())
}

/// Passes `body` on, ending it with an error (and setting `over`) once more than `max` bytes
/// come without an event boundary (a blank line: `\n\n`, `\r\n\r\n` or `\r\r`).
fn cap_events(
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    max: usize,
    over: Arc<AtomicBool>,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let mut scan = EventScan::default();
    body.map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if scan.feed(&chunk) > max {
            over.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other(format!(
                "an event longer than {max} bytes"
            )));
        }
        Ok(chunk)
    })
    .scan(false, |ended, item| {
        // Nothing after the error: the parser sees the stream end there.
        if *ended {
            return futures::future::ready(None);
        }
        *ended = item.is_err();
        futures::future::ready(Some(item))
    })
    .boxed()
}

/// The length of the event being read, across chunks.
#[derive(Debug, Default)]
struct EventScan {
    /// Bytes since the last event boundary.
    pending: usize,
    /// The previous byte ended a line (`\n`, or `\r` not yet followed by `\n`).
    at_line_start: bool,
    /// The previous byte was `\r`.
    after_cr: bool,
}

impl EventScan {
    /// Reads `chunk`; returns the longest event length seen in it (bytes without a boundary).
    fn feed(&mut self, chunk: &[u8]) -> usize {
        let mut longest = self.pending;
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => {
                    // The `\n` of a `\r\n`: the line already ended at the `\r`.
                    self.after_cr = false;
                }
                b'\n' | b'\r' => {
                    if self.at_line_start {
                        self.pending = 0;
                        self.at_line_start = false;
                    } else {
                        self.at_line_start = true;
                    }
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.at_line_start = false;
                    self.after_cr = false;
                    self.pending += 1;
                    longest = longest.max(self.pending);
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::EventScan;

    #[test]
    fn events_are_measured_between_blank_lines_of_any_line_ending() {
        for sep in ["\n", "\r\n", "\r"] {
            let mut s = EventScan::default();
            let text = format!("data: abc{sep}{sep}data: de{sep}{sep}");
            assert_eq!(s.feed(text.as_bytes()), 9, "{sep:?}");
            assert_eq!(s.pending, 0, "{sep:?}");
            // One event across chunks, its lines counted together.
            let mut s = EventScan::default();
            s.feed(format!("data: 1234{sep}").as_bytes());
            assert_eq!(s.feed(format!("data: 56{sep}").as_bytes()), 18, "{sep:?}");
            s.feed(sep.as_bytes());
            assert_eq!(s.pending, 0, "{sep:?}");
        }
    }
}
