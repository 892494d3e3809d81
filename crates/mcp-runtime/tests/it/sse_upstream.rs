//! Legacy HTTP+SSE upstreams (MCP 2024-11-05), with a third-party server: server-everything's
//! `sse` mode (Node 22, `make node-deps`), started by the test on a free port; and two hostile
//! servers of the test's own on real sockets: one naming a POST endpoint on another origin,
//! one sending an endpoint event and then an event longer than the runtime's cap.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::sidecar::Sidecar;
use crate::support::*;
use mcp_runtime_core::{CatalogConfig, Runtime, RuntimeConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// server-everything over SSE on `port`; killed on drop.
struct Everything(Child);

impl Everything {
    async fn start(port: u16) -> Self {
        let (node, everything) = node_and_everything();
        let child = Command::new(node)
            .arg(everything)
            .arg("sse")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server-everything starts");
        let this = Self(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return this;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server-everything did not listen on {port}");
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn catalog(url: &str) -> String {
    format!(
        "[[upstreams]]\nid = \"everything\"\ntransport = \"sse\"\nprefix = \"everything_\"\nurl = \"{url}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_legacy_sse_is_served_and_reconnected_after_a_restart() {
    let port = free_port();
    let mut server = Everything::start(port).await;
    let rt = Sidecar::start(&catalog(&format!("http://127.0.0.1:{port}/sse"))).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let r = everything_echo(&http, &who, &sid, "over sse ✓")
        .await
        .json();
    let text = r
        .pointer("/result/content/0/text")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    assert!(text.contains("over sse ✓"), "{r}");

    // Progress comes on the one SSE stream, routed to the call by its token.
    let events = everything_progress(&http, &who, &sid).await;
    let steps = events
        .iter()
        .filter(|e| {
            e["method"] == "notifications/progress" && e["params"]["progressToken"] == "mine"
        })
        .count();
    assert_eq!(steps, 3, "{events:?}");
    assert_eq!(events.last().map(|e| e["id"].clone()), Some(json!(4)));

    // The server restarted (a new SSE session): the runtime connects again and serves.
    drop(server);
    server = Everything::start(port).await;
    let mut served = false;
    for _ in 0..120 {
        let r = everything_echo(&http, &who, &sid, "again").await.json();
        if r.pointer("/result/content/0/text").is_some() {
            served = true;
            break;
        }
        assert_eq!(r["error"]["code"], -32603, "{r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(served, "never served again");
    drop(server);
}

/// A server of the test's own: answers every request with `head` and then `body`, and keeps
/// the connection open.
async fn hostile_sse(body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    port
}

async fn start_error(url: &str, max_message_bytes: usize) -> String {
    let config = CatalogConfig::parse(&catalog(url)).expect("catalog");
    let err = Runtime::start(
        &config,
        RuntimeConfig {
            max_message_bytes,
            ..RuntimeConfig::default()
        },
    )
    .await
    .expect_err("the upstream must fail the start");
    format!("{err:#}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_on_another_origin_is_refused() {
    let port =
        hostile_sse(b"event: endpoint\ndata: http://127.0.0.2:9/messages\n\n".to_vec()).await;
    let err = start_error(&format!("http://127.0.0.1:{port}/sse"), 1 << 20).await;
    assert!(err.contains("another origin"), "{err}");
    assert!(
        !err.contains("127.0.0.2"),
        "the named endpoint is not echoed: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_longer_than_the_cap_ends_the_connection() {
    // The cap is the message limit plus 1 MiB: 1 KiB + 1 MiB here; the event is 2 MiB.
    let mut body = b"event: endpoint\ndata: /messages\n\ndata: ".to_vec();
    body.extend(std::iter::repeat_n(b'x', 2 << 20));
    let port = hostile_sse(body).await;
    let err = start_error(&format!("http://127.0.0.1:{port}/sse"), 1024).await;
    assert!(err.contains("an event longer than"), "{err}");
}
