//! The memory of open sessions, read from the runtime process: 1,000 sessions opened, each
//! still working, the RSS before and after reported.

use serde_json::json;

use crate::runtime_proc::{RuntimeProc, rss_kib};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_sessions_rss_is_reported() {
    let fx = Fixture::start();
    // One subject holds them all: above the default per-subject cap.
    let rt = RuntimeProc::start(
        &simple_catalog(&fx.url),
        &["--max-sessions-per-subject", "1000"],
    );
    let pid = rt.pid();
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let before = rss_kib(pid).expect("VmRSS");
    let mut sids = Vec::new();
    for _ in 0..1000 {
        sids.push(http.initialize(&who, None).await);
    }
    let (_, health) = http.health().await;
    assert_eq!(health["open_sessions"], json!(1000));
    let after = rss_kib(pid).expect("VmRSS");
    eprintln!(
        "runtime RSS: {before} KiB with no session, {after} KiB with 1,000 open sessions ({} bytes per session)",
        (after.saturating_sub(before)) * 1024 / 1000
    );
    // Every session still works.
    for (i, sid) in sids.iter().enumerate().step_by(97) {
        let r = http.send(&ping(&who, i as i64, sid)).await;
        assert_eq!(r.status, 200);
    }
}
