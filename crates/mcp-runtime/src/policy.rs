//! The Core SPI client: the runtime, serving the public endpoint (edge mode), asks the Python
//! core who a caller is (ResolveCaller), runs the core's hooks (InvokeHook) and follows its
//! policy changes (WatchPolicy), over gRPC or HTTP/JSON on the core's Unix socket
//! (`proto/mcp/core/v1/core.proto`, `docs/core-spi.md`).
//!
//! [`Policy`] is the one client over both transports ([`CoreTransport`]). It caches allowed
//! callers and, for a short TTL, refused credentials ([`cache`]), shares one ResolveCaller call
//! among concurrent requests of one credential and caps the calls in progress per client
//! address and in all ([`flood`]: a flood of bad credentials cannot starve other callers), keeps the hooks the core registered (it implements the core crate's
//! [`Hooks`]) and runs the watch task ([`Policy::watch`]) that (re)connects with back-off and
//! applies snapshots and revocations at once.
//!
//! Fail closed: a call to the core that fails to connect, errs or takes longer than the request
//! deadline is [`CoreUnavailable`]; the public listener answers it with 503 and a JSON-RPC
//! error. Until the first snapshot arrives the hooks are unknown and every request is refused
//! the same way; while the watch stream is down nothing is cached (each request asks the core),
//! and the last snapshot's hooks stay in force.

pub mod cache;
pub mod flood;
#[cfg(feature = "grpc-uds")]
mod grpc;
mod http;
mod records;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::Instrument as _;

use futures::StreamExt;
use futures::stream::BoxStream;
use mcp_runtime_core::metrics::Mode;
use mcp_runtime_core::{
    AuthContext, HookCall, HookDecision, HookError, HookFuture, HookPoint, Hooks,
};

use cache::{CacheLimits, CallerCache, Credential, DenialCache, DenialLimits, Revocation};
use flood::{Busy, Flights, ResolveLimits, ResolveSlots};

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
    /// The denial cache's bounds.
    pub denials: DenialLimits,
    /// The caps on ResolveCaller calls in progress.
    pub resolves: ResolveLimits,
    /// This runtime's name in the core's logs (WatchPolicy `watcher`).
    pub watcher: String,
}

/// The core could not answer: unreachable, timed out, or an answer that breaks the Core SPI.
/// The message is for the log; the client sees 503.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy core unavailable: {0}")]
pub struct CoreUnavailable(pub String);

/// Why a caller was not resolved: the public listener answers either with 503 and a JSON-RPC
/// error (with `Retry-After: 1`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The core could not answer.
    #[error(transparent)]
    Unavailable(#[from] CoreUnavailable),
    /// Too many resolutions in progress (of this client, or in all): the core was not asked.
    #[error("resolution refused: {0}")]
    Busy(#[from] Busy),
}

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
    /// The `mode` label of this transport's calls.
    fn mode(&self) -> Mode {
        match self {
            #[cfg(feature = "grpc-uds")]
            Self::Grpc(_) => Mode::Grpc,
            Self::Http(_) => Mode::Http,
        }
    }

    /// `q.traceparent` goes in the gRPC metadata or HTTP header and in the message.
    async fn resolve(&self, q: &CallerQuery) -> Result<ResolveAnswer, CoreUnavailable> {
        match self {
            #[cfg(feature = "grpc-uds")]
            Self::Grpc(c) => c.resolve(q).await,
            Self::Http(c) => c.resolve(q).await,
        }
    }

    /// `traceparent` (empty: none) goes in the gRPC metadata or HTTP header.
    async fn invoke_hook(
        &self,
        call: &HookCall<'_>,
        traceparent: &str,
    ) -> Result<HookDecision, CoreUnavailable> {
        match self {
            #[cfg(feature = "grpc-uds")]
            Self::Grpc(c) => c.invoke_hook(call, traceparent).await,
            Self::Http(c) => c.invoke_hook(call, traceparent).await,
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
        traceparent: &str,
    ) -> Result<(), CoreUnavailable> {
        match self {
            #[cfg(feature = "grpc-uds")]
            Self::Grpc(c) => c.record_calls(records, dropped, traceparent).await,
            Self::Http(c) => c.record_calls(records, dropped, traceparent).await,
        }
    }
}

/// One Core SPI call being observed: its CLIENT span (tracing on; the child of the current
/// span) and, when it ends, its metrics (`mcp_core_requests_total`,
/// `mcp_core_request_duration_seconds`, when metrics are on). A call dropped before
/// [`CoreCall::finish`] (its deadline passed, or the runtime stopped) counts as an error.
struct CoreCall {
    mode: Mode,
    operation: &'static str,
    started: Instant,
    finished: bool,
    span: tracing::Span,
}

impl CoreCall {
    fn start(mode: Mode, operation: &'static str, traced: bool) -> Self {
        let system = mode.as_str();
        Self {
            mode,
            operation,
            started: Instant::now(),
            finished: false,
            span: if traced {
                crate::otel::core_span(operation, system)
            } else {
                tracing::Span::none()
            },
        }
    }

    /// The `traceparent` the call sends: its span's context when tracing is on, else
    /// `received` (the public request's, passed on unchanged; empty: none).
    fn traceparent(&self, received: &str) -> String {
        mcp_runtime_core::trace::traceparent_of(&self.span).unwrap_or_else(|| received.to_owned())
    }

    /// Records the call's end; an `Err` marks its span failed.
    fn finish<T>(mut self, result: &Result<T, CoreUnavailable>) {
        self.finished = true;
        if result.is_err() {
            crate::otel::failed(&self.span, "unavailable");
        }
        self.record(result.is_ok());
    }

    fn record(&self, ok: bool) {
        if let Some(m) = mcp_runtime_core::metrics::get() {
            m.record_core(
                self.mode,
                self.operation,
                ok,
                self.started.elapsed().as_secs_f64(),
            );
        }
    }
}

impl Drop for CoreCall {
    fn drop(&mut self) {
        if !self.finished {
            crate::otel::failed(&self.span, "timeout");
            self.record(false);
        }
    }
}

/// The Core SPI client: caller resolution with its cache, the registered hooks, the watch.
#[derive(Debug)]
pub struct Policy {
    client: Client,
    config: PolicyConfig,
    cache: Arc<CallerCache>,
    /// Credentials the core refused, for a short TTL.
    denials: Arc<DenialCache>,
    /// ResolveCaller calls in progress (single-flight).
    flights: Arc<Flights>,
    /// The caps on ResolveCaller calls in progress.
    slots: Arc<ResolveSlots>,
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
            cache: Arc::new(CallerCache::new(config.cache)),
            denials: Arc::new(DenialCache::new(config.denials)),
            flights: Arc::new(Flights::default()),
            slots: Arc::new(ResolveSlots::new(config.resolves)),
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

    /// The denial cache (for observation).
    #[must_use]
    pub fn denials(&self) -> &DenialCache {
        &self.denials
    }

    /// The caps on ResolveCaller calls in progress (for observation).
    #[must_use]
    pub fn resolve_slots(&self) -> &ResolveSlots {
        &self.slots
    }

    /// Whether the hooks are known (a snapshot arrived).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The caller of one public request: from the caller cache, from the denial cache, or
    /// asked of the core. Concurrent requests with the same credential for the same virtual
    /// server share one ResolveCaller call; a new call needs a slot under the per-client and
    /// total caps ([`flood`]). An allowed answer is cached when cacheable, a denial for the
    /// denial cache's TTL.
    ///
    /// # Errors
    ///
    /// [`ResolveError::Unavailable`] when the core cannot answer within the request deadline,
    /// or no snapshot has arrived yet (the hooks are unknown); [`ResolveError::Busy`] when a
    /// new call would pass a cap.
    pub async fn resolve(&self, query: &CallerQuery) -> Result<Resolution, ResolveError> {
        if !self.is_ready() {
            return Err(CoreUnavailable("no policy snapshot yet".to_owned()).into());
        }
        let given = !query.authorization.is_empty();
        let key = cache::key_of(&query.authorization);
        if given && let Some(caller) = self.cache.get(&key, Instant::now()) {
            if let Some(m) = mcp_runtime_core::metrics::get() {
                m.policy_cache_hits.inc();
            }
            return Ok(Resolution::Allowed(caller));
        }
        if let Some(denial) = self.denials.get(
            &cache::denial_key(&query.authorization, &query.server_id),
            Instant::now(),
        ) {
            return Ok(Resolution::Denied((*denial).clone()));
        }
        if let Some(m) = mcp_runtime_core::metrics::get() {
            m.policy_cache_misses.inc();
        }
        let mut answer = self.ask(key, query).await?;
        // A revocation that reached this runtime while the answer was on its way (the watch
        // stream and the answer are separate streams) may name this caller: an allowed answer
        // older than the watched generation is asked again, never served (once; a second stale
        // answer is refused as the core being unavailable).
        if matches!(answer.resolution, Resolution::Allowed(_))
            && answer.generation < self.cache.generation()
        {
            answer = self.ask(key, query).await?;
            if matches!(answer.resolution, Resolution::Allowed(_))
                && answer.generation < self.cache.generation()
            {
                return Err(CoreUnavailable(
                    "ResolveCaller answered from an older policy generation twice".to_owned(),
                )
                .into());
            }
        }
        Ok(answer.resolution)
    }

    /// One ResolveCaller answer for `query`: the call in progress for the same credential and
    /// virtual server, or a new one if a slot is free; bounded by the request deadline. The
    /// call caches its answer (allowed: the caller cache, refused: the denial cache) before it
    /// leaves the table of calls in progress, so a request arriving meanwhile finds one or the
    /// other and never makes a second call.
    async fn ask(
        &self,
        key: cache::CacheKey,
        query: &CallerQuery,
    ) -> Result<ResolveAnswer, ResolveError> {
        let client_ip = query
            .client_address
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| query.client_address.parse::<std::net::IpAddr>())
            .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        let flight = self
            .flights
            .join_or_start((key, query.server_id.clone()), || {
                let slot = self.slots.try_acquire(client_ip)?;
                let client = self.client.clone();
                // Started here, in the request's span (the call itself runs in a task of
                // its own, shared by the requests that join it).
                let call = CoreCall::start(client.mode(), "ResolveCaller", true);
                let mut query = query.clone();
                query.traceparent = call.traceparent(&query.traceparent);
                let span = call.span.clone();
                let deadline = self.config.request_timeout;
                let (cache, denials) = (Arc::clone(&self.cache), Arc::clone(&self.denials));
                Ok((
                    slot,
                    async move {
                        let answer = tokio::time::timeout(deadline, client.resolve(&query))
                            .await
                            .unwrap_or_else(|_| {
                                Err(CoreUnavailable("ResolveCaller timed out".to_owned()))
                            });
                        call.finish(&answer);
                        let answer = answer?;
                        remember(&cache, &denials, &query, &answer);
                        Ok(answer)
                    }
                    .instrument(span),
                ))
            })?;
        Ok(flight.await?)
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
                self.denials.clear(Some(generation), true);
                self.ready.store(true, Ordering::Release);
            }
            WatchEvent::Revoked {
                generation,
                revocation,
            } => {
                let dropped = self.cache.revoke(&revocation, generation);
                self.denials.clear(Some(generation), false);
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
                self.denials.clear(Some(generation), false);
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
            // No request is its parent: a trace of its own (tracing on).
            let call = CoreCall::start(this.client.mode(), "RecordCalls", true);
            let traceparent = call.traceparent("");
            let span = call.span.clone();
            async move {
                let sent = tokio::time::timeout(
                    this.config.request_timeout,
                    this.client.record_calls(batch, dropped, &traceparent),
                )
                .await
                .unwrap_or_else(|_| Err(CoreUnavailable("RecordCalls timed out".to_owned())));
                call.finish(&sent);
                sent
            }
            .instrument(span)
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
        self.denials.clear(None, false);
    }

    async fn watch_loop(&self) {
        const FIRST: Duration = Duration::from_millis(50);
        const MOST: Duration = Duration::from_secs(1);
        let mut backoff = FIRST;
        loop {
            // The watch stream is counted (`mcp_core_requests_total`) when it ends: `ok` when
            // the core ended it, `error` when it could not be opened or broke. No span: it
            // lasts as long as the runtime.
            let call = CoreCall::start(self.client.mode(), "WatchPolicy", false);
            let opened = tokio::time::timeout(
                self.config.connect_timeout + self.config.request_timeout,
                self.client.watch(&self.config.watcher),
            )
            .await
            .unwrap_or_else(|_| Err(CoreUnavailable("WatchPolicy timed out".to_owned())));
            match opened {
                Ok(mut stream) => {
                    let mut ended = Ok(());
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(event) => {
                                backoff = FIRST;
                                self.apply(event);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "policy watch broke");
                                ended = Err(e);
                                break;
                            }
                        }
                    }
                    call.finish(&ended);
                    tracing::warn!("policy watch ended; caching disabled until it is back");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "policy watch cannot connect");
                    call.finish(&Err::<(), _>(e));
                }
            }
            self.cache.watch_ended();
            self.denials.clear(None, false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MOST);
        }
    }
}

/// Caches one ResolveCaller answer: an allowed caller of a given credential in the caller cache
/// (when cacheable: `CallerCache::insert`), a denial in the denial cache; neither when made in a
/// policy generation older than the one watched.
fn remember(
    cache: &CallerCache,
    denials: &DenialCache,
    query: &CallerQuery,
    answer: &ResolveAnswer,
) {
    match &answer.resolution {
        Resolution::Allowed(caller) if !query.authorization.is_empty() => {
            cache.insert(
                &Credential::of(&query.authorization),
                Arc::clone(caller),
                answer.generation,
                answer.cache_max_age_ms,
                Instant::now(),
            );
        }
        Resolution::Allowed(_) => {}
        Resolution::Denied(denial) => {
            denials.insert(
                cache::denial_key(&query.authorization, &query.server_id),
                Arc::new(denial.clone()),
                answer.generation,
                Instant::now(),
            );
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
        // Started here, in the request's span (the core calls hooks inside it).
        let observed = CoreCall::start(self.client.mode(), "InvokeHook", true);
        let traceparent = observed.traceparent(&call.caller.traceparent);
        let span = observed.span.clone();
        Box::pin(
            async move {
                let decided = tokio::time::timeout(
                    self.config.request_timeout,
                    self.client.invoke_hook(&call, &traceparent),
                )
                .await
                .unwrap_or_else(|_| Err(CoreUnavailable("InvokeHook timed out".to_owned())));
                observed.finish(&decided);
                decided.map_err(|e| HookError(e.0))
            }
            .instrument(span),
        )
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
