//! One HTTP/1.1 keep-alive connection (hyper 1) over any byte stream, shared by the
//! HTTP/JSON client (Unix socket) and the end-to-end client (TCP).

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::CallError;

/// One HTTP/1.1 connection; its connection task is aborted when this drops.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// Performs the HTTP/1.1 handshake on `io` and spawns the connection task.
    ///
    /// # Errors
    ///
    /// The hyper error if the handshake fails.
    pub(crate) async fn handshake<T>(io: T) -> Result<Self, hyper::Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, task })
    }

    /// Whether the connection is closed (by the server, e.g. after its keep-alive timeout).
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and returns the response head and its body as it arrives.
    ///
    /// # Errors
    ///
    /// [`CallError::Transport`] when the connection fails.
    pub(crate) async fn send_streaming(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, http::HeaderMap, hyper::body::Incoming), CallError> {
        self.sender
            .ready()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        Ok((parts.status, parts.headers, body))
    }

    /// Sends one request and collects the whole response body.
    ///
    /// # Errors
    ///
    /// [`CallError::Transport`] when the connection fails.
    pub(crate) async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), CallError> {
        self.sender
            .ready()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let resp = self.sender.send_request(req).await.map_err(|e| {
            if e.is_canceled() {
                CallError::NotSent(e.to_string())
            } else {
                CallError::Transport(e.to_string())
            }
        })?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// `GET path` with `Host: host`; returns the status and the body.
    ///
    /// # Errors
    ///
    /// When the path is not a valid URI or the exchange fails.
    pub(crate) async fn get(
        &mut self,
        host: &str,
        path: &str,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = Request::builder()
            .method(http::Method::GET)
            .uri(path)
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| anyhow::anyhow!("bad request path {path}: {e}"))?;
        let (status, _, body) = self.send(req).await?;
        Ok((status, body))
    }
}
