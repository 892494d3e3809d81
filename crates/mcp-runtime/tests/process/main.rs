//! The process suite: what needs the `mcp-runtime` binary as a process of its own: signals
//! and exit codes (SIGTERM drain, grace period), socket files, peer credentials (`setpriv`),
//! startup errors, the RSS of the runtime process, and the ignored soak run
//! (`make soak-runtime`). The fixture upstream is embedded in this process. Everything else
//! runs in process in `tests/it`.

#[path = "../support/mod.rs"]
pub mod support;

mod runtime_proc;

mod peer_creds;
mod sessions;
mod shutdown;
mod soak;
mod sockets;
