//! Per-subject limits: a subject holds at most `--max-sessions-per-subject` open sessions;
//! the `initialize` beyond it is answered 429 with a JSON-RPC error and `Retry-After`, on
//! both adapters, while other subjects are not affected and an ended session frees its slot.

use serde_json::json;

use crate::sidecar::{Options, Sidecar};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_beyond_the_per_subject_session_cap_is_429() {
    let fx = Fixture::start();
    let options = Options {
        max_sessions_per_subject: 3,
        ..Options::default()
    };
    let rt = Sidecar::with(&simple_catalog(&fx.url), options).await;
    let http = Http::new(&rt.http);
    let alice = auth("alice@example.com", false, Some(&[]));
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(http.initialize(&alice, None).await);
    }
    // A scoped session counts too: the cap is per subject, not per endpoint.
    let mut scoped = Call::post(&alice, initialize_body());
    scoped.path_server = Some("echo-only".into());
    for r in [
        http.send(&Call::post(&alice, initialize_body())).await,
        http.send(&scoped).await,
    ] {
        assert_eq!(r.status, 429, "{:?}", r.body);
        assert_eq!(r.session_id, None);
        assert_eq!(r.retry_after.as_deref(), Some("60"));
        assert_eq!(r.error_code(), Some(-32000));
        let message = r.json()["error"]["message"].clone();
        assert_eq!(
            message,
            json!(
                "Too many sessions: this subject already holds the limit of 3 open sessions; \
                 end one (DELETE) or let idle ones expire"
            )
        );
        // The error answers the request: its id.
        assert_eq!(r.json()["id"], json!(0));
    }
    #[cfg(feature = "grpc-uds")]
    {
        let mut g = grpc::connect(&rt.grpc).await;
        let r = grpc::send(&mut g, &Call::post(&alice, initialize_body())).await;
        assert_eq!(
            (r.status, r.retry_after.as_deref(), r.error_code()),
            (429, Some("60"), Some(-32000))
        );
    }
    // Another subject is not affected; alice's sessions all still work.
    let bob = auth("bob@example.com", false, Some(&[]));
    http.initialize(&bob, None).await;
    for (i, sid) in sids.iter().enumerate() {
        assert_eq!(http.send(&ping(&alice, i as i64, sid)).await.status, 200);
    }
    // Ending one frees its slot.
    let del = http.send(&Call::bodyless("DELETE", &alice, &sids[0])).await;
    assert_eq!(del.status, 200);
    http.initialize(&alice, None).await;
    assert_eq!(http.health().await.1["open_sessions"], json!(4));
}
