//! The in-memory event history: one [`StreamLog`] per resumable stream, kept in its session
//! (so a stream can only ever be looked up under the session it belongs to), bounded by the
//! [`Retention`] (events per stream, age) and by [`MAX_LOGS_PER_SESSION`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::{Notify, mpsc};

use super::{EventId, Retention, unix_ms};
use crate::request::SseEvent;

/// Most stream logs one session keeps; past it the finished ones that ended first go. Logs of
/// streams still running are bounded by the subject's quota of calls in flight.
pub(crate) const MAX_LOGS_PER_SESSION: usize = 64;

/// One stored event: its position and its data (one JSON-RPC message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logged {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
    pub(crate) data: String,
}

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<Logged>,
    /// Highest seq appended (0: none yet).
    last_seq: u64,
    /// Unix ms of the last append (of the opening, before the first: [`StreamLog::new`]).
    last_ms: u64,
    /// The stream's last event (its answer) was appended.
    finished: bool,
}

/// The retained events of one stream, and a wake-up for the readers following it.
#[derive(Debug, Default)]
pub(crate) struct StreamLog {
    inner: Mutex<Inner>,
    appended: Notify,
}

/// What a reader finds after a position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// The events after it (possibly none yet), and whether the stream finished.
    Events(Vec<Logged>, bool),
    /// The position is not one this stream reached, or events after it were trimmed: a
    /// resumption could not be exact.
    Unknown,
}

impl StreamLog {
    /// An empty log, aged from now: [`prune`] must not take a stream opened a moment ago and
    /// not written to yet for one idle since 1970 (its events would go to a log nobody can
    /// find, and its resumption fail).
    pub(crate) fn new() -> Self {
        let log = Self::default();
        log.lock().last_ms = unix_ms();
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends an event at `(ms, seq)` (the writer's numbering, increasing), trims by
    /// `retention`, and wakes the readers. `end`: it is the stream's last event.
    pub(crate) fn append(&self, ms: u64, seq: u64, data: String, end: bool, retention: Retention) {
        {
            let mut inner = self.lock();
            inner.events.push_back(Logged { ms, seq, data });
            inner.last_seq = seq;
            inner.last_ms = ms;
            inner.finished |= end;
            trim(&mut inner.events, retention, unix_ms());
        }
        self.appended.notify_waiters();
    }

    /// The retained events after `seq` of a stream, or [`After::Unknown`] when `seq` is past
    /// the last event appended or events after it were trimmed.
    pub(crate) fn after(&self, seq: u64, retention: Retention) -> After {
        let mut inner = self.lock();
        trim(&mut inner.events, retention, unix_ms());
        if seq > inner.last_seq {
            return After::Unknown;
        }
        let first_retained = inner.events.front().map_or(inner.last_seq + 1, |e| e.seq);
        if first_retained > seq + 1 {
            return After::Unknown;
        }
        let events = inner
            .events
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect();
        After::Events(events, inner.finished)
    }

    /// Whether the stream finished, and the Unix ms of its last append.
    fn state(&self) -> (bool, u64) {
        let inner = self.lock();
        (inner.finished, inner.last_ms)
    }

    /// Sends the events after `from` into `tx` in order, then follows the stream live until its
    /// last event (or the reader goes away). The caller checked `from` with [`StreamLog::after`].
    pub(crate) async fn follow(
        &self,
        stream: &str,
        mut from: u64,
        retention: Retention,
        tx: mpsc::Sender<SseEvent>,
    ) {
        loop {
            // Registered before reading, so an append between the read and the wait wakes it.
            let appended = self.appended.notified();
            let After::Events(events, finished) = self.after(from, retention) else {
                return;
            };
            for e in events {
                from = e.seq;
                let id = EventId {
                    stream: stream.to_owned(),
                    ms: e.ms,
                    seq: e.seq,
                };
                let mut ev = SseEvent::message(e.data);
                ev.id = Some(id.to_string());
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            if finished {
                return;
            }
            tokio::select! {
                () = appended => {}
                () = tx.closed() => return,
            }
        }
    }
}

/// Drops the oldest events beyond the count and those older than the age.
fn trim(events: &mut VecDeque<Logged>, retention: Retention, now_ms: u64) {
    let age_ms = u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX);
    while events.len() > retention.max_events.max(1)
        || events
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.ms) > age_ms)
    {
        events.pop_front();
    }
}

/// Keeps a session's logs within [`MAX_LOGS_PER_SESSION`] and the age: drops the logs whose
/// last event is older than the age (finished or abandoned), then the finished ones that ended
/// first while there are too many. Called when a stream is added.
pub(crate) fn prune(logs: &mut HashMap<String, std::sync::Arc<StreamLog>>, retention: Retention) {
    let now = unix_ms();
    let age_ms = u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX);
    logs.retain(|_, log| now.saturating_sub(log.state().1) <= age_ms);
    while logs.len() > MAX_LOGS_PER_SESSION {
        let oldest = logs
            .iter()
            .filter_map(|(k, log)| {
                let (finished, last) = log.state();
                finished.then_some((last, k))
            })
            .min()
            .map(|(_, k)| k.clone());
        match oldest {
            Some(k) => {
                logs.remove(&k);
            }
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_log_opened_and_not_written_yet_is_kept() {
        let mut logs = HashMap::new();
        logs.insert("open".to_owned(), std::sync::Arc::new(StreamLog::new()));
        prune(&mut logs, retention(10, 300));
        assert!(logs.contains_key("open"));
    }

    fn retention(max_events: usize, age_s: u64) -> Retention {
        Retention {
            max_events,
            max_age: Duration::from_secs(age_s),
        }
    }

    fn seqs(after: &After) -> Vec<u64> {
        match after {
            After::Events(e, _) => e.iter().map(|e| e.seq).collect(),
            After::Unknown => panic!("unknown"),
        }
    }

    #[test]
    fn replay_is_exactly_the_events_after_the_position_in_order() {
        let r = retention(100, 300);
        let log = StreamLog::default();
        let now = unix_ms();
        for seq in 1..=5 {
            log.append(now, seq, format!("e{seq}"), seq == 5, r);
        }
        assert_eq!(seqs(&log.after(2, r)), [3, 4, 5]);
        assert_eq!(seqs(&log.after(5, r)), Vec::<u64>::new());
        assert!(matches!(log.after(5, r), After::Events(_, true)));
        // A position the stream never reached is not resumable.
        assert_eq!(log.after(6, r), After::Unknown);
    }

    #[test]
    fn count_retention_trims_the_oldest_and_a_position_before_them_is_refused() {
        let r = retention(3, 300);
        let log = StreamLog::default();
        let now = unix_ms();
        for seq in 1..=6 {
            log.append(now, seq, String::new(), false, r);
        }
        // 4, 5, 6 kept: resuming after 3 is exact, after 2 would skip 3.
        assert_eq!(seqs(&log.after(3, r)), [4, 5, 6]);
        assert_eq!(log.after(2, r), After::Unknown);
        assert!(matches!(log.after(6, r), After::Events(e, false) if e.is_empty()));
    }

    #[test]
    fn age_retention_trims_old_events() {
        let r = retention(100, 60);
        let log = StreamLog::default();
        let now = unix_ms();
        log.append(now - 120_000, 1, String::new(), false, r);
        log.append(now - 90_000, 2, String::new(), false, r);
        log.append(now, 3, String::new(), false, r);
        assert_eq!(seqs(&log.after(2, r)), [3]);
        assert_eq!(log.after(1, r), After::Unknown);
    }

    #[test]
    fn a_session_keeps_a_bounded_number_of_finished_logs() {
        let r = retention(10, 300);
        let mut logs = HashMap::new();
        let now = unix_ms();
        for i in 0..(MAX_LOGS_PER_SESSION as u64 + 10) {
            let log = std::sync::Arc::new(StreamLog::default());
            log.append(now + i, 1, String::new(), true, r);
            logs.insert(format!("{i:016x}"), log);
        }
        // A running stream is never pruned.
        let running = std::sync::Arc::new(StreamLog::default());
        running.append(now, 1, String::new(), false, r);
        logs.insert("running".to_owned(), running);
        prune(&mut logs, r);
        assert!(logs.len() <= MAX_LOGS_PER_SESSION);
        assert!(logs.contains_key("running"));
        // The ones that ended first went.
        assert!(!logs.contains_key(&format!("{:016x}", 0)));
    }

    #[tokio::test]
    async fn follow_replays_then_continues_live_until_the_last_event() {
        let r = retention(100, 300);
        let log = std::sync::Arc::new(StreamLog::default());
        let now = unix_ms();
        for seq in 1..=3 {
            log.append(now, seq, format!("e{seq}"), false, r);
        }
        let (tx, mut rx) = mpsc::channel(8);
        let reader = {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move { log.follow("0123456789abcdef", 1, r, tx).await })
        };
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(rx.recv().await.unwrap());
        }
        log.append(now, 4, "e4".into(), false, r);
        log.append(now, 5, "e5".into(), true, r);
        while let Some(ev) = rx.recv().await {
            got.push(ev);
        }
        reader.await.unwrap();
        let data: Vec<_> = got.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["e2", "e3", "e4", "e5"]);
        assert_eq!(
            got[0].id.as_deref(),
            Some(format!("0123456789abcdef-{now}-2").as_str())
        );
    }
}
