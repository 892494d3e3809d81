//! The adapters: each translates its wire form into one core request and back.

#[cfg(feature = "grpc-uds")]
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod public;
