//! Boundary micro-benchmarks of the MCP runtime sidecar.
//!
//! One run measures, with the modes interleaved in rounds and reported as medians and
//! per-round ratios:
//!
//! 1. the kernel floor: raw ping-pong over Unix stream socket pairs (no protocol at all);
//! 2. a Rust client calling the runtime's `ping` and `tools/list` over each adapter: HTTP/JSON
//!    (hyper, HTTP/1.1 keep-alive) and gRPC (tonic `Invoke`), at several concurrency levels.
//!
//! Each row reports requests/s, latency percentiles, errors, and the CPU time per request of
//! every process involved, read from `/proc`. The run starts the fixture upstream and the
//! runtime itself and stops them at the end, also on error.
//!
//! # Layout
//!
//! - `cli.rs`: the command line, turned into a [`bench::Config`].
//! - `bench.rs`: one run: processes up, rounds of rows, processes down, the report.
//! - `harness.rs`: starting and stopping the fixture and the runtime (drop guards).
//! - `floor.rs`: the kernel floor ping-pong.
//! - `client.rs`: workloads, response checks and the concurrent load driver;
//!   `client/http.rs` (hyper) and `client/grpc.rs` (tonic) are the two clients.
//! - `proc.rs`: CPU time and RSS from `/proc`, the machine description.
//! - `stats.rs`: latency histograms (HdrHistogram) and medians.
//! - `report.rs`: rows, metrics, comparisons; JSON and Markdown renderings.

pub mod bench;
pub mod cli;
pub mod client;
pub mod floor;
pub mod harness;
pub mod proc;
pub mod python;
pub mod report;
pub mod stats;
