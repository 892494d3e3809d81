//! The MCP streamable-HTTP semantics over the HTTP/JSON adapter: every method and error case
//! of the shared table, plus the session lifecycle. Runs with and without `grpc-uds`.

use std::time::Duration;

use crate::cases::{assert_case, table};
use crate::sidecar::{Options, Sidecar};
use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_the_table() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&alice, None).await;
    let scoped = http.initialize(&alice, Some("echo-only")).await;
    for case in table(&alice, &sid, &scoped) {
        let r = http.send(&case.call).await;
        assert_case(&case, &r, "http");
    }
    // The runtime still serves after every error case.
    let r = http.send(&ping(&alice, 99, &sid)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_the_session() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&alice, None).await;
    let del = Call::bodyless("DELETE", &alice, &sid);
    let mut no_sid = del.clone();
    no_sid.session = None;
    assert_eq!(http.send(&no_sid).await.status, 400);
    assert_eq!(http.send(&del).await.status, 200);
    assert_eq!(http.send(&del).await.status, 404);
    let r = http.send(&ping(&alice, 1, &sid)).await;
    assert_eq!((r.status, r.error_code()), (404, Some(-32001)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_context_header_is_required_and_checked() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let call = Call::post(&alice, initialize_body());
    let good = auth_header(&alice);
    for bad in [
        None,
        Some("%%%"),
        Some(&good[..good.len() / 2]),
        Some("bm90IGpzb24"),
        Some("e30"),
    ] {
        let r = http.send_raw(&call, bad).await;
        assert_eq!(r.status, 401, "auth header {bad:?}");
        assert_eq!(r.error_code(), Some(-32001));
        assert!(r.session_id.is_none(), "no session minted");
    }
    assert_eq!(http.send_raw(&call, Some(&good)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_version_and_sessions() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    http.initialize(&alice, None).await;
    let (status, body) = http.health().await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "serving");
    assert_eq!(body["contract_version"], mcp_runtime_core::CONTRACT_VERSION);
    assert_eq!(body["open_sessions"], 1);
    assert_eq!(
        body["features"],
        json!(if cfg!(feature = "grpc-uds") {
            vec!["grpc-uds"]
        } else {
            vec![]
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_headers_and_paths_are_400_never_ignored() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let alice = auth("alice@example.com", false, Some(&[]));
    let send = |extra: (&'static str, &'static [u8]), path: &'static str| {
        let (sock, alice) = (rt.http.clone(), alice.clone());
        async move {
            let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
            let (mut s, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::post(path)
                .header("host", "localhost")
                .header("x-contextforge-auth-context", auth_header(&alice))
                .header(
                    extra.0,
                    hyper::header::HeaderValue::from_bytes(extra.1).unwrap(),
                )
                .body(http_body_util::Full::new(initialize_body()))
                .unwrap();
            let resp = s.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            use http_body_util::BodyExt;
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            (
                status,
                v.pointer("/error/code").and_then(serde_json::Value::as_i64),
            )
        }
    };
    // A scope header that cannot be read must not widen to the federated endpoint.
    assert_eq!(
        send(("x-contextforge-server-id", b"echo-only\xff"), "/mcp").await,
        (400, Some(-32000))
    );
    assert_eq!(
        send(("mcp-protocol-version", b"2025-06-18\xff"), "/mcp").await,
        (400, Some(-32000))
    );
    assert_eq!(
        send(("x-other", b"x"), "/servers/%FF/mcp").await,
        (400, Some(-32000))
    );
    assert_eq!(
        send(("x-other", b"x"), "/mcp/extra").await,
        (404, Some(-32001))
    );
    assert_eq!(send(("x-other", b"x"), "/mcp").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_reaped_and_then_answer_404() {
    let fx = Fixture::start();
    let rt = Sidecar::with(
        &simple_catalog(&fx.url),
        Options {
            session_idle_ttl: Duration::from_secs(1),
            ..Options::default()
        },
    )
    .await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let idle = http.initialize(&alice, None).await;
    let used = http.initialize(&alice, None).await;
    let ping = |sid: &str| ping(&alice, 1, sid);
    // Keep one session in use well inside its TTL while the other sits idle past it.
    let mut reaped = false;
    for _ in 0..50 {
        assert_eq!(
            http.send(&ping(&used)).await.status,
            200,
            "a used session is kept"
        );
        if http.health().await.1["open_sessions"] == 1 {
            reaped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reaped, "the idle session was never reaped");
    let r = http.send(&ping(&idle)).await;
    assert_eq!((r.status, r.error_code()), (404, Some(-32001)));
    assert_eq!(http.send(&ping(&used)).await.status, 200);
}
