//! SIGHUP reloads the catalog file of the runtime process: an upstream added, one removed,
//! one kept with its session and a call in flight; the sessions with a GET stream get
//! `notifications/tools/list_changed`; a bad new catalog is refused with one log line and the
//! old one stays.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::runtime_proc::RuntimeProc;
use crate::support::*;

/// Writes `catalog` over the runtime's catalog file and sends it SIGHUP.
fn reload(rt: &RuntimeProc, catalog: &str) {
    std::fs::write(rt.dir.path().join("catalog.toml"), catalog).expect("write catalog");
    let status = Command::new("kill")
        .args(["-HUP", &rt.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The tool names `who` lists in session `sid`.
async fn tool_names(http: &Http, who: &Value, sid: &str) -> Vec<String> {
    let list = http
        .send(&Call::post(who, rpc(7, "tools/list", json!({}))).session(sid))
        .await
        .json();
    let mut names: Vec<String> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// The lines of the log file at `path` that contain `words`, once there is at least one
/// (polled; panics after 30 s).
fn log_lines(path: &std::path::Path, words: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains(words))
            .map(str::to_owned)
            .collect();
        if !lines.is_empty() {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with `{words}`:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_catalog_and_keeps_what_stays() {
    let (a, b, c) = (Fixture::start(), Fixture::start(), Fixture::start());
    let upstream = |id: &str, url: &str, prefix: &str| {
        format!("[[upstreams]]\nid = \"{id}\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n\n")
    };
    let first = upstream("a", &a.url, "") + &upstream("b", &b.url, "b_");
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("runtime.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let rt = RuntimeProc::start_logged(&first, &[], &[("MCP_RUNTIME_LOG", "info")], Some(log));
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&alice, None).await;
    let mut get = Call::bodyless("GET", &alice, &sid);
    get.accept = Some("text/event-stream".into());
    let mut events = events_of(http.open(&get).await);
    assert!(
        tool_names(&http, &alice, &sid)
            .await
            .contains(&"b_echo".to_owned())
    );

    // A call to the upstream that stays, in flight across the reload.
    let sleeping = http.spawn(sleep_call(&alice, &sid, 50, 60_000));
    http.until_inflight(&alice, &sid, 1, Duration::from_secs(10))
        .await;

    // `a` stays, `b` goes, `c` comes.
    reload(
        &rt,
        &(upstream("a", &a.url, "") + &upstream("c", &c.url, "c_")),
    );
    let m = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("a notification within 30 s")
        .expect("the stream stays open");
    assert_eq!(m["method"], "notifications/tools/list_changed", "{m}");
    let names = tool_names(&http, &alice, &sid).await;
    assert!(
        names.contains(&"c_echo".to_owned())
            && names.contains(&"echo".to_owned())
            && !names.iter().any(|n| n.starts_with("b_")),
        "{names:?}"
    );
    let line = log_lines(&log_path, "catalog reloaded");
    assert!(
        line[0].contains("\"c\"") && line[0].contains("\"b\""),
        "{line:?}"
    );
    // The session and the call of the upstream that stayed are still there.
    assert_eq!(http.inflight(&alice, &sid).await, 1);
    assert!(!sleeping.is_finished());
    let r = http
        .send(
            &Call::post(
                &alice,
                rpc(
                    9,
                    "tools/call",
                    json!({"name": "c_echo", "arguments": {"text": "hi"}}),
                ),
            )
            .session(&sid),
        )
        .await
        .json();
    assert_eq!(r["result"]["content"][0]["text"], "hi", "{r}");

    // A bad catalog (two upstreams exposing `echo`) is refused in one line; the old stays.
    reload(
        &rt,
        &(upstream("a", &a.url, "") + &upstream("c", &c.url, "")),
    );
    let refused = log_lines(&log_path, "catalog reload refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("echo"), "{refused:?}");
    assert_eq!(tool_names(&http, &alice, &sid).await, names);
    assert_eq!(http.inflight(&alice, &sid).await, 1);
    // So is a file that is not TOML.
    reload(&rt, "[[upstreams]\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_lines(&log_path, "catalog reload refused").len() < 2 {
        assert!(Instant::now() < deadline, "second refusal not logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tool_names(&http, &alice, &sid).await, names);
    sleeping.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_replaces_the_upstream_at_sighup() {
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        mcp_fixture_server::SharedState::new(0).with_required_header("x-key", "new-key"),
    );
    let catalog = format!(
        "[[upstreams]]\nid = \"keyed\"\nurl = \"{}\"\nrequired = false\n\
         headers = {{ X-Key = {{ file = \"key\" }} }}\n",
        fx.url
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("runtime.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // The key file sits beside the catalog file (the runtime's temp dir): written before the
    // start through a first catalog without the upstream, then the real one is reloaded.
    let rt = RuntimeProc::start_logged("", &[], &[("MCP_RUNTIME_LOG", "info")], Some(log));
    std::fs::write(rt.dir.path().join("key"), "old-key\n").expect("key");
    reload(&rt, &catalog);
    log_lines(&log_path, "catalog reloaded");
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&alice, None).await;
    assert_eq!(tool_names(&http, &alice, &sid).await, Vec::<String>::new());
    // The same catalog, the file rotated: the upstream is replaced and now listed.
    std::fs::write(rt.dir.path().join("key"), "new-key\n").expect("key");
    reload(&rt, &catalog);
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_lines(&log_path, "catalog reloaded").len() < 2 {
        assert!(Instant::now() < deadline, "second reload not logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        tool_names(&http, &alice, &sid)
            .await
            .contains(&"echo".to_owned())
    );
}

/// A listen stream subscribed to a resource of an upstream that SIGHUP replaces (its entry
/// changed: a header added) goes on hearing its updates: the new upstream's session is
/// subscribed to what has subscribers, as a new session of the same upstream is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_goes_on_when_its_upstream_is_replaced_at_sighup() {
    const WATCHED: &str = "test://watched-resource";
    let fx = Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        mcp_fixture_server::SharedState::new(0).with_conformance(),
    );
    let catalog = format!("[[upstreams]]\nid = \"conf\"\nurl = \"{}\"\n", fx.url);
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("runtime.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let rt = RuntimeProc::start_logged(&catalog, &[], &[("MCP_RUNTIME_LOG", "info")], Some(log));
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let listen = modern(
        &alice,
        1,
        "subscriptions/listen",
        json!({"notifications": {"resourceSubscriptions": [WATCHED]}}),
    );
    let mut events = events_of(http.open(&listen).await);
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a message within 10 s")
            .expect("the stream stays open")
    };
    let ack = next().await;
    assert_eq!(
        ack["params"]["notifications"]["resourceSubscriptions"],
        json!([WATCHED]),
        "{ack}"
    );
    assert_eq!(next().await["method"], "notifications/resources/updated");
    reload(
        &rt,
        &format!("{catalog}headers = {{ X-Extra = \"replaced\" }}\n"),
    );
    log_lines(&log_path, "catalog reloaded");
    // What the old upstream sent may still be on its way: skipped for a second, then an
    // update the new upstream sent.
    let skip_until = Instant::now() + Duration::from_secs(1);
    loop {
        let m = next().await;
        assert_eq!(m["method"], "notifications/resources/updated", "{m}");
        if Instant::now() > skip_until {
            break;
        }
    }
}
