//! The gRPC envelope: protobuf decoding of `InvokeRequest` and `CloseSessionRequest` (prost,
//! as tonic does it) and of the fields the adapter reads, then the HTTP adapter's AuthContext
//! header (base64url of JSON, `mcp_runtime::decode_auth_context`). Never panics; whatever
//! decodes re-encodes and decodes equal.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use mcp_runtime::decode_auth_context;
use mcp_runtime_proto::v1 as pb;
use prost::Message as _;

const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = pb::InvokeRequest::decode(data) {
        let again = pb::InvokeRequest::decode(req.encode_to_vec().as_slice()).expect("round trip");
        assert_eq!(req, again);
        if let Some(env) = req.envelope {
            let _ = pb::HttpMethod::try_from(env.method);
            if let Some(a) = env.auth {
                let _ = pb::TeamScope::try_from(a.team_scope);
            }
            let _ = mcp_runtime_core::jsonrpc::parse(&env.body);
        }
    }
    let _ = pb::CloseSessionRequest::decode(data);
    // The header value as sent, and the same bytes base64url-encoded so that the JSON decoding
    // behind the base64 step is reached too.
    let _ = decode_auth_context(data);
    let _ = decode_auth_context(B64.encode(data).as_bytes());
});
