//! A stdio server's process and its MCP transport, with the length of the lines it writes
//! capped.
//!
//! rmcp's [`AsyncRwTransport`] over the child's stdin and stdout, as rmcp's
//! `TokioChildProcess` builds it, with one difference: stdout is read through [`LineCap`],
//! which fails the read once a line grows past the cap. rmcp's own cap (16 MiB) drops such a
//! line and reads on, so the call waiting for it would wait for its timeout; here the
//! transport ends instead, with [`Child::over_cap`] set, and the supervisor fails the calls
//! with that reason and starts the server again. The cap is the runtime's message limit plus
//! room for the JSON-RPC envelope, as for an HTTP upstream's SSE event: what is accepted over
//! HTTP is accepted over stdio.
//!
//! Stop ([`Child::graceful_shutdown`]) as the MCP specification says for stdio and as rmcp
//! does: stdin closed, then `SIGTERM`, then `SIGKILL`, each after [`STOP_WAIT`]; the process
//! wrapper (a process group, kill on drop) kills the group when a `Child` is dropped unstopped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use process_wrap::tokio::{ChildWrapper, CommandWrap};
use rmcp::RoleClient;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport as _;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

/// How long each step of a stop waits for the server to exit.
pub(crate) const STOP_WAIT: Duration = Duration::from_secs(3);

/// A reader that fails with `InvalidData` once a line (bytes since the last `\n`) is longer
/// than its cap, and sets its flag.
pub(crate) struct LineCap<R> {
    inner: R,
    cap: usize,
    line: usize,
    over: Arc<AtomicBool>,
}

impl<R> LineCap<R> {
    pub(crate) fn new(inner: R, cap: usize, over: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            cap,
            line: 0,
            over,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LineCap<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                for &b in &buf.filled()[before..] {
                    if b == b'\n' {
                        this.line = 0;
                    } else {
                        this.line += 1;
                    }
                }
                if this.line > this.cap {
                    this.over.store(true, Ordering::Relaxed);
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("a line longer than {} bytes", this.cap),
                    )));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// A running stdio server and its transport.
pub(crate) struct Child {
    process: Option<Box<dyn ChildWrapper>>,
    transport: AsyncRwTransport<RoleClient, LineCap<ChildStdout>, ChildStdin>,
    over: Arc<AtomicBool>,
}

impl Child {
    /// Starts `cmd` with stdin, stdout and stderr piped; lines on stdout longer than
    /// `max_line` bytes end the transport. Returns the child and its stderr.
    ///
    /// # Errors
    ///
    /// The I/O error of the spawn.
    pub(crate) fn spawn(
        mut cmd: CommandWrap,
        max_line: usize,
    ) -> std::io::Result<(Self, Option<ChildStderr>)> {
        use std::process::Stdio;
        cmd.command_mut()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = cmd.spawn()?;
        let stdin = process
            .inner_mut()
            .stdin()
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = process
            .inner_mut()
            .stdout()
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let stderr = process.inner_mut().stderr().take();
        let over = Arc::new(AtomicBool::new(false));
        // rmcp's own cap stays above ours, so ours is the one a long line meets.
        let transport =
            AsyncRwTransport::new(LineCap::new(stdout, max_line, Arc::clone(&over)), stdin)
                .with_max_line_length(max_line.saturating_add(1));
        Ok((
            Self {
                process: Some(process),
                transport,
                over,
            },
            stderr,
        ))
    }

    /// The server's process id.
    pub(crate) fn id(&self) -> Option<u32> {
        self.process.as_ref()?.id()
    }

    /// Whether the transport ended because the server wrote a line over the cap.
    pub(crate) fn over_cap(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Sends one message.
    pub(crate) fn send(
        &mut self,
        msg: ClientJsonRpcMessage,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        self.transport.send(msg)
    }

    /// The next message, `None` once stdout ended (the server exited, or wrote a line over the
    /// cap).
    pub(crate) async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        self.transport.receive().await
    }

    /// Stops the server: stdin closed, then `SIGTERM`, then `SIGKILL`, each after
    /// [`STOP_WAIT`]; returns once it exited.
    ///
    /// # Errors
    ///
    /// The I/O error of the last step.
    pub(crate) async fn graceful_shutdown(&mut self) -> std::io::Result<()> {
        let Some(process) = self.process.as_mut() else {
            return Ok(());
        };
        let _ = self.transport.close().await;
        if let Ok(r) = tokio::time::timeout(STOP_WAIT, process.wait()).await {
            self.process = None;
            return r.map(|_| ());
        }
        if process.signal(libc::SIGTERM).is_ok()
            && let Ok(r) = tokio::time::timeout(STOP_WAIT, process.wait()).await
        {
            self.process = None;
            return r.map(|_| ());
        }
        let r = Box::into_pin(process.kill()).await;
        self.process = None;
        r
    }
}
