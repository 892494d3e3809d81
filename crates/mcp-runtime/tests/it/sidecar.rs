//! The runtime served in this process: [`Sidecar`] starts a [`Runtime`] on a catalog, binds
//! its sockets in a temp dir and serves them with the library's [`Server`], as `main.rs`
//! does; [`Sidecar::drain`] is the shutdown a signal starts there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_runtime::{Admission, Server, socket};
use mcp_runtime_core::quota::QuotaConfig;
use mcp_runtime_core::{CatalogConfig, Runtime, RuntimeConfig};

/// The settings tests change; the rest are the binary's defaults.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) upstream_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) session_idle_ttl: Duration,
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_sessions_per_subject: usize,
    pub(crate) quotas: QuotaConfig,
}

impl Default for Options {
    /// The binary's defaults (`mcp-runtime --help`).
    fn default() -> Self {
        Self {
            upstream_timeout: Duration::from_secs(60),
            max_message_bytes: RuntimeConfig::default().max_message_bytes,
            session_idle_ttl: Duration::from_secs(3600),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            max_sessions_per_subject: RuntimeConfig::default().max_sessions_per_subject,
            quotas: QuotaConfig::default(),
        }
    }
}

/// A runtime serving its sockets (the gRPC one only with `grpc-uds`) in a temp dir.
pub(crate) struct Sidecar {
    pub(crate) http: PathBuf,
    pub(crate) grpc: PathBuf,
    server: Option<Server>,
    _files: Vec<socket::SocketFile>,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Serves `catalog` (TOML) with the default settings.
    pub(crate) async fn start(catalog: &str) -> Self {
        Self::with(catalog, Options::default()).await
    }

    /// Serves `catalog` (TOML) with `options`.
    pub(crate) async fn with(catalog: &str, options: Options) -> Self {
        let config = RuntimeConfig {
            max_message_bytes: options.max_message_bytes,
            upstream_timeout: options.upstream_timeout,
            features: mcp_runtime::features(),
            session_idle_ttl: options.session_idle_ttl,
            max_sessions_per_subject: options.max_sessions_per_subject,
            quotas: options.quotas,
            ..RuntimeConfig::default()
        };
        let catalog = CatalogConfig::parse(catalog).expect("catalog");
        let runtime = Runtime::start(&catalog, config).await.expect("runtime");
        let mut server = Server::new(Arc::new(runtime));
        let dir = tempfile::Builder::new()
            .prefix("rt")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let (http, grpc) = (dir.path().join("http.sock"), dir.path().join("grpc.sock"));
        let admission = |name| {
            Admission::new(
                name,
                &[],
                options.max_connections,
                options.header_read_timeout,
            )
        };
        let mut files = Vec::new();
        let bound = socket::bind(&http, 0o600).expect("bind http");
        files.push(bound.guard);
        server.serve_http(bound.listener, admission("http"));
        #[cfg(feature = "grpc-uds")]
        {
            let bound = socket::bind(&grpc, 0o600).expect("bind grpc");
            files.push(bound.guard);
            server.serve_grpc(
                bound.listener,
                admission("grpc"),
                mcp_runtime::GrpcSettings::default(),
            );
        }
        Self {
            http,
            grpc,
            server: Some(server),
            _files: files,
            _dir: dir,
        }
    }

    /// The runtime served.
    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(self.server.as_ref().expect("serving").runtime())
    }

    /// Starts the shutdown a signal starts in the binary, in a task: resolves once every
    /// adapter stopped, or `grace` is over and the calls still running were cancelled.
    pub(crate) fn drain(&mut self, grace: Duration) -> tokio::task::JoinHandle<()> {
        let server = self.server.take().expect("serving");
        tokio::spawn(server.drain(grace))
    }
}
