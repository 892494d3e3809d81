//! Operating the runtime (`docs/operations.md`): the metrics listener scraped over real TCP
//! while real requests go through the HTTP/JSON socket, `/ready` apart from `/health`, the
//! health degraded while a required upstream is killed, readiness flipped before the
//! listeners close, the JSON request log line, and a metrics port in use.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::runtime_proc::{RuntimeProc, runtime_bin};
use crate::support::{Call, Fixture, Http, auth, ping, rpc, simple_catalog};

/// A loopback address with a port free right now (the metrics listener refuses port 0).
pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address")
}

/// `GET path` on the metrics listener: the status and the body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics listener");
    s.write_all(format!("GET {path} HTTP/1.0\r\nhost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until the metrics listener answers `/ready` (the runtime binds it before its
/// sockets, so it answers once the runtime is up).
pub(crate) async fn until_listening(addr: SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("metrics listener {addr} never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_method_status_and_json_rpc_code() {
    let fx = Fixture::start();
    let addr = free_addr();
    let a = addr.to_string();
    let rt = RuntimeProc::start(&simple_catalog(&fx.url), &["--metrics-listen", &a]);
    until_listening(addr).await;
    let http = Http::new(&rt.http);
    let who = auth("ops@example.com", false, None);
    let sid = http.initialize(&who, None).await;
    for id in 1..=3 {
        let echo = rpc(
            id,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "x"}}),
        );
        let r = http.send(&Call::post(&who, echo).session(&sid)).await;
        assert_eq!(r.status, 200);
    }
    let r = http
        .send(&Call::post(&who, rpc(9, "no/such/method", json!({}))).session(&sid))
        .await;
    assert_eq!(r.error_code(), Some(-32601));
    // A body that is not JSON: 400 with a parse error, method unknown.
    let r = http
        .send(&Call::post(&who, "{not json").session(&sid))
        .await;
    assert_eq!(r.status, 400);

    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let count = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    assert_eq!(
        count(
            r#"mcp_requests_total{mode="http",mcp_method="tools/call",http_status="200",rpc_code="ok"}"#
        ),
        3.0
    );
    assert_eq!(
        count(
            r#"mcp_requests_total{mode="http",mcp_method="initialize",http_status="200",rpc_code="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        count(
            r#"mcp_requests_total{mode="http",mcp_method="other",http_status="200",rpc_code="method_not_found"}"#
        ),
        1.0
    );
    assert_eq!(
        count(
            r#"mcp_requests_total{mode="http",mcp_method="unknown",http_status="400",rpc_code="parse_error"}"#
        ),
        1.0
    );
    assert_eq!(
        count(r#"mcp_request_duration_seconds_count{mode="http",mcp_method="tools/call"}"#),
        3.0
    );
    assert_eq!(
        count(
            r#"mcp_upstream_requests_total{upstream="fixture",mcp_method="tools/call",outcome="ok"}"#
        ),
        3.0
    );
    assert_eq!(
        count(
            r#"mcp_upstream_request_duration_seconds_count{upstream="fixture",mcp_method="tools/call"}"#
        ),
        3.0
    );
    assert_eq!(count("mcp_sessions_open"), 1.0);
    assert_eq!(count(r#"mcp_requests_in_flight{mode="http"}"#), 0.0);
    // One connection per request (the client's), the scrape's not among them.
    assert_eq!(count(r#"mcp_connections_admitted_total{mode="http"}"#), 6.0);
    assert_eq!(count(r#"mcp_build_info{version="0.1.0"}"#), 1.0);
    assert!(
        text.contains("# TYPE mcp_request_duration_seconds histogram"),
        "{text}"
    );
    // No series of a label set never used (the handles resolve at first use).
    assert!(!text.contains(r#"mcp_method="prompts/get""#), "{text}");

    // An open SSE stream counts as a request in flight and a stream open until it ends.
    let get_stream = http.open(&Call::bodyless("GET", &who, &sid)).await;
    assert_eq!(get_stream.status(), 200);
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(
        sample(&text, r#"mcp_streams_open{mode="http"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"mcp_requests_in_flight{mode="http"}"#),
        Some(1.0)
    );
    drop(get_stream);
    let mut closed = false;
    for _ in 0..250 {
        let (_, text) = get(addr, "/metrics").await;
        if sample(&text, r#"mcp_streams_open{mode="http"}"#) == Some(0.0) {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the stream's gauge never went back to 0");

    assert_eq!(get(addr, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_health_are_apart_and_health_is_degraded_while_a_required_upstream_is_down() {
    let fx = Fixture::start();
    let fx_addr = fx.addr();
    let addr = free_addr();
    let a = addr.to_string();
    let rt = RuntimeProc::start(&simple_catalog(&fx.url), &["--metrics-listen", &a]);
    until_listening(addr).await;
    let http = Http::new(&rt.http);
    let ready = |body: &str| serde_json::from_str::<Value>(body).expect("JSON");
    let (status, body) = get(addr, "/ready").await;
    assert_eq!((status, ready(&body)), (200, json!({"status": "ready"})));
    let (status, h) = http.health().await;
    assert_eq!(
        (status, &h["health"], &h["upstreams_down"]),
        (200, &json!("ok"), &json!([]))
    );

    // The upstream dies; the next call to it fails and health names it.
    drop(fx);
    let who = auth("ops@example.com", false, None);
    let sid = http.initialize(&who, None).await;
    let echo = || {
        Call::post(
            &who,
            rpc(
                1,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "x"}}),
            ),
        )
        .session(&sid)
    };
    let r = http.send(&echo()).await;
    assert!(r.error_code().is_some(), "{:?}", r.body);
    let (status, h) = http.health().await;
    assert_eq!(status, 200, "liveness stays 200: {h}");
    assert_eq!(h["status"], "serving");
    assert_eq!(h["health"], "degraded", "{h}");
    assert_eq!(
        h["upstreams_down"],
        json!([{"id": "fixture", "required": true}])
    );
    // The metrics listener answers the same /health; readiness does not depend on upstreams.
    let (_, body) = get(addr, "/health").await;
    assert_eq!(ready(&body)["health"], "degraded");
    assert_eq!(get(addr, "/ready").await.0, 200);
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"mcp_upstream_requests_total{upstream="fixture",mcp_method="tools/call",outcome="error"}"#
        ),
        Some(1.0),
        "{text}"
    );

    // Back on the same port: the next call succeeds and health is ok again.
    let _fx = Fixture::start_at(fx_addr);
    let r = http.send(&echo()).await;
    assert_eq!((r.status, r.error_code()), (200, None), "{:?}", r.body);
    let (_, h) = http.health().await;
    assert_eq!(
        (&h["health"], &h["upstreams_down"]),
        (&json!("ok"), &json!([]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_ready_while_the_sockets_still_serve() {
    let fx = Fixture::start();
    let addr = free_addr();
    let a = addr.to_string();
    let mut rt = RuntimeProc::start(
        &simple_catalog(&fx.url),
        &["--metrics-listen", &a, "--drain-ms", "3000"],
    );
    until_listening(addr).await;
    let http = Http::new(&rt.http);
    let who = auth("ops@example.com", false, None);
    let sid = http.initialize(&who, None).await;
    #[cfg(feature = "grpc-uds")]
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        crate::support::grpc::channel(&rt.grpc).await,
    );
    rt.signal_term();
    let mut flipped = false;
    for _ in 0..100 {
        let (status, body) = get(addr, "/ready").await;
        if status == 503 {
            assert_eq!(
                serde_json::from_str::<Value>(&body).expect("JSON"),
                json!({"status": "not_ready", "reason": "draining"})
            );
            flipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(flipped, "/ready never answered 503 after SIGTERM");
    // Still serving within the drain period: liveness, a request, the HTTP socket's /ready.
    assert_eq!(http.health().await.0, 200);
    let r = http.send(&ping(&who, 5, &sid)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    #[cfg(feature = "grpc-uds")]
    {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        let check = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("grpc.health.v1 Check while draining");
        assert_eq!(check.into_inner().status(), ServingStatus::NotServing);
    }
    assert!(rt.wait(), "clean exit after the drain period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_request_log_line_has_the_ids_and_no_credentials() {
    let fx = Fixture::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("runtime.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut rt = RuntimeProc::start_logged(
        &simple_catalog(&fx.url),
        &["--log-format", "json"],
        &[("MCP_RUNTIME_LOG", "info")],
        Some(log),
    );
    let http = Http::new(&rt.http);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut who = auth("secret-subject@example.com", false, None);
    who["traceparent"] = json!(format!("00-{trace}-00f067aa0ba902b7-01"));
    who["scopes"] = json!(["very-secret-scope"]);
    let sid = http.initialize(&who, None).await;
    let r = http.send(&ping(&who, 7, &sid)).await;
    assert_eq!(r.status, 200);
    assert!(rt.terminate());

    let text = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["msg"] == "request" && l["mcp_method"] == "ping")
        .unwrap_or_else(|| panic!("no request line for the ping:\n{text}"));
    // The keys of every process's JSON lines (docs/operations.md, "Logs").
    assert_eq!(line["level"], "info");
    assert_eq!(line["logger"], "mcp_runtime::access");
    let ts = line["ts"].as_str().expect("ts");
    assert!(
        ts.len() == 24
            && ts.ends_with('Z')
            && ts.as_bytes()[10] == b'T'
            && ts.as_bytes()[19] == b'.',
        "RFC 3339 UTC with milliseconds: {ts}"
    );
    // Tracing is off: no span of the runtime's own.
    assert!(line.get("span_id").is_none(), "{line}");
    assert_eq!(line["trace_id"], trace);
    assert_eq!(line["session_id"], sid.as_str());
    assert_eq!(line["mode"], "http");
    assert_eq!(line["http_status"], 200);
    assert_eq!(line["rpc_code"], "ok");
    assert_eq!(line["outcome"], "ok");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{line}"
    );
    // The initialize line names the session it created.
    assert!(
        lines
            .iter()
            .any(|l| l["mcp_method"] == "initialize" && l["session_id"] == sid.as_str()),
        "{text}"
    );
    for secret in [
        "secret-subject",
        "very-secret-scope",
        &crate::support::auth_header(&who),
    ] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
}

#[test]
fn a_metrics_port_in_use_is_one_line_and_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let cat = dir.path().join("catalog.toml");
    // Never contacted: the metrics port is bound before the catalog is read.
    std::fs::write(&cat, simple_catalog("http://127.0.0.1:9/mcp")).expect("catalog");
    let out = Command::new(runtime_bin())
        .arg("--catalog")
        .arg(&cat)
        .arg("--http-uds")
        .arg(dir.path().join("h.sock"))
        .args(["--metrics-listen", &addr])
        .env("MCP_RUNTIME_LOG", "error")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "mcp-runtime: --metrics-listen (MCP_RUNTIME_METRICS_LISTEN) {addr}: cannot listen: "
        )),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");

    let out = Command::new(runtime_bin())
        .arg("--catalog")
        .arg(&cat)
        .arg("--http-uds")
        .arg(dir.path().join("h.sock"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("port 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real OTLP/HTTP receiver (`POST /v1/traces`, protobuf): every span it receives, decoded
/// with the OpenTelemetry protocol's own messages.
#[cfg(feature = "otel")]
mod otlp {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;

    /// The receiver's address and what it received (service name, span).
    pub(super) struct Receiver {
        pub(super) addr: std::net::SocketAddr,
        pub(super) spans: Arc<Mutex<Vec<(String, Span)>>>,
    }

    pub(super) async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let got = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let got = Arc::clone(&got);
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| kv.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                got.lock().unwrap().push((service.clone(), span));
                            }
                        }
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, spans }
    }
}

#[cfg(feature = "otel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_span_reaches_an_otlp_receiver_as_the_child_of_the_traceparent_sent() {
    let receiver = otlp::start().await;
    // The upstream keeps the `traceparent` of every request it receives.
    let upstream_saw = mcp_fixture_server::TraceparentLog::default();
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        mcp_fixture_server::SharedState::new(0)
            .with_traceparent_log(std::sync::Arc::clone(&upstream_saw)),
    );
    let endpoint = format!("http://{}", receiver.addr);
    let mut rt = RuntimeProc::start_with_env(
        &simple_catalog(&fx.url),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let http = Http::new(&rt.http);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let mut who = auth("ops@example.com", false, None);
    who["traceparent"] = json!(format!("00-{trace}-{parent}-01"));
    let sid = http.initialize(&who, None).await;
    let echo = rpc(
        3,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "x"}}),
    );
    assert_eq!(
        http.send(&Call::post(&who, echo).session(&sid))
            .await
            .status,
        200
    );
    // The exporter flushes at exit.
    assert!(rt.terminate());

    let spans = receiver.spans.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let call = spans
        .iter()
        .find(|(_, s)| s.name == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call span among {spans:?}"));
    assert!(call.0.contains("mcp-runtime"), "service name: {}", call.0);
    let span = &call.1;
    assert_eq!(hex(&span.trace_id), trace);
    assert_eq!(hex(&span.parent_span_id), parent);
    // SPAN_KIND_SERVER
    assert_eq!(span.kind, 2);
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.as_ref())
            .map(|v| format!("{:?}", v.value))
    };
    assert!(
        attr("mcp.session.id").is_some_and(|v| v.contains(&sid)),
        "{span:?}"
    );
    assert!(
        attr("mcp.runtime.surface").is_some_and(|v| v.contains("http")),
        "{span:?}"
    );
    assert!(
        attr("http.response.status_code").is_some_and(|v| v.contains("200")),
        "{span:?}"
    );
    assert!(
        spans
            .iter()
            .any(|(_, s)| s.name == "initialize" && hex(&s.trace_id) == trace)
    );

    // The upstream call: a CLIENT span, child of the request span, whose context the upstream
    // received as its `traceparent` (the trace of the client's request).
    let client = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "tools/call fixture")
        .unwrap_or_else(|| panic!("no upstream CLIENT span among {spans:?}"));
    // SPAN_KIND_CLIENT
    assert_eq!(client.kind, 3);
    assert_eq!(hex(&client.trace_id), trace);
    assert_eq!(client.parent_span_id, span.span_id);
    let sent = format!("00-{trace}-{}-01", hex(&client.span_id));
    let saw = upstream_saw.lock().unwrap().clone();
    assert!(
        saw.contains(&sent),
        "the upstream received {saw:?}, not the CLIENT span's {sent}"
    );
    assert!(
        saw.iter().all(|tp| tp.split('-').nth(1) == Some(trace)),
        "every traceparent the upstream received is in the client's trace: {saw:?}"
    );
}

#[test]
fn an_otlp_protocol_other_than_http_protobuf_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cat = dir.path().join("catalog.toml");
    std::fs::write(&cat, simple_catalog("http://127.0.0.1:9/mcp")).expect("catalog");
    let out = Command::new(runtime_bin())
        .arg("--catalog")
        .arg(&cat)
        .arg("--http-uds")
        .arg(dir.path().join("h.sock"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some(
            "mcp-runtime: OTEL_EXPORTER_OTLP_PROTOCOL=grpc: this runtime exports traces over http/protobuf only"
        ),
        "{err}"
    );
}
