//! Generated Rust types of the `mcp.runtime.v1` contract (`proto/mcp/runtime/v1/runtime.proto`)
//! and of the Core SPI `mcp.core.v1` (`proto/mcp/core/v1/core.proto`).
//!
//! Messages come from prost, clients and servers from tonic. The runtime contract is documented
//! in `docs/contract.md`, the Core SPI in `docs/core-spi.md`; every element carries its comment
//! from the proto file. The packages nest as their names do ([`mcp::runtime::v1`],
//! [`mcp::core::v1`]), so the Core SPI's messages use the runtime's `AuthContext`; [`v1`] is
//! `mcp::runtime::v1` under its older path.

pub mod codec;

/// The packages under `mcp`.
pub mod mcp {
    /// Package prefix `mcp.runtime`.
    pub mod runtime {
        /// Package `mcp.runtime.v1`: the runtime contract.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("mcp.runtime.v1");
        }
    }
    /// Package prefix `mcp.core`.
    pub mod core {
        /// Package `mcp.core.v1`: the Core SPI (AuthPolicyService, PluginService,
        /// ObservabilityService).
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("mcp.core.v1");
        }
    }
}

pub use mcp::runtime::v1;

/// Encoded `FileDescriptorSet` of the runtime contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mcp_runtime_v1_descriptor.bin"));

/// Encoded `FileDescriptorSet` of the Core SPI (with the runtime contract it imports), for
/// reflection of a Core SPI server.
pub const CORE_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mcp_core_v1_descriptor.bin"));
