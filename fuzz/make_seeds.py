"""Writes the seed corpus of the fuzz targets (fuzz/seeds/<target>/) from the bodies the
integration tests send (crates/mcp-runtime/tests/it/cases.rs, tests/it/bad_input.rs) and
protobuf envelopes around them. Run from fuzz/: python3 make_seeds.py"""

import base64
import json
import os

BODIES = [
    b"", b"{not json", b"42", b"null", b"[]", b'"ping"', b" \r\n",
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
    b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{}}',
    b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
    b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}',
    b'{"jsonrpc":"2.0","id":1,"result":{}}',
    b'{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}',
    b'{"jsonrpc":"1.0","id":1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":null,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"result":{},"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xff"}}',
    b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"},"_meta":{"progressToken":"t"}}}',
    b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":[]}}',
    b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"\\ud800"},"_meta":{"progressToken":1.5}}}',
    b'{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"fixture://a"}}',
    b'{"jsonrpc":"2.0","id":5,"method":"prompts/get","params":{"name":"p"}}',
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}',
    b'{"jsonrpc":"2.0","id":6,"method":"resources/templates/list"}',
    b'{"jsonrpc":"2.0","id":7,"method":"prompts/list"}',
    b'{"jsonrpc":"2.0","id":8,"method":"server/discover"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 200 + b"]" * 200 + b"}",
]


def varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num: int, wire: int, payload: "int | bytes") -> bytes:
    key = varint(num << 3 | wire)
    if wire == 0:
        assert isinstance(payload, int)
        return key + varint(payload)
    assert isinstance(payload, bytes)
    return key + varint(len(payload)) + payload


def envelope(method: int, body: bytes, scope: int, session: bytes) -> bytes:
    auth = field(1, 2, b"alice@example.com") + field(3, 0, scope) + field(4, 2, b"alpha")
    headers = field(1, 2, session) + field(3, 2, b"application/json, text/event-stream")
    env = field(1, 0, method) + field(2, 2, headers) + field(5, 2, auth) + field(6, 2, body)
    return field(1, 2, env)  # InvokeRequest.envelope


def write(target: str, name: str, data: bytes) -> None:
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data)


for i, body in enumerate(BODIES):
    write("jsonrpc_parse", f"body{i:02}", body)
    for sel in (0, 1, 5, 9):
        write("runtime_handle", f"body{i:02}_{sel}", bytes([sel]) + body)
    write("envelope_decode", f"env{i:02}", envelope(1 + i % 3, body, 1 + i % 3, b"s" * (i % 5)))
write("envelope_decode", "unknown_enums", envelope(42, b"{}", 9, b""))
write("envelope_decode", "empty", b"")
auth = json.dumps({"email": "a@b", "is_admin": False, "teams": ["t"], "token_exp": 1}).encode()
write("envelope_decode", "auth_b64", base64.urlsafe_b64encode(auth).rstrip(b"="))
write("envelope_decode", "auth_json", auth)
