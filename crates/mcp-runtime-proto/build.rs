//! Compiles `proto/mcp/runtime/v1/runtime.proto` and `proto/mcp/core/v1/core.proto` (the Core
//! SPI, which imports the former) with protox (no system `protoc`) and generates prost messages
//! plus tonic client and server code, and a file descriptor set of the runtime contract for
//! reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let runtime = root.join("mcp/runtime/v1/runtime.proto");
    let core = root.join("mcp/core/v1/core.proto");
    for file in [&runtime, &core] {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection on the runtime's socket describes the runtime contract only.
    let runtime_fds = protox::compile([&runtime], [&root])?;
    std::fs::write(
        out.join("mcp_runtime_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&runtime_fds),
    )?;
    // Both packages in one run: `mcp.core.v1` refers to `mcp.runtime.v1.AuthContext` as
    // `super::super::runtime::v1::AuthContext`, so the modules nest as in lib.rs.
    let fds = protox::compile([&runtime, &core], [&root])?;
    std::fs::write(
        out.join("mcp_core_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`: bodies of up to 64 MiB are sliced, not copied.
        .bytes(".")
        // tonic-prost's codec with buffer settings a process may set (src/codec.rs).
        .codec_path("crate::codec::BufferedCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
