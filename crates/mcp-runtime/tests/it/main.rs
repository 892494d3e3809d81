//! The in-process suite: the runtime served through the library's [`mcp_runtime::Server`] on
//! real Unix sockets in a temp dir, the fixture upstream embedded on a loopback port, all in
//! this one test binary (helpers compiled once). What needs a process of its own (signals,
//! exit codes, peer credentials, socket files) is in `tests/process`.

#[path = "../support/mod.rs"]
pub mod support;

mod sidecar;

mod admission;
mod bad_input;
mod cases;
mod faults;
mod health;
mod http_semantics;
#[cfg(feature = "grpc-uds")]
mod parity;
mod upstream;
mod visibility;
