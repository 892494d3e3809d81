//! Upstreams that need credentials: fixture servers that answer 401 without a header, reached
//! with the catalog's `headers` and `bearer` whose values come from files (the environment
//! form is run through the real binary in `python/tests/test_upstream_transports.py`). A
//! credential is never in an error.

use crate::sidecar::Sidecar;
use crate::support::*;
use mcp_fixture_server::SharedState;
use mcp_runtime_core::{CatalogConfig, Runtime, RuntimeConfig};
use serde_json::json;

const API_KEY: &str = "key-7f3c9a0e51d2";
const TOKEN: &str = "token-0b8e44c2d9a1";

fn guarded(name: &str, value: &str) -> Fixture {
    Fixture::start_with(
        "127.0.0.1:0".parse().expect("address"),
        SharedState::new(0).with_required_header(name, value),
    )
}

/// Two upstreams, one needing `x-api-key`, one a bearer token, their values in files of
/// `dir` (`key` and `token`, written with a trailing line break as editors do).
fn catalog(dir: &std::path::Path, keyed: &Fixture, bearer: &Fixture) -> String {
    format!(
        "[[upstreams]]\nid = \"keyed\"\nurl = \"{}\"\nprefix = \"k_\"\nheaders = {{ X-Api-Key = {{ file = \"{}\" }} }}\n\n\
         [[upstreams]]\nid = \"bearer\"\nurl = \"{}\"\nprefix = \"b_\"\nbearer = {{ file = \"{}\" }}\n",
        keyed.url,
        dir.join("key").display(),
        bearer.url,
        dir.join("token").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_bearer_tokens_from_files_reach_the_upstream() {
    let (keyed, bearer) = (
        guarded("x-api-key", API_KEY),
        guarded("authorization", &format!("Bearer {TOKEN}")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key"), format!("{API_KEY}\n")).expect("key");
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("token");
    let rt = Sidecar::start(&catalog(dir.path(), &keyed, &bearer)).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    for name in ["k_echo", "b_echo"] {
        let r = http
            .send(
                &Call::post(
                    &who,
                    rpc(
                        2,
                        "tools/call",
                        json!({"name": name, "arguments": {"text": name}}),
                    ),
                )
                .session(&sid),
            )
            .await;
        assert_eq!(
            r.json().pointer("/result/content/0/text"),
            Some(&json!(name)),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_fails_the_start_without_showing_it() {
    let (keyed, bearer) = (
        guarded("x-api-key", API_KEY),
        guarded("authorization", &format!("Bearer {TOKEN}")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong_key = "wrong-key-5e0d7b";
    let wrong_token = "wrong-token-93aa1f";
    std::fs::write(dir.path().join("key"), wrong_key).expect("key");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let text = catalog(dir.path(), &keyed, &bearer);
    let err = Runtime::start(
        &CatalogConfig::parse(&text).expect("catalog"),
        RuntimeConfig::default(),
    )
    .await
    .expect_err("401 at start");
    let err = err.to_string();
    assert!(err.contains("keyed") && err.contains("401"), "{err}");
    assert!(!err.contains(wrong_key) && !err.contains(API_KEY), "{err}");

    std::fs::write(dir.path().join("key"), API_KEY).expect("key");
    std::fs::write(dir.path().join("token"), wrong_token).expect("token");
    let err = Runtime::start(
        &CatalogConfig::parse(&text).expect("catalog"),
        RuntimeConfig::default(),
    )
    .await
    .expect_err("401 at start")
    .to_string();
    assert!(err.contains("bearer") && err.contains("401"), "{err}");
    assert!(!err.contains(wrong_token) && !err.contains(TOKEN), "{err}");
}
