//! Admission of connections on the runtime's Unix sockets, before a byte of a request is read:
//! the peer's uid (`SO_PEERCRED`) checked against `--allow-uid`, a cap on open connections per
//! socket, and a timeout for the first byte of a new connection.
//!
//! Refused connections are closed right after `accept`, so a client of another uid, or one
//! connection too many, sees the connection closed without any answer; nothing of what it sent
//! is read. Without these limits about 20,000 idle local connections exhaust the process's
//! file descriptors.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use mcp_runtime_core::metrics::{self, Mode};

/// The admission rules of one socket.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Socket name for the logs (`http`, `grpc` or `public`).
    name: &'static str,
    /// The same as the `mode` label of the metrics.
    mode: Mode,
    /// Uids allowed to connect; empty means any uid the socket's file mode lets in.
    allow_uids: Arc<[u32]>,
    /// One permit per open connection; at zero further connections are closed at once.
    slots: Arc<Semaphore>,
    /// How long a new connection may stay silent before it is closed; the HTTP adapter also
    /// gives each request head this long (`--header-read-timeout-ms` sets both).
    header_read_timeout: Duration,
}

impl Admission {
    /// Rules for socket `name`: `allow_uids` (empty: any), at most `max_connections` open at
    /// once (at least 1), `header_read_timeout` for a new connection's first byte (and, on the
    /// HTTP socket, for each request head).
    #[must_use]
    pub fn new(
        name: &'static str,
        allow_uids: &[u32],
        max_connections: usize,
        header_read_timeout: Duration,
    ) -> Self {
        let mode = match name {
            "grpc" => Mode::Grpc,
            "public" => Mode::Public,
            _ => Mode::Http,
        };
        Self {
            name,
            mode,
            allow_uids: allow_uids.into(),
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            header_read_timeout,
        }
    }

    /// How long a connection may stay silent before its first byte (and a request head may
    /// take on the HTTP socket).
    #[must_use]
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// Waits for the next admitted connection. Connections of a uid not allowed, or over the
    /// cap, are closed here and logged; `accept` errors (e.g. out of file descriptors) are
    /// logged and retried after 50 ms, so the server never stops accepting.
    pub(crate) async fn accept(&self, listener: &UnixListener) -> Conn {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(socket = self.name, error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Some(conn) = self.admit(stream) {
                return conn;
            }
        }
    }

    /// Waits for the next admitted connection on the public TCP listener (edge mode): the
    /// connection cap and the first-byte timeout apply, the uid rule does not (a TCP peer has
    /// none). At the cap, `evict_idle` is asked to close the connection that has waited longest
    /// for a request head; when it did, the new connection takes the slot that frees (waiting
    /// at most [`EVICT_WAIT`]); when none is idle, the new connection is answered 503 and closed
    /// (in a task of its own). Returns the connection and the peer's address.
    pub(crate) async fn accept_tcp(
        &self,
        listener: &TcpListener,
        evict_idle: &(dyn Fn() -> bool + Send + Sync),
    ) -> (Conn<TcpStream>, std::net::SocketAddr) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(socket = self.name, error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => {
                    metrics::connection_admitted(self.mode);
                    let conn = Conn {
                        stream,
                        _permit: permit,
                        first_byte: Some(Box::pin(tokio::time::sleep(self.header_read_timeout))),
                    };
                    return (conn, peer);
                }
                Err(_) => {
                    if evict_idle() {
                        let freed = tokio::time::timeout(
                            EVICT_WAIT,
                            Arc::clone(&self.slots).acquire_owned(),
                        )
                        .await;
                        if let Ok(Ok(permit)) = freed {
                            tracing::info!(
                                socket = self.name,
                                %peer,
                                "--max-connections reached: the connection idle longest was closed for a new one"
                            );
                            let conn = Conn {
                                stream,
                                _permit: permit,
                                first_byte: Some(Box::pin(tokio::time::sleep(
                                    self.header_read_timeout,
                                ))),
                            };
                            return (conn, peer);
                        }
                    }
                    metrics::connection_refused(self.mode, "max_connections");
                    tracing::warn!(
                        socket = self.name,
                        %peer,
                        "connection refused with 503: --max-connections reached, none idle"
                    );
                    tokio::spawn(refuse_busy(stream));
                }
            }
        }
    }

    /// Takes a connection slot for `stream`; `None` (the stream closed) at the cap.
    fn slot<S>(&self, stream: S) -> Option<Conn<S>> {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            metrics::connection_refused(self.mode, "max_connections");
            tracing::warn!(
                socket = self.name,
                "connection refused: --max-connections reached"
            );
            return None;
        };
        metrics::connection_admitted(self.mode);
        Some(Conn {
            stream,
            _permit: permit,
            first_byte: Some(Box::pin(tokio::time::sleep(self.header_read_timeout))),
        })
    }

    fn admit(&self, stream: UnixStream) -> Option<Conn> {
        if !self.allow_uids.is_empty() {
            match stream.peer_cred() {
                Ok(c) if self.allow_uids.contains(&c.uid()) => {}
                Ok(c) => {
                    metrics::connection_refused(self.mode, "peer_uid");
                    tracing::warn!(
                        socket = self.name,
                        uid = c.uid(),
                        pid = c.pid(),
                        "connection refused: peer uid not in --allow-uid"
                    );
                    return None;
                }
                Err(e) => {
                    metrics::connection_refused(self.mode, "peer_uid");
                    tracing::warn!(socket = self.name, error = %e, "connection refused: no peer credentials");
                    return None;
                }
            }
        }
        self.slot(stream)
    }
}

/// Longest wait for the slot of an evicted idle public connection (its task drops the
/// connection as soon as it runs; this bounds a runtime too busy to run it).
pub(crate) const EVICT_WAIT: Duration = Duration::from_millis(500);

/// How long a public connection refused at the cap is kept half-closed, its input read and
/// dropped, so that its client reads the 503 rather than a reset.
const LINGER: Duration = Duration::from_secs(1);

/// Answers a public connection over the cap with 503 (JSON-RPC `-32000`, `retry-after: 1`,
/// `connection: close`), as the gateway's listener answers when every connection is busy.
async fn refuse_busy(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Server busy: too many open connections"}}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let linger = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
}

/// An admitted connection: holds its slot until dropped; a read fails with `TimedOut` if no
/// byte arrived within the first-byte timeout.
#[derive(Debug)]
pub(crate) struct Conn<S = UnixStream> {
    /// The socket (the gRPC adapter reads its peer credentials from it).
    pub(crate) stream: S,
    _permit: OwnedSemaphorePermit,
    /// Armed until the first byte is read.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.first_byte = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.first_byte.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the first-byte timeout",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
