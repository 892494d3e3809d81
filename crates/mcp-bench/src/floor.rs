//! The kernel floor: raw ping-pong over connected Unix stream socket pairs, in-process.
//!
//! Each of `concurrency` pairs has an echo thread and a client thread using blocking
//! `std::os::unix::net::UnixStream` I/O: the client writes `payload_bytes`, the echo thread
//! reads them all and writes them back, the client reads them all. No framing, no parsing, no
//! async runtime: what remains is what the kernel and two wake-ups cost, the lower bound of
//! any request/response protocol over such a socket.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::client::{LoadResult, Stop, Tickets};
use crate::stats::Latencies;

/// Runs the ping-pong with `concurrency` pairs until `stop`.
///
/// # Errors
///
/// The first I/O error of any pair (creating the socket pair or a read or write).
///
/// # Panics
///
/// When a ping-pong thread panics.
pub fn run(payload_bytes: usize, concurrency: usize, stop: Stop) -> io::Result<LoadResult> {
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
        notifications: crate::stats::Latencies::new(),
        latencies,
        requests,
        errors: 0,
        elapsed: std::time::Duration::ZERO,
        response_bytes: len,
        first_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trips() {
        let r = run(64, 2, Stop::Requests(100)).unwrap();
        assert_eq!(r.requests, 100);
        assert_eq!(r.latencies.len(), 100);
        let r = run(64 * 1024, 1, Stop::Requests(10)).unwrap();
        assert_eq!(r.requests, 10);
    }
}
