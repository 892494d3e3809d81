//! Per-call records for the core's metrics (ObservabilityService.RecordCalls), off the hot
//! path: a call hands its record to a bounded channel without waiting ([`Recorder::record`]);
//! one task ([`Recorder::run`]) sends them in batches of at most [`BATCH`] records, when a
//! batch is full or [`INTERVAL`] after its first record. A full channel, or a batch the core
//! does not take in time, is dropped and counted; the count goes with the next batch (`dropped`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use mcp_runtime_core::CallRecord;
use tokio::sync::mpsc;

/// Records waiting to be sent, at most.
pub(crate) const CHANNEL: usize = 4096;
/// Records per batch, at most.
pub(crate) const BATCH: usize = 256;
/// Longest wait from a batch's first record to its sending.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// One record as the Core SPI carries it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub(crate) subject_email: String,
    pub(crate) server_id: String,
    pub(crate) method: String,
    pub(crate) name: String,
    pub(crate) http_status: u32,
    pub(crate) jsonrpc_code: i32,
    pub(crate) duration_us: u64,
    pub(crate) request_id: String,
    pub(crate) started_at_unix_us: i64,
}

impl From<CallRecord> for Record {
    fn from(r: CallRecord) -> Self {
        Self {
            subject_email: r.subject_email,
            server_id: r.server_id.unwrap_or_default(),
            method: r.method,
            name: r.name,
            http_status: u32::from(r.http_status),
            jsonrpc_code: i32::try_from(r.jsonrpc_code).unwrap_or(i32::MIN),
            duration_us: u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
            request_id: r.request_id.unwrap_or_default(),
            started_at_unix_us: r
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        }
    }
}

/// The channel of records and the count of those dropped.
#[derive(Debug)]
pub(crate) struct Recorder {
    tx: mpsc::Sender<Record>,
    rx: Mutex<Option<mpsc::Receiver<Record>>>,
    dropped: AtomicU64,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues one record; drops (and counts) it when the channel is full.
    pub(crate) fn record(&self, record: CallRecord) {
        if self.tx.try_send(Record::from(record)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped and not yet reported.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends batches with `send` until the channel closes (a second call returns at once).
    /// `send` gets the batch and the dropped count; its failure drops and counts the batch.
    pub(crate) async fn run<F, Fut, E>(&self, send: F)
    where
        F: Fn(Vec<Record>, u64) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut rx) = rx else {
            return;
        };
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::with_capacity(BATCH);
            batch.push(first);
            let until = tokio::time::Instant::now() + INTERVAL;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) | Err(_) => break,
                }
            }
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            let n = batch.len() as u64;
            if let Err(e) = send(batch, dropped).await {
                tracing::debug!(error = %e, records = n, "call records dropped: the core did not take them");
                self.dropped.fetch_add(n + dropped, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::SystemTime;

    fn record(i: u16) -> CallRecord {
        CallRecord {
            subject_email: "a@x".into(),
            server_id: None,
            method: "tools/call".into(),
            name: "echo".into(),
            http_status: 200 + i,
            jsonrpc_code: 0,
            duration: Duration::from_micros(5),
            request_id: None,
            started_at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn a_full_channel_drops_and_counts_and_batches_carry_the_count() {
        let rec = Arc::new(Recorder::new());
        for i in 0..(CHANNEL + 3) {
            rec.record(record(u16::try_from(i % 100).unwrap()));
        }
        assert_eq!(rec.dropped(), 3);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let runner = {
            let rec = Arc::clone(&rec);
            tokio::spawn(async move {
                rec.run(|batch, dropped| {
                    let tx = tx.clone();
                    async move {
                        tx.send((batch.len(), dropped)).ok();
                        Ok::<_, String>(())
                    }
                })
                .await;
            })
        };
        let (first, dropped) = rx.recv().await.unwrap();
        assert_eq!((first, dropped), (BATCH, 3));
        let mut total = first;
        while total < CHANNEL {
            total += rx.recv().await.unwrap().0;
        }
        assert_eq!(total, CHANNEL);
        runner.abort();
    }
}
