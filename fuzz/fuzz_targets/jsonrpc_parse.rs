//! `jsonrpc::parse`, the core's framing of one incoming body: never panics; a request it
//! accepts has a string or number id; an error always maps to a JSON-RPC code.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_runtime_core::jsonrpc::{self, Incoming};

fuzz_target!(|data: &[u8]| {
    match jsonrpc::parse(data) {
        Ok(Incoming::Request { id, .. }) => {
            let first = id.get().as_bytes()[0];
            assert!(first == b'"' || first == b'-' || first.is_ascii_digit(), "id {}", id.get());
            let body = jsonrpc::error_body(Some(&id), jsonrpc::INVALID_REQUEST, "x");
            serde_json::from_slice::<serde_json::Value>(&body).expect("error body is JSON");
        }
        Ok(Incoming::Notification { .. } | Incoming::Response { .. }) => {}
        Err(e) => assert!(matches!(e.code(), jsonrpc::PARSE_ERROR | jsonrpc::INVALID_REQUEST)),
    }
});
