//! The Core SPI client: the runtime, serving the public endpoint (edge mode), asks the Python
//! core who a caller is (ResolveCaller), runs the core's hooks (InvokeHook) and follows its
//! policy changes (WatchPolicy), over gRPC or HTTP/JSON on the core's Unix socket
//! (`proto/mcp/core/v1/core.proto`, `docs/core-spi.md`).
//!
//! [`Policy`] is the one client over both transports ([`CoreTransport`]). It caches allowed
//! callers ([`cache`]), keeps the hooks the core registered (it implements the core crate's
//! [`Hooks`]) and runs the watch task ([`Policy::watch`]) that (re)connects with back-off and
//! applies snapshots and revocations at once.
//!
//! Fail closed: a call to the core that fails to connect, errs or takes longer than the request
//! deadline is [`CoreUnavailable`]; the public listener answers it with 503 and a JSON-RPC
//! error. Until the first snapshot arrives the hooks are unknown and every request is refused
//! the same way; while the watch stream is down nothing is cached (each request asks the core),
//! and the last snapshot's hooks stay in force.

pub mod cache;
#[cfg(feature = "grpc-uds")]
mod grpc;
mod http;
mod records;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use mcp_runtime_core::{
    AuthContext, HookCall, HookDecision, HookError, HookFuture, HookPoint, Hooks,
};

use cache::{CacheLimits, CallerCache, Credential, Revocation};

/// Which transport the core serves the Core SPI on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreTransport {
    /// gRPC (tonic, HTTP/2) on the Unix socket; needs the `grpc-uds` feature.
    Grpc,
    /// HTTP/1.1 with JSON bodies on the Unix socket (the routes of `docs/core-spi.md`).
    Http,
}

/// How to reach the core and what to cache.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The core's Unix socket.
    pub socket: PathBuf,
    /// The transport it serves there.
    pub transport: CoreTransport,
    /// Deadline of connecting to the core.
    pub connect_timeout: Duration,
    /// Deadline of one ResolveCaller or InvokeHook, connecting included.
    pub request_timeout: Duration,
    /// The caller cache's bounds.
    pub cache: CacheLimits,
    /// This runtime's name in the core's logs (WatchPolicy `watcher`).
    pub watcher: String,
}

/// The core could not answer: unreachable, timed out, or an answer that breaks the Core SPI.
/// The message is for the log; the client sees 503.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy core unavailable: {0}")]
pub struct CoreUnavailable(pub String);

/// What one public request says about its caller (ResolveCallerRequest).
#[derive(Debug, Clone, Default)]
pub struct CallerQuery {
    /// The `Authorization` header as sent; empty when absent.
    pub authorization: String,
    /// The client's `ip:port`.
    pub client_address: String,
    /// The virtual server id; empty for `/mcp`.
    pub server_id: String,
    /// The runtime-assigned request id.
    pub request_id: String,
    /// The W3C `traceparent`; empty when absent.
    pub traceparent: String,
}

/// The core's refusal of a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 401 or 403.
    pub http_status: u16,
    /// The `WWW-Authenticate` value of a 401; empty otherwise.
    pub www_authenticate: String,
    /// The reason (the JSON-RPC error message); never the token.
    pub reason: String,
}

/// Whether a caller is allowed.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Allowed, as this caller.
    Allowed(Arc<AuthContext>),
    /// Refused.
    Denied(Denial),
}

/// One ResolveCaller answer.
#[derive(Debug, Clone)]
pub(crate) struct ResolveAnswer {
    pub(crate) resolution: Resolution,
    pub(crate) cache_max_age_ms: u32,
    pub(crate) generation: u64,
}

/// One WatchPolicy event.
#[derive(Debug, Clone)]
pub(crate) enum WatchEvent {
    /// The registered hooks, replacing what was known, at `generation`.
    Snapshot {
        generation: u64,
        hooks: Vec<(HookPoint, String)>,
    },
    /// Credentials that stopped holding.
    Revoked {
        generation: u64,
        revocation: Revocation,
    },
    /// An event this runtime does not know (a later minor of the Core SPI): the generation
    /// still counts.
    Other { generation: u64 },
}

/// The stream of WatchPolicy events.
pub(crate) type WatchStream = BoxStream<'static, Result<WatchEvent, CoreUnavailable>>;

/// One transport's client.
#[derive(Debug, Clone)]
enum Client {
    #[cfg(feature = "grpc-uds")]
    Grpc(Box<grpc::GrpcCore>),
    Http(http::HttpCore),
}

impl Client {
    async fn resolve(&self, q: &CallerQuery) -> Result<ResolveAnswer, CoreUnavailable> {
        match self {
            #[cfg(feature = "grpc-uds")]
            Self::Grpc(c) => c.resolve(q).await,
            Self::Http(c) => c.resolve(q).await,
        }
    }

    async fn invoke_hook(&self, call: &HookCall<'_>) -> Result<HookDecision, CoreUnavailable> {
        match self {
            #[cfg(feature = "grpc-uds")]
            Self::Grpc(c) => c.invoke_hook(call).await,
            Self::Http(c) => c.invoke_hook(call).await,
        }
    }

    async fn watch(&self, watcher: &str) -> Result<WatchStream, CoreUnavailable> {
        match self {
            #[cfg(feature = "grpc-uds")]
            Self::Grpc(c) => c.watch(watcher).await,
            Self::Http(c) => c.watch(watcher).await,
        }
    }

    async fn record_calls(
        &self,
        records: Vec<records::Record>,
        dropped: u64,
    ) -> Result<(), CoreUnavailable> {
        match self {
            #[cfg(feature = "grpc-uds")]
            Self::Grpc(c) => c.record_calls(records, dropped).await,
            Self::Http(c) => c.record_calls(records, dropped).await,
        }
    }
}

/// The Core SPI client: caller resolution with its cache, the registered hooks, the watch.
#[derive(Debug)]
pub struct Policy {
    client: Client,
    config: PolicyConfig,
    cache: CallerCache,
    /// The hooks of the latest snapshot.
    hooks: RwLock<Arc<Registrations>>,
    /// A snapshot arrived at least once: the hooks are known.
    ready: AtomicBool,
    /// Per-call records waiting for RecordCalls.
    recorder: records::Recorder,
}

/// Why [`Policy::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `--core-transport grpc` in a build without the `grpc-uds` feature.
    #[error(
        "--core-transport grpc needs the `grpc-uds` feature, which this binary was built without; rebuild with `cargo build -p mcp-runtime --features grpc-uds` or use --core-transport http"
    )]
    GrpcNotBuilt,
    /// The client could not be built.
    #[error("cannot build the Core SPI client: {0}")]
    Client(String),
}

impl Policy {
    /// A client of the core at `config.socket`. Connects lazily: nothing is dialled before the
    /// first request or [`Policy::watch`].
    ///
    /// # Errors
    ///
    /// [`PolicyError`] when the transport is not built in or its client cannot be built.
    pub fn new(config: PolicyConfig) -> Result<Self, PolicyError> {
        let client = match config.transport {
            #[cfg(feature = "grpc-uds")]
            CoreTransport::Grpc => Client::Grpc(Box::new(grpc::GrpcCore::new(&config))),
            #[cfg(not(feature = "grpc-uds"))]
            CoreTransport::Grpc => return Err(PolicyError::GrpcNotBuilt),
            CoreTransport::Http => Client::Http(
                http::HttpCore::new(&config).map_err(|e| PolicyError::Client(e.to_string()))?,
            ),
        };
        Ok(Self {
            client,
            cache: CallerCache::new(config.cache),
            config,
            hooks: RwLock::new(Arc::new(Registrations::default())),
            ready: AtomicBool::new(false),
            recorder: records::Recorder::new(),
        })
    }

    /// The caller cache (for observation).
    #[must_use]
    pub fn cache(&self) -> &CallerCache {
        &self.cache
    }

    /// Whether the hooks are known (a snapshot arrived).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The caller of one public request: from the cache, or asked of the core (and cached
    /// when allowed and cacheable). A denial is never cached.
    ///
    /// # Errors
    ///
    /// [`CoreUnavailable`] when the core cannot answer within the request deadline, or no
    /// snapshot has arrived yet (the hooks are unknown).
    pub async fn resolve(&self, query: &CallerQuery) -> Result<Resolution, CoreUnavailable> {
        if !self.is_ready() {
            return Err(CoreUnavailable("no policy snapshot yet".to_owned()));
        }
        let given = !query.authorization.is_empty();
        if given
            && let Some(caller) = self
                .cache
                .get(&cache::key_of(&query.authorization), Instant::now())
        {
            if let Some(m) = mcp_runtime_core::metrics::get() {
                m.policy_cache_hits.inc();
            }
            return Ok(Resolution::Allowed(caller));
        }
        if let Some(m) = mcp_runtime_core::metrics::get() {
            m.policy_cache_misses.inc();
        }
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let ask = || async {
            tokio::time::timeout_at(deadline, self.client.resolve(query))
                .await
                .map_err(|_| CoreUnavailable("ResolveCaller timed out".to_owned()))?
        };
        let mut answer = ask().await?;
        // A revocation that reached this runtime while the answer was on its way (the watch
        // stream and the answer are separate streams) may name this caller: an allowed answer
        // older than the watched generation is asked again, never served (once; a second stale
        // answer is refused as the core being unavailable).
        if matches!(answer.resolution, Resolution::Allowed(_))
            && answer.generation < self.cache.generation()
        {
            answer = ask().await?;
            if matches!(answer.resolution, Resolution::Allowed(_))
                && answer.generation < self.cache.generation()
            {
                return Err(CoreUnavailable(
                    "ResolveCaller answered from an older policy generation twice".to_owned(),
                ));
            }
        }
        if given && let Resolution::Allowed(caller) = &answer.resolution {
            self.cache.insert(
                &Credential::of(&query.authorization),
                Arc::clone(caller),
                answer.generation,
                answer.cache_max_age_ms,
                Instant::now(),
            );
        }
        Ok(answer.resolution)
    }

    /// Applies one watch event at once: a snapshot replaces the hooks and restarts the cache,
    /// a revocation drops what it names.
    fn apply(&self, event: WatchEvent) {
        match event {
            WatchEvent::Snapshot { generation, hooks } => {
                tracing::info!(generation, hooks = hooks.len(), "policy snapshot");
                *self
                    .hooks
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Arc::new(Registrations::new(hooks));
                self.cache.watch_started(generation);
                self.ready.store(true, Ordering::Release);
            }
            WatchEvent::Revoked {
                generation,
                revocation,
            } => {
                let dropped = self.cache.revoke(&revocation, generation);
                revoked(match revocation {
                    Revocation::TokenSha256(_) => "token",
                    Revocation::Subject(_) => "subject",
                    Revocation::All => "all",
                });
                tracing::info!(generation, ?revocation, dropped, "policy revocation");
            }
            WatchEvent::Other { generation } => {
                // Unknown change: drop everything rather than keep what it may invalidate.
                self.cache.revoke(&Revocation::All, generation);
                revoked("all");
            }
        }
    }

    /// Call records dropped (channel full, or the core did not take them) and not yet reported
    /// to the core.
    #[must_use]
    pub fn records_dropped(&self) -> u64 {
        self.recorder.dropped()
    }

    /// Sends the per-call records to the core in batches (RecordCalls) until `shutdown`
    /// completes; a batch the core does not take within the request deadline is dropped and
    /// counted.
    pub async fn send_records(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let send = |batch, dropped| {
            let this = Arc::clone(&self);
            async move {
                tokio::time::timeout(
                    this.config.request_timeout,
                    this.client.record_calls(batch, dropped),
                )
                .await
                .map_err(|_| CoreUnavailable("RecordCalls timed out".to_owned()))?
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = self.recorder.run(send) => {}
        }
    }

    /// Runs the WatchPolicy stream until `shutdown` completes: connects, applies every event
    /// at once, and when the stream breaks disables caching and reconnects with back-off
    /// (50 ms doubling to 1 s).
    pub async fn watch(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            () = self.watch_loop() => {}
        }
        self.cache.watch_ended();
    }

    async fn watch_loop(&self) {
        const FIRST: Duration = Duration::from_millis(50);
        const MOST: Duration = Duration::from_secs(1);
        let mut backoff = FIRST;
        loop {
            let opened = tokio::time::timeout(
                self.config.connect_timeout + self.config.request_timeout,
                self.client.watch(&self.config.watcher),
            )
            .await
            .unwrap_or_else(|_| Err(CoreUnavailable("WatchPolicy timed out".to_owned())));
            match opened {
                Ok(mut stream) => {
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(event) => {
                                backoff = FIRST;
                                self.apply(event);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "policy watch broke");
                                break;
                            }
                        }
                    }
                    tracing::warn!("policy watch ended; caching disabled until it is back");
                }
                Err(e) => tracing::debug!(error = %e, "policy watch cannot connect"),
            }
            self.cache.watch_ended();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MOST);
        }
    }
}

impl Hooks for Policy {
    fn registered(&self, point: HookPoint, name: &str) -> bool {
        self.hooks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .matches(point, name)
    }

    fn record(&self, record: mcp_runtime_core::CallRecord) {
        self.recorder.record(record);
    }

    fn invoke<'a>(&'a self, call: HookCall<'a>) -> HookFuture<'a> {
        Box::pin(async move {
            tokio::time::timeout(self.config.request_timeout, self.client.invoke_hook(&call))
                .await
                .map_err(|_| HookError("InvokeHook timed out".to_owned()))?
                .map_err(|e| HookError(e.0))
        })
    }
}

/// The hook registrations of one snapshot: per point, the names and whether `*` is among them.
#[derive(Debug, Default)]
struct Registrations {
    /// Indexed by [`point_index`].
    names: [HashSet<String>; 3],
    any: [bool; 3],
}

fn point_index(p: HookPoint) -> usize {
    match p {
        HookPoint::PreInvoke => 0,
        HookPoint::PostInvoke => 1,
        HookPoint::PostFetch => 2,
    }
}

impl Registrations {
    fn new(hooks: Vec<(HookPoint, String)>) -> Self {
        let mut r = Self::default();
        for (point, name) in hooks {
            let i = point_index(point);
            if name == "*" {
                r.any[i] = true;
            } else {
                r.names[i].insert(name);
            }
        }
        r
    }

    /// Whether a hook is registered at `point` for `name` (no allocation).
    fn matches(&self, point: HookPoint, name: &str) -> bool {
        let i = point_index(point);
        self.any[i] || self.names[i].contains(name)
    }
}

/// The lower-case wire name of a hook point (HTTP/JSON).
pub(crate) fn point_name(p: HookPoint) -> &'static str {
    match p {
        HookPoint::PreInvoke => "pre_invoke",
        HookPoint::PostInvoke => "post_invoke",
        HookPoint::PostFetch => "post_fetch",
    }
}

/// Counts a revocation applied to the caller cache (`mcp_policy_revocations_total{kind}`),
/// when metrics are on.
fn revoked(kind: &'static str) {
    if let Some(m) = mcp_runtime_core::metrics::get() {
        m.policy_revocations
            .get_or_create(&mcp_runtime_core::metrics::KindLabel { kind })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_match_by_point_and_name_or_star() {
        let r = Registrations::new(vec![
            (HookPoint::PreInvoke, "payload".into()),
            (HookPoint::PostInvoke, "*".into()),
        ]);
        assert!(r.matches(HookPoint::PreInvoke, "payload"));
        assert!(!r.matches(HookPoint::PreInvoke, "echo"));
        assert!(r.matches(HookPoint::PostInvoke, "anything"));
        assert!(!r.matches(HookPoint::PostFetch, "payload"));
        assert!(!Registrations::default().matches(HookPoint::PreInvoke, "payload"));
    }
}
