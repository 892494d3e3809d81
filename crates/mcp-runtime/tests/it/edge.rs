//! The public endpoint of edge mode without its policy core: the checks made before the core
//! is asked (path, method, `Host`, `Origin`) and fail closed (the core's socket has no server:
//! every request is 503 with a JSON-RPC error at once, none served), and, with a scripted core,
//! an allowed answer crossed by a revocation on the watch stream. What needs the real core
//! (callers, hooks, revocations, the core coming back) is in `python/tests/test_edge_stack.py`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use mcp_runtime::host_origin::AllowLists;
use mcp_runtime::policy::cache::{CacheLimits, DenialLimits};
use mcp_runtime::policy::flood::ResolveLimits;
use mcp_runtime::policy::{CoreTransport, Policy, PolicyConfig};
use mcp_runtime::{Admission, PublicEndpoint, Server, socket};
use mcp_runtime_core::{CatalogConfig, Runtime, RuntimeConfig};
use serde_json::Value;

use crate::support::{Fixture, initialize_body, simple_catalog};

struct Edge {
    addr: SocketAddr,
    policy: Arc<Policy>,
    _server: Server,
    _dir: tempfile::TempDir,
    _fixture: Fixture,
}

fn socket_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("edge")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

async fn start(transport: CoreTransport) -> Edge {
    start_with(transport, 64).await
}

async fn start_with(transport: CoreTransport, max_connections: usize) -> Edge {
    // Nothing listens on the core's socket: the core is away.
    serve(
        socket_dir(),
        transport,
        max_connections,
        Duration::from_millis(300),
    )
    .await
}

/// The public endpoint of a runtime whose policy asks the core at `dir/core.sock` (whatever
/// listens there, or nothing) over `transport`, with `request_timeout` per core call.
async fn serve(
    dir: tempfile::TempDir,
    transport: CoreTransport,
    max_connections: usize,
    request_timeout: Duration,
) -> Edge {
    let fixture = Fixture::start();
    let catalog = CatalogConfig::parse(&simple_catalog(&fixture.url)).expect("catalog");
    let policy = Arc::new(
        Policy::new(PolicyConfig {
            socket: dir.path().join("core.sock"),
            transport,
            connect_timeout: Duration::from_millis(100),
            request_timeout,
            cache: CacheLimits {
                max_entries: 100,
                max_age: Duration::from_secs(60),
            },
            denials: DenialLimits {
                ttl: Duration::from_secs(5),
                max_entries: 100,
            },
            resolves: ResolveLimits {
                per_client: 8,
                total: 64,
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
            policy: Arc::clone(&policy),
            allow: AllowLists::default(),
            max_header_bytes: 64 * 1024,
            sse_keep_alive: None,
        },
    );
    Edge {
        addr,
        policy,
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

/// A connection with a request in progress: its head is sent, its body stalls (the request is
/// refused without a core, and its unread body is drained until the stall timeout, 10 s here).
async fn busy_connection(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(
        b"POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\n\r\n{\"jsonrpc\":",
    )
    .await
    .expect("send");
    conn
}

/// Everything until the runtime closes `conn` (within 5 s).
async fn read_to_close(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_when_none_is_idle() {
    let edge = start_with(CoreTransport::Http, 1).await;
    let _held = busy_connection(edge.addr).await;
    // Let the first request be in progress before the second connection arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("second");
    let text = read_to_close(&mut second).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains(r#""code":-32000"#), "{text}");
}

#[tokio::test]
async fn at_the_cap_the_connection_idle_longest_is_closed_for_a_new_one() {
    let edge = start_with(CoreTransport::Http, 3).await;
    // Three open: the oldest idle (connected, silent), one busy, one idle since later.
    let mut oldest = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("oldest");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _busy = busy_connection(edge.addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut younger = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("younger");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fourth is served: the oldest idle connection made room.
    let (status, _, body) = send(
        edge.addr,
        "GET",
        "/health",
        &[("host", "localhost")],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        read_to_close(&mut oldest).await,
        "",
        "closed without an answer"
    );
    // The younger idle one is still open and usable.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        younger
            .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .expect("send");
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), younger.read_exact(&mut head))
            .await
            .expect("answered in time")
            .expect("read");
        assert_eq!(&head, b"HTTP/1.1 200");
    }
}

/// A scripted HTTP/JSON core for the race of a revocation with an answer in flight: the watch
/// stream sends a snapshot (generation 1); the first ResolveCaller makes the watch stream send
/// a revocation of the caller's subject (generation 2) and answers "allowed" from generation 1
/// only after the revocation had time to arrive; every later ResolveCaller answers with the
/// denial of generation 2. Returns the count of ResolveCaller calls.
fn scripted_core(path: &std::path::Path) -> Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::UnixListener::bind(path).expect("bind core");
    let resolves = Arc::new(AtomicUsize::new(0));
    let revoke = Arc::new(tokio::sync::Notify::new());
    let count = Arc::clone(&resolves);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (resolves, revoke) = (Arc::clone(&resolves), Arc::clone(&revoke));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let reply = |body: String| {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                if head.starts_with("get /v1/watch-policy") {
                    let line = |l: &str| format!("{:x}\r\n{l}\n\r\n", l.len() + 1);
                    let mut out = String::from(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                         transfer-encoding: chunked\r\n\r\n",
                    );
                    out.push_str(&line(r#"{"generation":1,"snapshot":{"hooks":[]}}"#));
                    let _ = conn.write_all(out.as_bytes()).await;
                    revoke.notified().await;
                    let revocation =
                        line(r#"{"generation":2,"revocation":{"subjectEmail":"victim@x"}}"#);
                    let _ = conn.write_all(revocation.as_bytes()).await;
                    std::future::pending::<()>().await;
                } else if head.starts_with("post /v1/resolve-caller") {
                    let body = if resolves.fetch_add(1, Ordering::SeqCst) == 0 {
                        revoke.notify_one();
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        r#"{"caller":{"email":"victim@x","teams":[]},"cacheMaxAgeMs":60000,"generation":1}"#
                    } else {
                        r#"{"denial":{"httpStatus":401,"reason":"Unauthorized: token revoked"},"generation":2}"#
                    };
                    let _ = conn.write_all(reply(body.to_owned()).as_bytes()).await;
                } else {
                    let _ = conn.write_all(reply("{}".to_owned()).as_bytes()).await;
                }
            });
        }
    });
    count
}

#[tokio::test]
async fn an_allowed_answer_crossed_by_a_revocation_is_asked_again_never_served() {
    let dir = socket_dir();
    let resolves = scripted_core(&dir.path().join("core.sock"));
    let edge = serve(dir, CoreTransport::Http, 64, Duration::from_millis(2000)).await;
    let (addr, policy) = (edge.addr, Arc::clone(&edge.policy));
    let started = Instant::now();
    while !policy.is_ready() {
        assert!(started.elapsed() < Duration::from_secs(10), "no snapshot");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut headers = JSON.to_vec();
    headers.push(("authorization", "Bearer victim-token"));
    let (status, _, body) = send(addr, "POST", "/mcp", &headers, initialize_body()).await;
    // The revocation (generation 2) arrived before the answer of generation 1: the caller is
    // asked again and refused, never served from the stale answer.
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], -32001, "{body}");
    assert_eq!(resolves.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(policy.cache().is_empty(), "the stale answer was cached");
    drop(edge);
}
