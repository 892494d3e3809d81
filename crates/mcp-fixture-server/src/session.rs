//! Request-scoped notifications on top of rmcp's in-memory session manager.
//!
//! rmcp's `LocalSessionManager` delivers a server notification on the SSE stream of the
//! POST that caused it only for progress (matched by progress token) and cancellation;
//! everything else, `notifications/message` included, goes to the standalone GET stream
//! (and is buffered until the client opens one). The Python and TypeScript SDKs send a
//! log message emitted while handling a request on that request's stream, and the runtime
//! relays such a stream as "progress, logging, then the result". To behave the same way,
//! [`RequestScopedSessionManager`] wraps the local manager:
//!
//! - [`FixtureServer`](crate::FixtureServer) tags a notification with
//!   [`RelatedRequest`] (a non-serialised extension);
//! - [`RoutingTransport`], between the MCP service and the session worker, diverts a tagged
//!   notification into a side channel registered for that request by
//!   [`SessionManager::create_stream`], and closes that channel when the request's response
//!   passes through;
//! - [`RequestStream`] merges the side channel into the POST's SSE stream, always yielding
//!   side-channel messages first, so a notification can never overtake the response.
//!
//! It also drops the response of a request the client cancelled with
//! `notifications/cancelled` (MCP: the receiver "SHOULD NOT send a response"), which rmcp
//! would otherwise deliver on the GET stream once the request's own stream is closed.

use std::{
    collections::{HashMap, HashSet},
    future::{Future, ready},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use futures::{FutureExt, Stream};
use rmcp::{
    RoleServer,
    model::{
        ClientJsonRpcMessage, ClientNotification, GetExtensions, RequestId, ServerJsonRpcMessage,
    },
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::{
        Transport,
        common::server_side_http::ServerSseMessage,
        streamable_http_server::{
            SessionId, SessionManager,
            session::local::{LocalSessionManager, LocalSessionManagerError},
        },
    },
};
use tokio::sync::mpsc;

use crate::server::RelatedRequest;

/// One request of one session.
type RouteKey = (SessionId, RequestId);

/// Bookkeeping shared by the manager (which sees POSTs) and the transports (which see
/// what the service sends).
#[derive(Debug, Default)]
struct Routes {
    /// Side channels of requests whose response has not been sent yet.
    related: HashMap<RouteKey, mpsc::UnboundedSender<ServerSseMessage>>,
    /// Running requests the client cancelled; their late response is dropped.
    cancelled: HashSet<RouteKey>,
}

/// Locks the routes. The lock is never held across an await, and a panic while holding
/// it leaves the maps consistent, so a poisoned lock is simply reused.
fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// rmcp's `LocalSessionManager` plus request-scoped notifications and silent cancellation.
#[derive(Debug)]
pub(crate) struct RequestScopedSessionManager {
    inner: LocalSessionManager,
    routes: Arc<Mutex<Routes>>,
}

impl RequestScopedSessionManager {
    /// Wraps `inner`.
    pub(crate) fn new(inner: LocalSessionManager) -> Self {
        Self {
            inner,
            routes: Arc::default(),
        }
    }
}

impl SessionManager for RequestScopedSessionManager {
    type Error = LocalSessionManagerError;
    type Transport = RoutingTransport<<LocalSessionManager as SessionManager>::Transport>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (session_id, inner) = self.inner.create_session().await?;
        let transport = RoutingTransport {
            inner,
            session_id: session_id.clone(),
            routes: self.routes.clone(),
        };
        Ok((session_id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        {
            let mut routes = lock(&self.routes);
            routes.related.retain(|(session, _), _| session != id);
            routes.cancelled.retain(|(session, _)| session != id);
        }
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // Register before the request reaches the service, so that nothing it sends can
        // miss the side channel.
        let (sender, related) = mpsc::unbounded_channel();
        let key = match &message {
            ClientJsonRpcMessage::Request(request) => {
                let key = (id.clone(), request.id.clone());
                lock(&self.routes).related.insert(key.clone(), sender);
                Some(key)
            }
            _ => None,
        };
        match self.inner.create_stream(id, message).await {
            Ok(inner) => Ok(RequestStream {
                related,
                inner: Box::pin(inner),
                stashed: None,
                inner_done: false,
            }),
            Err(error) => {
                if let Some(key) = key {
                    lock(&self.routes).related.remove(&key);
                }
                Err(error)
            }
        }
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        if let ClientJsonRpcMessage::Notification(notification) = &message
            && let ClientNotification::CancelledNotification(cancelled) = &notification.notification
            && let Some(request_id) = &cancelled.params.request_id
        {
            let key = (id.clone(), request_id.clone());
            let mut routes = lock(&self.routes);
            // Only a request still running can be cancelled; this keeps the set bounded.
            if routes.related.contains_key(&key) {
                routes.cancelled.insert(key);
            }
        }
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }
}

/// The transport of one session: rmcp's session worker transport, with request-scoped
/// notifications diverted to their request's side channel.
#[derive(Debug)]
pub(crate) struct RoutingTransport<T> {
    inner: T,
    session_id: SessionId,
    routes: Arc<Mutex<Routes>>,
}

impl<T> RoutingTransport<T> {
    /// Delivers `message` itself when it belongs on a side channel or must be dropped;
    /// otherwise hands it back for the inner transport.
    fn route(&self, message: ServerJsonRpcMessage) -> Option<ServerJsonRpcMessage> {
        match &message {
            ServerJsonRpcMessage::Notification(notification) => {
                let Some(RelatedRequest(request_id)) = notification
                    .notification
                    .extensions()
                    .get::<RelatedRequest>()
                else {
                    return Some(message);
                };
                let key = (self.session_id.clone(), request_id.clone());
                let routes = lock(&self.routes);
                match routes.related.get(&key) {
                    Some(sender) => {
                        // A closed receiver means the client went away: drop it too.
                        let _ = sender.send(ServerSseMessage::from_message(message));
                        None
                    }
                    None => Some(message),
                }
            }
            ServerJsonRpcMessage::Response(response) => {
                let id = response.id.clone();
                self.finish(&id, message)
            }
            ServerJsonRpcMessage::Error(error) => match error.id.clone() {
                Some(id) => self.finish(&id, message),
                None => Some(message),
            },
            ServerJsonRpcMessage::Request(_) => Some(message),
        }
    }

    /// The response of `request_id` is going out: close its side channel (the messages
    /// already in it stay readable), and drop the response if the request was cancelled.
    fn finish(
        &self,
        request_id: &RequestId,
        message: ServerJsonRpcMessage,
    ) -> Option<ServerJsonRpcMessage> {
        let key = (self.session_id.clone(), request_id.clone());
        let mut routes = lock(&self.routes);
        routes.related.remove(&key);
        if routes.cancelled.remove(&key) {
            tracing::debug!(%request_id, "dropping the response of a cancelled request");
            None
        } else {
            Some(message)
        }
    }
}

impl<T> Transport<RoleServer> for RoutingTransport<T>
where
    T: Transport<RoleServer>,
{
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        match self.route(item) {
            Some(item) => self.inner.send(item).left_future(),
            None => ready(Ok(())).right_future(),
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        self.inner.receive()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// The SSE stream of one POSTed request: rmcp's stream with the request's side channel
/// merged in front of it.
pub(crate) struct RequestStream<S> {
    /// Notifications diverted by [`RoutingTransport`]; closed once the response is sent.
    related: mpsc::UnboundedReceiver<ServerSseMessage>,
    /// rmcp's request stream (priming event, progress, the response).
    inner: Pin<Box<S>>,
    /// A message from `inner` held back while side-channel messages sent before it drain.
    stashed: Option<ServerSseMessage>,
    /// `inner` has ended; only already-queued side-channel messages remain.
    inner_done: bool,
}

impl<S> Stream for RequestStream<S>
where
    S: Stream<Item = ServerSseMessage>,
{
    type Item = ServerSseMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Ok(message) = this.related.try_recv() {
            return Poll::Ready(Some(message));
        }
        if let Some(message) = this.stashed.take() {
            return Poll::Ready(Some(message));
        }
        if this.inner_done {
            return Poll::Ready(None);
        }
        // Polled (not just tried) so that a new side-channel message wakes this task.
        if let Poll::Ready(Some(message)) = this.related.poll_recv(cx) {
            return Poll::Ready(Some(message));
        }
        match this.inner.as_mut().poll_next(cx) {
            // Anything the service sent before this message is already in the side
            // channel (it is queued synchronously, before the service goes on), so
            // checking it once more keeps the service's order.
            Poll::Ready(Some(message)) => match this.related.try_recv() {
                Ok(related) => {
                    this.stashed = Some(message);
                    Poll::Ready(Some(related))
                }
                Err(_) => Poll::Ready(Some(message)),
            },
            Poll::Ready(None) => {
                this.inner_done = true;
                Poll::Ready(this.related.try_recv().ok())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
