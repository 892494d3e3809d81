//! Generated Rust types of the `mcp.runtime.v1` contract (`proto/mcp/runtime/v1/runtime.proto`).
//!
//! Messages come from prost, the `McpRuntime` client and server from tonic. The contract itself
//! is documented in `docs/contract.md`; every element carries its comment from the proto file.

/// Package `mcp.runtime.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("mcp.runtime.v1");
}

/// Encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mcp_runtime_v1_descriptor.bin"));
