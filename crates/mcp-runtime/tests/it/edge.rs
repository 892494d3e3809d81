//! The public endpoint of edge mode without its policy core: the checks made before the core
//! is asked (path, method, `Host`, `Origin`) and fail closed (the core's socket has no server:
//! every request is 503 with a JSON-RPC error at once, none served). What needs the real core
//! (callers, hooks, revocations, the core coming back) is in `python/tests/test_edge_stack.py`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use mcp_runtime::host_origin::AllowLists;
use mcp_runtime::policy::cache::CacheLimits;
use mcp_runtime::policy::{CoreTransport, Policy, PolicyConfig};
use mcp_runtime::{Admission, PublicEndpoint, Server, socket};
use mcp_runtime_core::{CatalogConfig, Runtime, RuntimeConfig};
use serde_json::Value;

use crate::support::{Fixture, initialize_body, simple_catalog};

struct Edge {
    addr: SocketAddr,
    _server: Server,
    _dir: tempfile::TempDir,
    _fixture: Fixture,
}

async fn start(transport: CoreTransport) -> Edge {
    start_with(transport, 64).await
}

async fn start_with(transport: CoreTransport, max_connections: usize) -> Edge {
    let fixture = Fixture::start();
    let catalog = CatalogConfig::parse(&simple_catalog(&fixture.url)).expect("catalog");
    let dir = tempfile::Builder::new()
        .prefix("edge")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let policy = Arc::new(
        Policy::new(PolicyConfig {
            // Nothing listens here: the core is away.
            socket: dir.path().join("core.sock"),
            transport,
            connect_timeout: Duration::from_millis(100),
            request_timeout: Duration::from_millis(300),
            cache: CacheLimits {
                max_entries: 100,
                max_age: Duration::from_secs(60),
            },
            watcher: "it".to_owned(),
        })
        .expect("policy"),
    );
    let runtime = Runtime::start(&catalog, RuntimeConfig::default())
        .await
        .expect("runtime")
        .with_hooks(Arc::clone(&policy) as Arc<dyn mcp_runtime_core::Hooks>);
    let mut server = Server::new(Arc::new(runtime));
    let listener = socket::bind_tcp("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    server.serve_public(
        listener,
        Admission::new("public", &[], max_connections, Duration::from_secs(10)),
        PublicEndpoint {
            policy,
            allow: AllowLists::default(),
            max_header_bytes: 64 * 1024,
        },
    );
    Edge {
        addr,
        _server: server,
        _dir: dir,
        _fixture: fixture,
    }
}

/// One request on a new TCP connection: status, `www-authenticate`, body.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, Option<String>, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = tx
        .send_request(b.body(Full::new(body)).expect("request"))
        .await
        .expect("response");
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let bytes = r.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, challenge, json)
}

const JSON: [(&str, &str); 3] = [
    ("host", "localhost"),
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
];

async fn fail_closed(transport: CoreTransport) {
    let edge = start(transport).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let mut headers = JSON.to_vec();
        headers.push(("authorization", "Bearer anything"));
        // The internal header is never read, so it cannot stand in for the core either.
        headers.push(("x-contextforge-auth-context", "eyJlbWFpbCI6ImFAeCJ9"));
        let (status, _, body) = send(edge.addr, "POST", "/mcp", &headers, initialize_body()).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], -32000, "{body}");
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest 503 took {slowest:?}"
    );
}

#[tokio::test]
async fn without_its_core_every_request_is_503_at_once_over_http() {
    fail_closed(CoreTransport::Http).await;
}

#[cfg(feature = "grpc-uds")]
#[tokio::test]
async fn without_its_core_every_request_is_503_at_once_over_grpc() {
    fail_closed(CoreTransport::Grpc).await;
}

#[tokio::test]
async fn path_method_host_and_origin_are_checked_before_the_core_is_asked() {
    let edge = start(CoreTransport::Http).await;
    let body = initialize_body;
    let (status, _, json) = send(edge.addr, "POST", "/other", &JSON, body()).await;
    assert_eq!(
        (status, json["error"]["code"].as_i64()),
        (404, Some(-32001))
    );
    let (status, _, _) = send(edge.addr, "PUT", "/mcp", &JSON, body()).await;
    assert_eq!(status, 405);
    let mut evil = JSON.to_vec();
    evil[0] = ("host", "evil.example");
    let (status, _, json) = send(edge.addr, "POST", "/mcp", &evil, body()).await;
    assert_eq!(status, 421, "{json}");
    assert_eq!(
        json["error"]["message"],
        "Forbidden: Host 'evil.example' is not allowed"
    );
    let mut origin = JSON.to_vec();
    origin.push(("origin", "http://evil.example"));
    let (status, _, json) = send(edge.addr, "POST", "/servers/x/mcp", &origin, body()).await;
    assert_eq!(status, 403, "{json}");
    assert_eq!(
        json["error"]["message"],
        "Forbidden: Origin 'http://evil.example' is not allowed"
    );
    // `/health` is behind the allow-lists too, as the gateway's.
    let (status, _, _) = send(edge.addr, "GET", "/health", &evil, Bytes::new()).await;
    assert_eq!(status, 421);
    let (status, _, json) = send(edge.addr, "GET", "/health", &JSON, Bytes::new()).await;
    assert_eq!((status, json["status"].as_str()), (200, Some("serving")));
    // A head over the limit (64 KiB here) is 431, whatever else it carries.
    let big = "a".repeat(70 * 1024);
    let mut long = JSON.to_vec();
    long.push(("x-big", &big));
    let (status, _, json) = send(edge.addr, "POST", "/mcp", &long, body()).await;
    assert_eq!(status, 431, "{json}");
    assert_eq!(json["error"]["code"], -32600, "{json}");
    // An allowed Host with a port and an allowed Origin reach the core (away: 503).
    let mut ok = JSON.to_vec();
    ok[0] = ("host", "127.0.0.1:8080");
    ok.push(("origin", "http://localhost:3000"));
    let (status, _, _) = send(edge.addr, "POST", "/mcp", &ok, body()).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503() {
    use tokio::io::AsyncReadExt as _;
    let edge = start_with(CoreTransport::Http, 1).await;
    let _held = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("first");
    // Let the first be admitted before the second arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("second");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains(r#""code":-32000"#), "{text}");
}
