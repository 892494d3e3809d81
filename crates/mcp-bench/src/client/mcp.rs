//! The end-to-end client: MCP streamable HTTP to the gateway's public endpoint, hyper 1 over
//! TCP, one HTTP/1.1 keep-alive connection per worker, a bearer token on every request.
//!
//! Each worker opens its own MCP session (`initialize`, then `notifications/initialized`) on
//! its connection, sends its measured requests with that session id, and closes the session
//! with `DELETE` at the end of the row. Answers may be `application/json` or
//! `text/event-stream`; for SSE the last `data:` line is the JSON-RPC response.

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use tokio::net::TcpStream;

use super::h1::Conn;
use super::{ACCEPT, CallError, PROTOCOL_VERSION, Workload, check_jsonrpc, initialize_body};

async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    Conn::handshake(stream)
        .await
        .context("HTTP/1.1 handshake failed")
}

/// The JSON-RPC message of a response body: the body itself for JSON, the last `data:` line
/// (joined with the `data:` lines of the same event) for `text/event-stream`.
#[must_use]
pub fn jsonrpc_payload<'a>(content_type: Option<&HeaderValue>, body: &'a [u8]) -> &'a [u8] {
    let is_sse = content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return body;
    }
    // Events are separated by blank lines; the response is the last event carrying data. A
    // large result comes as one `data:` line, so the last such line is taken as is.
    body.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let data = line.strip_prefix(b"data:")?;
            Some(data.strip_prefix(b" ").unwrap_or(data))
        })
        .rfind(|d| !d.is_empty())
        .unwrap_or(b"")
}

/// The gateway's endpoint and the bearer token to present.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `127.0.0.1:PORT` of the gateway.
    pub addr: SocketAddr,
    /// `Bearer <jwt>`.
    pub authorization: HeaderValue,
}

impl Endpoint {
    /// An endpoint at `addr` presenting `token`.
    ///
    /// # Errors
    ///
    /// When the token is not a valid header value.
    pub fn new(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            authorization: HeaderValue::from_str(&format!("Bearer {token}"))
                .context("token is not a header value")?,
        })
    }

    fn request(
        &self,
        method: Method,
        session: Option<&HeaderValue>,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri("/mcp")
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::ACCEPT, ACCEPT)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("mcp-protocol-version", PROTOCOL_VERSION);
        if let Some(s) = session {
            b = b.header("mcp-session-id", s.clone());
        }
        b.body(Full::new(body))
            .expect("static request parts are valid")
    }
}

/// `GET path` over a fresh connection; returns the status.
///
/// # Errors
///
/// When the address cannot be reached or the exchange fails.
pub async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<StatusCode> {
    let mut conn = connect(addr).await?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(http::header::HOST, "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .context("bad request path")?;
    let (status, _, _) = conn.send(req).await.map_err(anyhow::Error::from)?;
    Ok(status)
}

/// Opens a session on `conn`: `initialize` with id `id`, then `notifications/initialized`;
/// returns the session id.
async fn open_session(
    conn: &mut Conn,
    endpoint: &Endpoint,
    id: u64,
) -> Result<HeaderValue, CallError> {
    let (status, headers, body) = conn
        .send(endpoint.request(Method::POST, None, Bytes::from(initialize_body(id))))
        .await?;
    if status != StatusCode::OK {
        return Err(CallError::Response(format!(
            "initialize: status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )));
    }
    let payload = jsonrpc_payload(headers.get(http::header::CONTENT_TYPE), &body);
    check_jsonrpc(payload, id)?;
    let session = headers
        .get("mcp-session-id")
        .ok_or_else(|| CallError::Response("initialize: no mcp-session-id header".to_owned()))?
        .clone();
    let note = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let (status, _, body) = conn
        .send(endpoint.request(Method::POST, Some(&session), note))
        .await?;
    if status != StatusCode::ACCEPTED {
        return Err(CallError::Response(format!(
            "notifications/initialized: status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )));
    }
    Ok(session)
}

/// One worker: a keep-alive connection to the gateway and its own MCP session.
#[derive(Debug)]
pub struct McpWorker {
    conn: Conn,
    endpoint: Endpoint,
    session: HeaderValue,
    next_id: u64,
}

impl McpWorker {
    /// Connects and opens a session (`initialize`, `notifications/initialized`).
    ///
    /// # Errors
    ///
    /// When the gateway cannot be reached or does not open a session.
    pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Self> {
        let mut conn = connect(endpoint.addr).await?;
        let session = open_session(&mut conn, endpoint, 0)
            .await
            .map_err(|e| anyhow::anyhow!("opening a session through the gateway: {e}"))?;
        Ok(Self {
            conn,
            endpoint: endpoint.clone(),
            session,
            next_id: 1,
        })
    }

    /// POSTs one request and checks the answer; returns the response body length.
    ///
    /// # Errors
    ///
    /// [`CallError`] for a transport failure, a status other than 200 or a non-result body.
    pub async fn call(&mut self, workload: Workload) -> Result<usize, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        if workload == Workload::Session {
            let session = open_session(&mut self.conn, &self.endpoint, id).await?;
            let req = self
                .endpoint
                .request(Method::DELETE, Some(&session), Bytes::new());
            let (status, _, _) = self.conn.send(req).await?;
            if !status.is_success() {
                return Err(CallError::Status(status.as_u16()));
            }
            return Ok(0);
        }
        let req = self.endpoint.request(
            Method::POST,
            Some(&self.session),
            Bytes::from(workload.body(id)),
        );
        let (status, headers, body) = self.conn.send(req).await?;
        if status != StatusCode::OK {
            return Err(CallError::Status(status.as_u16()));
        }
        check_jsonrpc(
            jsonrpc_payload(headers.get(http::header::CONTENT_TYPE), &body),
            id,
        )?;
        Ok(body.len())
    }

    /// Ends the worker's session with `DELETE /mcp`; errors are ignored (the row is over).
    pub async fn close(mut self) {
        let req = self
            .endpoint
            .request(Method::DELETE, Some(&self.session), Bytes::new());
        let _ = self.conn.send(req).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_payload_is_the_last_data_line() {
        let sse = HeaderValue::from_static("text/event-stream");
        let body = b"event: message\r\ndata: {\"a\":1}\r\n\r\nevent: message\ndata: {\"b\":2}\n\n";
        assert_eq!(jsonrpc_payload(Some(&sse), body), br#"{"b":2}"#);
        let json = HeaderValue::from_static("application/json");
        assert_eq!(jsonrpc_payload(Some(&json), b"{}"), b"{}");
        assert_eq!(jsonrpc_payload(None, b"{}"), b"{}");
    }
}
