//! Benchmarks of the MCP runtime sidecar and its boundaries, all layers in one run.
//!
//! One run measures, with the modes interleaved in rounds (the mode order rotates every
//! round) and reported as medians and per-round ratios:
//!
//! 1. the kernel floor: raw ping-pong over Unix stream socket pairs (no protocol at all);
//! 2. a Rust client calling the runtime's `ping` and `tools/list` over each adapter: HTTP/JSON
//!    (hyper, HTTP/1.1 keep-alive) and gRPC (tonic `Invoke`), at several concurrency levels;
//! 3. the Python hop: `bench/pyhop.py` spawned once per row (httpx, aiohttp, grpc.aio calling
//!    the runtime over its sockets), its JSON row read back;
//! 4. this program's MCP client straight to the fixture upstream (no gateway, no runtime),
//!    the reference of the breakdown and of the progress notification latency;
//! 5. end to end through the Python gateway (`python -m mcp_gateway serve`, one process per
//!    mode: Python baseline, HTTP/JSON, gRPC, with one and with two uvicorn workers) against
//!    the same runtime and fixture, driven by this program's MCP client over TCP (a session
//!    per worker).
//!
//! Each row reports requests/s, latency percentiles, errors, and the CPU time per request and
//! peak RSS of every process involved, read from `/proc`. The run starts the fixture upstream,
//! the runtime and the gateways itself and stops them at the end, also on error. Without a
//! usable `.venv` the Python layers are skipped with a note in the report.
//!
//! # Layout
//!
//! - `cli.rs`: the command line, turned into a [`bench::Config`]; writes the outputs;
//!   [`cli::ProgramArgs`], the options naming the programs under test, shared with
//!   `mcp-soak`.
//! - `bench.rs`: one run: the shared processes and the layers up, rounds of rows, everything
//!   down, the report.
//! - `run.rs`: the [`run::Run`] the layers share: processes, Python environment, rows,
//!   notes.
//! - `layer.rs`: the [`layer::Layer`] interface, the list of layers and what measuring a row
//!   takes; one file per layer under `layer/`:
//!   - `floor.rs`: the kernel floor ping-pong;
//!   - `runtime.rs`: Rust clients to the runtime over HTTP/JSON and gRPC, and to the build
//!     without `grpc-uds`;
//!   - `python_hop.rs`: `bench/pyhop.py` rows (Python clients to the runtime);
//!   - `state.rs`: the runtime with its state in memory, one replica on Redis and three
//!     replicas on Redis (each request to the next), over HTTP/JSON;
//!   - `upstream.rs`: straight to the fixture upstream (no gateway, no runtime);
//!   - `gateway.rs`: end to end through the gateway in each mode, one and two workers.
//! - `harness.rs`: starting and stopping the fixture and the runtime (drop guards).
//! - `python.rs`: the virtual environment and the gateway processes.
//! - `client.rs`: workloads, response checks and the concurrent load driver;
//!   `client/http.rs` (hyper) and `client/grpc.rs` (tonic) are the two runtime clients,
//!   `client/mcp.rs` the end-to-end MCP client of the gateway, `client/h1.rs` the HTTP/1.1
//!   connection (hyper) the HTTP clients share.
//! - `proc.rs`: CPU time and RSS from `/proc` (single processes or process trees), the
//!   machine description.
//! - `stats.rs`: latency histograms (HdrHistogram) and medians.
//! - `report.rs`: rows, metrics, comparisons; JSON, Markdown and SVG renderings.
//! - `soak.rs`: the soak run (`mcp-soak`, `make soak`): mixed traffic through the gateway
//!   for minutes, errors, p99 per window, RSS growth.
//! - `analysis.rs`: the targets, progress latency, breakdown, zero-overhead and two-worker
//!   sections, derived from the rows of the same report.

pub mod analysis;
pub mod bench;
pub mod cli;
pub mod client;
pub mod harness;
pub mod layer;
pub mod proc;
pub mod python;
pub mod report;
pub mod run;
pub mod soak;
pub mod stats;
