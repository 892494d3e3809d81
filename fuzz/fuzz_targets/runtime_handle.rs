//! `Runtime::handle`, the core's JSON-RPC entry point, with a catalog without upstreams and one
//! live session: any body, with or without the session, on `/mcp` or a scope, never panics,
//! always answers a known status, and every whole body it returns is empty or JSON.
//!
//! Input: byte 0 selects session/scope/protocol-version variants, the rest is the body.

#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcp_runtime_core::{
    AuthContext, Body, CatalogConfig, McpHeaders, Method, Request, Runtime, RuntimeConfig,
    Transport,
};

struct World {
    rt: tokio::runtime::Runtime,
    runtime: Arc<Runtime>,
    /// The live session; re-created after the fuzzed sessions are reaped.
    session: Mutex<String>,
}

fn request(headers: McpHeaders, server_id: Option<String>, body: Bytes) -> Request {
    Request {
        method: Method::Post,
        headers,
        server_id,
        request_id: None,
        auth: AuthContext::anonymous(),
        body,
        transport: Transport::Http,
        live_events: true,
    }
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio");
        let catalog = CatalogConfig::parse("").expect("empty catalog");
        // A zero idle TTL: `reap_idle_sessions` below ends every session, fuzzed or not.
        let config = RuntimeConfig {
            session_idle_ttl: Duration::ZERO,
            ..RuntimeConfig::default()
        };
        let runtime = Arc::new(rt.block_on(Runtime::start(&catalog, config)).expect("runtime"));
        let session = Mutex::new(initialize(&rt, &runtime));
        World {
            rt,
            runtime,
            session,
        }
    })
}

fn initialize(rt: &tokio::runtime::Runtime, runtime: &Arc<Runtime>) -> String {
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}"#;
    let out = rt.block_on(runtime.handle(request(
        McpHeaders::default(),
        None,
        Bytes::from_static(init),
    )));
    out.head.header("mcp-session-id").expect("session").to_owned()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let headers = McpHeaders {
        session_id: (sel & 1 == 1).then(|| w.session.lock().expect("lock").clone()),
        protocol_version: (sel & 2 == 2).then(|| "2025-06-18".to_owned()),
        accept: (sel & 4 == 4).then(|| "application/json, text/event-stream".to_owned()),
        last_event_id: None,
        ..McpHeaders::default()
    };
    let scope = (sel & 8 == 8).then(|| "nope".to_owned());
    let out = w.rt.block_on(
        w.runtime
            .handle(request(headers, scope, Bytes::copy_from_slice(body))),
    );
    assert!(
        matches!(out.head.status, 200 | 202 | 400 | 404 | 405 | 406 | 413),
        "status {}",
        out.head.status
    );
    if let Body::Full(b) = out.body
        && !b.is_empty()
    {
        serde_json::from_slice::<serde_json::Value>(&b).expect("answer is JSON");
    }
    // Sessions minted by fuzzed initialize calls are dropped again so memory stays flat.
    if w.runtime.health().open_sessions > 64 {
        std::thread::sleep(Duration::from_millis(2));
        w.runtime.reap_idle_sessions();
        *w.session.lock().expect("lock") = initialize(&w.rt, &w.runtime);
    }
});
