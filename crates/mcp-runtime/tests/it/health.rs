//! Health while draining: from the moment shutdown starts, `GET /health`, the `HealthCheck`
//! RPC and the standard `grpc.health.v1` service all report not serving, while a call in
//! flight keeps the drain open; and server reflection lists the `McpRuntime` service.

use std::time::Duration;

use mcp_runtime::Admission;
use serde_json::json;

use crate::sidecar::Sidecar;
use crate::support::*;

/// The admission rules of an extra socket.
fn admission(name: &'static str) -> Admission {
    Admission::new(name, &[], 16, Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_health_surface_reports_not_serving_while_a_call_keeps_the_drain_open() {
    let fx = Fixture::start();
    let mut rt = Sidecar::start(&simple_catalog(&fx.url)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    assert_eq!(http.health().await.0, 200);
    #[cfg(feature = "grpc-uds")]
    let mut watches = grpc_health::watch_both(&rt.grpc).await;

    let call = http.spawn(sleep_call(&who, &sid, 5, 3_000));
    http.until_inflight(&who, &sid, 1, Duration::from_secs(5))
        .await;
    let runtime = rt.runtime();
    let drained = rt.drain(Duration::from_secs(30));

    // The drain stops the sockets from accepting; what a draining runtime answers is read
    // through a second socket served by the same library functions on the same runtime.
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let second = mcp_runtime::socket::bind(&dir.path().join("h.sock"), 0o600).expect("bind");
    tokio::spawn(mcp_runtime::serve_http(
        runtime.clone(),
        second.listener,
        admission("http"),
        std::future::pending(),
    ));
    // The drain runs in a task of its own: its first step (reporting not serving) comes once
    // that task runs, so the answer is read until it changes, within a bound.
    let second_http = Http::new(&dir.path().join("h.sock"));
    let mut answer = second_http.health().await;
    for _ in 0..200 {
        if answer.0 != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = second_http.health().await;
    }
    let (status, body) = answer;
    assert_eq!((status, &body["status"]), (503, &json!("not_serving")));
    #[cfg(feature = "grpc-uds")]
    {
        let path = dir.path().join("g.sock");
        let second = mcp_runtime::socket::bind(&path, 0o600).expect("bind");
        tokio::spawn(mcp_runtime::serve_grpc(
            runtime,
            second.listener,
            admission("grpc"),
            mcp_runtime::GrpcSettings::default(),
            std::future::pending(),
        ));
        let mut g = grpc::connect(&path).await;
        let h = g
            .health_check(mcp_runtime_proto::v1::HealthCheckRequest {})
            .await
            .expect("HealthCheck")
            .into_inner();
        assert_eq!(h.status(), mcp_runtime_proto::v1::ServingStatus::NotServing);
        // The server draining (not the second one): its grpc.health.v1 watchers are told.
        grpc_health::until_not_serving(&mut watches).await;
    }
    #[cfg(not(feature = "grpc-uds"))]
    drop(runtime);

    assert!(
        !call.is_finished(),
        "the call in flight keeps the drain open"
    );
    let r = call.await.expect("the call");
    assert_eq!(
        r.json().pointer("/result/content/0/text"),
        Some(&json!("slept 3000 ms"))
    );
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("drained once the call ended")
        .expect("drain");
}

#[cfg(feature = "grpc-uds")]
mod grpc_health {
    //! The standard `grpc.health.v1` service and server reflection, with tonic's own clients.

    use std::path::Path;

    use futures::StreamExt as _;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use super::*;

    /// The service names watched: the server as a whole and `McpRuntime`.
    const SERVICES: [&str; 2] = ["", "mcp.runtime.v1.McpRuntime"];

    type Watch = tonic::Streaming<HealthCheckResponse>;

    /// Opens a `Watch` on each of [`SERVICES`]; each first reports `SERVING`.
    pub(super) async fn watch_both(path: &Path) -> Vec<Watch> {
        let mut client = HealthClient::new(grpc::channel(path).await);
        let mut watches = Vec::new();
        for service in SERVICES {
            let req = HealthCheckRequest {
                service: service.to_owned(),
            };
            let check = client.check(req.clone()).await.expect("Check");
            assert_eq!(check.into_inner().status(), ServingStatus::Serving);
            let mut watch = client.watch(req).await.expect("Watch").into_inner();
            let first = watch.next().await.expect("a status").expect("Watch");
            assert_eq!(first.status(), ServingStatus::Serving, "{service:?}");
            watches.push(watch);
        }
        watches
    }

    /// Waits until every watch reports `NOT_SERVING`, then closes them (an open `Watch`
    /// would keep the drain open too).
    pub(super) async fn until_not_serving(watches: &mut Vec<Watch>) {
        for (w, service) in watches.iter_mut().zip(SERVICES) {
            let next = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .expect("a status change within 5 s")
                .expect("a status")
                .expect("Watch");
            assert_eq!(next.status(), ServingStatus::NotServing, "{service:?}");
        }
        watches.clear();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_reflection_lists_the_mcp_runtime_service() {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

        let fx = Fixture::start();
        let rt = Sidecar::start(&simple_catalog(&fx.url)).await;
        let mut client = ServerReflectionClient::new(grpc::channel(&rt.grpc).await);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(futures::stream::iter([req]))
            .await
            .expect("ServerReflectionInfo")
            .into_inner();
        let answer = answers
            .next()
            .await
            .expect("an answer")
            .expect("reflection");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"mcp.runtime.v1.McpRuntime"), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    }
}
