//! A stdio upstream writing an endless line: the runtime caps the line (its message limit plus
//! 1 MiB), says why in its log, stops the server and starts it again, and its memory stays
//! bounded while it does; the other upstream is served throughout.

use std::time::{Duration, Instant};

use crate::runtime_proc::{RuntimeProc, rss_kib};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_line_is_cut_and_the_server_started_again() {
    let fx = Fixture::start();
    let catalog = format!(
        "[[upstreams]]\nid = \"fixture\"\nurl = \"{}\"\n\n\
         [[upstreams]]\nid = \"endless\"\ntransport = \"stdio\"\ncommand = \"sh\"\n\
         args = [\"-c\", \"yes | tr -d '\\\\n'\"]\nprefix = \"endless_\"\nrequired = false\n",
        fx.url
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("runtime.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let rt = RuntimeProc::start_logged(
        &catalog,
        &["--max-message-bytes", "1048576"],
        &[("MCP_RUNTIME_LOG", "info")],
        Some(log),
    );
    // Started again at least three times, each time for the same reason.
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = "the server wrote a line longer than 2097152 bytes";
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.lines().filter(|l| l.contains(reason)).count() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no three restarts logged:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A few buffers of the cap, not the gigabytes the server wrote.
    let rss = rss_kib(rt.pid()).expect("rss");
    assert!(rss < 256 * 1024, "runtime RSS {rss} KiB");
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    assert_eq!(http.send(&ping(&who, 1, &sid)).await.status, 200);
}
