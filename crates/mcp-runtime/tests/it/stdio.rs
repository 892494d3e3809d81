//! stdio upstreams, with a third-party server: `@modelcontextprotocol/server-everything` (npm,
//! pinned in `conformance/package.json`, installed with Node 22 by `make node-deps`) started by
//! the runtime as its child process. The runtime here runs in this test process, so the server
//! is a child of it; a marker in its environment (the catalog's `env`) finds its pid in /proc.

use std::time::Duration;

use crate::sidecar::Sidecar;
use crate::support::*;
use serde_json::{Value, json};

/// server-everything over stdio (prefix `everything_`), next to nothing else; `marker` goes
/// into its environment.
fn catalog(marker: &str) -> String {
    let (node, everything) = node_and_everything();
    format!(
        "[[upstreams]]\nid = \"everything\"\ntransport = \"stdio\"\nprefix = \"everything_\"\n\
         command = \"{}\"\nargs = [\"{}\", \"stdio\"]\nenv = {{ MCP_TEST_MARKER = \"{marker}\" }}\n",
        node.display(),
        everything.display()
    )
}

/// The live processes whose environment holds `MCP_TEST_MARKER=<marker>`.
fn pids_with(marker: &str) -> Vec<u32> {
    let needle = format!("MCP_TEST_MARKER={marker}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILLs the one live server process marked `marker`; returns its pid, as `pids_with`
/// gives it.
fn kill_the_server(marker: &str) -> Vec<u32> {
    let first = pids_with(marker);
    assert_eq!(first.len(), 1);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    first
}

fn marker(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_stdio_lists_calls_reads_and_reports_progress() {
    let marker = marker("calls");
    let rt = Sidecar::start(&catalog(&marker)).await;
    assert_eq!(pids_with(&marker).len(), 1, "started once, at discovery");
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let tools = http
        .send(&Call::post(&who, rpc(1, "tools/list", json!({}))).session(&sid))
        .await
        .json();
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in [
        "everything_echo",
        "everything_get-sum",
        "everything_trigger-long-running-operation",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let r = everything_echo(&http, &who, &sid, "over stdio ✓").await;
    let text = r.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains("over stdio ✓"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    let events = everything_progress(&http, &who, &sid).await;
    // The caller's own token on each; rmcp's typed model re-encodes the numbers (`1.0`).
    let tokens: Vec<(&Value, Option<f64>)> = events
        .iter()
        .filter(|e| e["method"] == "notifications/progress")
        .map(|e| {
            (
                &e["params"]["progressToken"],
                e["params"]["progress"].as_f64(),
            )
        })
        .collect();
    let mine = json!("mine");
    assert_eq!(
        tokens,
        [(&mine, Some(1.0)), (&mine, Some(2.0)), (&mine, Some(3.0))],
        "{events:?}"
    );
    let last = events.last().expect("an answer");
    assert_eq!(last["id"], 4);
    assert!(last["result"]["content"].is_array(), "{last}");

    let read = http
        .send(
            &Call::post(
                &who,
                rpc(
                    5,
                    "resources/read",
                    json!({"uri": "demo://resource/dynamic/text/7"}),
                ),
            )
            .session(&sid),
        )
        .await
        .json();
    let text = read["result"]["contents"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("Resource 7:"), "{read}");
}

/// A server killed from outside is started again (a new process) and serves the next calls;
/// the runtime's shutdown stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_upstream_that_dies_is_started_again_and_stopped_at_shutdown() {
    let marker = marker("restart");
    let mut rt = Sidecar::start(&catalog(&marker)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    assert_eq!(
        everything_echo(&http, &who, &sid, "before").await.status,
        200
    );
    let first = kill_the_server(&marker);
    // Calls fail while it is down, then succeed once it was started again.
    let mut answered = None;
    for _ in 0..120 {
        let r = everything_echo(&http, &who, &sid, "after").await;
        if r.json().pointer("/result/content/0/text").is_some() {
            answered = Some(r);
            break;
        }
        assert_eq!(
            r.error_code(),
            Some(-32603),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(answered.is_some(), "never served again");
    let second = pids_with(&marker);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "a new process");

    rt.drain(Duration::from_secs(2)).await.expect("drained");
    assert_eq!(pids_with(&marker), Vec::<u32>::new(), "stopped at shutdown");
}

/// The next message of `events`, which must be an update of `uri` (within 20 s: the server
/// sends one every 5 s).
async fn next_update(events: &mut Events, uri: &str) {
    let m = tokio::time::timeout(Duration::from_secs(20), futures::StreamExt::next(events))
        .await
        .expect("an update within 20 s")
        .expect("the stream stays open");
    assert_eq!(m["method"], "notifications/resources/updated", "{m}");
    assert_eq!(m["params"]["uri"], uri, "{m}");
}

/// A stdio server's `notifications/resources/updated` reaches the GET stream of the session
/// subscribed to that resource; after the server is killed and started again (a new MCP
/// session, without subscriptions), the runtime subscribes it again and the updates go on.
/// server-everything sends one at once when its `toggle-subscriber-updates` tool starts them,
/// then one every 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_servers_resource_updates_reach_subscribers_across_its_restarts() {
    const URI: &str = "demo://resource/dynamic/text/7";
    let marker = marker("updates");
    let rt = Sidecar::start(&catalog(&marker)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let mut events = standalone(&http, &who, &sid).await;
    let subscribed = http
        .send(&Call::post(&who, rpc(2, "resources/subscribe", json!({"uri": URI}))).session(&sid))
        .await
        .json();
    assert_eq!(subscribed["result"], json!({}), "{subscribed}");
    let toggle = || async {
        let r = http
            .send(
                &Call::post(
                    &who,
                    rpc(
                        3,
                        "tools/call",
                        json!({"name": "everything_toggle-subscriber-updates", "arguments": {}}),
                    ),
                )
                .session(&sid),
            )
            .await;
        r.json().pointer("/result/content/0/text").is_some()
    };
    assert!(toggle().await, "updates started");
    next_update(&mut events, URI).await;

    let first = kill_the_server(&marker);
    let mut served = false;
    for _ in 0..120 {
        if everything_echo(&http, &who, &sid, "again")
            .await
            .json()
            .pointer("/result/content/0/text")
            .is_some()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(served, "never served again");
    assert_ne!(pids_with(&marker), first, "a new process");
    // Whatever the old process sent is read before the new one's updates begin.
    while let Ok(Some(_)) = tokio::time::timeout(
        Duration::from_millis(300),
        futures::StreamExt::next(&mut events),
    )
    .await
    {}
    // The new process sends updates only for what its session subscribed to: they reach the
    // session only if the runtime subscribed the new session again.
    assert!(toggle().await, "updates started again");
    next_update(&mut events, URI).await;
}
