//! `mcp-bench`: boundary micro-benchmarks of the MCP runtime. See the library crate
//! (`mcp_bench`) for what is measured and how.

use std::process::ExitCode;

fn main() -> ExitCode {
    match mcp_bench::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
