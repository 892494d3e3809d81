//! The kernel floor: raw ping-pong over connected Unix stream socket pairs, in-process.
//!
//! Each of `concurrency` pairs has an echo thread and a client thread using blocking
//! `std::os::unix::net::UnixStream` I/O: the client writes `payload_bytes`, the echo thread
//! reads them all and writes them back, the client reads them all. No framing, no parsing, no
//! async runtime: what remains is what the kernel and two wake-ups cost, the lower bound of
//! any request/response protocol over such a socket. Rows: layer `floor`, one per message
//! size and concurrency, the client's own CPU only.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Entry, Layer, metrics};
use crate::bench::Config;
use crate::client::{LoadResult, Stop, Tickets};
use crate::proc::{CpuMeter, ProcTarget};
use crate::report::RowKey;
use crate::run::Run;
use crate::stats::Latencies;

/// The kernel floor in the list of layers (no ratios).
pub const LAYER: Entry = Entry {
    name: "floor",
    start: |_| {
        Ok(Box::new(Floor {
            meter: CpuMeter::new(vec![("client".to_owned(), ProcTarget::this())]),
        }))
    },
    ratios: &[],
};

/// The floor layer's options.
#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// Message sizes of the kernel floor rows, in bytes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "64,65536")]
    pub floor_payloads: Vec<usize>,

    /// Skip the kernel floor rows.
    #[arg(long)]
    pub no_floor: bool,
}

/// The floor layer: the client process's CPU is the only one involved.
#[derive(Debug)]
struct Floor {
    meter: CpuMeter,
}

impl Layer for Floor {
    fn round(&mut self, run: &mut Run<'_>) -> anyhow::Result<()> {
        let cfg = run.cfg;
        for &payload in &cfg.floor.floor_payloads {
            for &c in &cfg.concurrency {
                let key = RowKey {
                    layer: LAYER.name.to_owned(),
                    transport: "uds-stream".to_owned(),
                    client: "std threads".to_owned(),
                    workload: "ping-pong".to_owned(),
                    concurrency: c,
                    payload_bytes: payload,
                };
                run_pairs(payload, c, Stop::Requests(cfg.warmup))
                    .context("kernel floor warm-up")?;
                let before = self.meter.start();
                let result = run_pairs(payload, c, cfg.stop).context("kernel floor")?;
                run.record(key, metrics(&result, &self.meter, &before));
            }
        }
        Ok(())
    }

    fn settings(&self, cfg: &Config, settings: &mut BTreeMap<String, Value>) {
        settings.insert("floor_payloads".to_owned(), json!(cfg.floor.floor_payloads));
    }
}

/// Runs the ping-pong with `concurrency` pairs until `stop`.
///
/// # Errors
///
/// The first I/O error of any pair (creating the socket pair or a read or write).
///
/// # Panics
///
/// When a ping-pong thread panics.
pub fn run_pairs(payload_bytes: usize, concurrency: usize, stop: Stop) -> io::Result<LoadResult> {
    let pairs = (0..concurrency.max(1))
        .map(|_| UnixStream::pair())
        .collect::<io::Result<Vec<_>>>()?;
    let tickets = Tickets::new(stop);
    let start = Instant::now();
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .into_iter()
            .map(|(client, server)| {
                s.spawn(move || echo(server, payload_bytes));
                let tickets = &tickets;
                s.spawn(move || ping(client, payload_bytes, tickets))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a ping-pong thread panicked"))
            .collect::<Vec<_>>()
    });
    let mut total = LoadResult::default();
    for r in results {
        total.merge(&r?);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// Echoes messages of `len` bytes until the peer closes its end.
fn echo(mut sock: UnixStream, len: usize) {
    let mut buf = vec![0u8; len];
    while sock.read_exact(&mut buf).is_ok() {
        if sock.write_all(&buf).is_err() {
            break;
        }
    }
}

/// Sends messages of `len` bytes and waits for each echo; closes the socket at the end, which
/// ends the echo thread.
fn ping(mut sock: UnixStream, len: usize, tickets: &Tickets) -> io::Result<LoadResult> {
    let msg = vec![0x5a_u8; len];
    let mut buf = vec![0u8; len];
    let mut latencies = Latencies::new();
    let mut requests = 0;
    while tickets.take() {
        let t0 = Instant::now();
        sock.write_all(&msg)?;
        sock.read_exact(&mut buf)?;
        latencies.record(t0.elapsed());
        requests += 1;
    }
    Ok(LoadResult {
        latencies,
        requests,
        response_bytes: len,
        ..LoadResult::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trips() {
        let r = run_pairs(64, 2, Stop::Requests(100)).unwrap();
        assert_eq!(r.requests, 100);
        assert_eq!(r.latencies.len(), 100);
        let r = run_pairs(64 * 1024, 1, Stop::Requests(10)).unwrap();
        assert_eq!(r.requests, 10);
    }
}
