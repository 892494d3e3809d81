//! Parity: every case of the shared table through both adapters gives the same status, the
//! same headers that matter and the same body (session ids normalised).

use crate::cases::{assert_case, table};
use crate::sidecar::Sidecar;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_adapters_answer_every_case_identically() {
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let mut g = grpc::connect(&rt.grpc).await;
    let alice = auth("alice@example.com", false, Some(&[]));
    let (hs, hscoped) = (
        http.initialize(&alice, None).await,
        http.initialize(&alice, Some("echo-only")).await,
    );
    let (gs, gscoped) = (
        grpc::initialize(&mut g, &alice, None).await,
        grpc::initialize(&mut g, &alice, Some("echo-only")).await,
    );
    let sids = [hs.as_str(), hscoped.as_str(), gs.as_str(), gscoped.as_str()];
    for (hc, gc) in table(&alice, &hs, &hscoped)
        .into_iter()
        .zip(table(&alice, &gs, &gscoped))
    {
        let h = http.send(&hc.call).await;
        let (s, parts) = grpc::send_stream(&mut g, &gc.call).await;
        assert_case(&hc, &h, "http");
        assert_case(&gc, &s, "grpc InvokeStream");
        let (h, s) = (normalise(&h, &sids), normalise(&s, &sids));
        assert_eq!(h, s, "{}: HTTP and gRPC InvokeStream differ", hc.name);
        // A GET opens a stream: the contract sends it through InvokeStream only.
        if gc.call.method != "GET" {
            let u = grpc::send(&mut g, &gc.call).await;
            assert_case(&gc, &u, "grpc Invoke");
            let u = normalise(&u, &sids);
            assert_eq!(h, u, "{}: HTTP and gRPC Invoke differ", hc.name);
        }
        if hc.expect.get("sse").is_some() {
            assert!(
                parts >= 4,
                "InvokeStream sent the events one by one ({parts} parts)"
            );
        }
    }
    // DELETE through CloseSession, then the session is gone on both paths.
    let del = Call::bodyless("DELETE", &alice, &gs);
    assert_eq!(grpc::send(&mut g, &del).await.status, 200);
    assert_eq!(grpc::send(&mut g, &del).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelopes_are_invalid_argument() {
    use mcp_runtime_proto::v1 as pb;
    let fx = Fixture::start();
    let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let mut g = grpc::connect(&rt.grpc).await;
    let alice = auth("alice@example.com", false, Some(&[]));
    let good = grpc::envelope(&Call::post(&alice, initialize_body()));
    let cases = [
        ("no envelope", None),
        (
            "no auth",
            Some(pb::RequestEnvelope {
                auth: None,
                ..good.clone()
            }),
        ),
        (
            "unset method",
            Some(pb::RequestEnvelope {
                method: 0,
                ..good.clone()
            }),
        ),
        (
            "unknown method",
            Some(pb::RequestEnvelope {
                method: 42,
                ..good.clone()
            }),
        ),
        (
            "unknown team scope",
            Some(pb::RequestEnvelope {
                auth: Some(pb::AuthContext {
                    team_scope: 9,
                    ..grpc::auth(&alice)
                }),
                ..good.clone()
            }),
        ),
    ];
    for (name, envelope) in cases {
        let err = g
            .invoke(pb::InvokeRequest { envelope })
            .await
            .expect_err(name);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
        assert!(!err.message().is_empty());
    }
    let h = g
        .health_check(pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status(), pb::ServingStatus::Serving);
    assert_eq!(h.contract_version, mcp_runtime_core::CONTRACT_VERSION);
    // The state store, as `/health` reports it (contract 1.2).
    assert_eq!(
        h.state_store,
        Some(pb::StateStoreHealth {
            kind: "memory".into(),
            reachable: true
        })
    );
    assert_eq!(
        h.open_sessions, 0,
        "no session minted by a malformed envelope"
    );
}

/// Replaces session ids in a body, and the stream and time parts of each SSE event id
/// (`id: <stream>-<ms>-<seq>`, see `mcp_runtime_core::state`), so two transports' answers
/// compare equal; the sequence number stays, so the order of events is still compared.
fn normalise(r: &Reply, sids: &[&str]) -> Reply {
    let mut text = String::from_utf8_lossy(&r.body).into_owned();
    for s in sids {
        text = text.replace(s, "<session>");
    }
    let text = text
        .split('\n')
        .map(|line| match line.strip_prefix("id: ") {
            Some(id) => format!("id: <stream>-{}", id.rsplit('-').next().unwrap_or("")),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    Reply {
        body: bytes::Bytes::from(text),
        session_id: r.session_id.as_ref().map(|_| "<session>".into()),
        ..r.clone()
    }
}
