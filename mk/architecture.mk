# The structural invariants of docs/ARCHITECTURE.md that the compiler does not enforce, each a
# check that fails when it breaks (all in `make test` through `architecture-check`).
#
# core-deps           no transport crate is a direct normal dependency of the core: axum, tonic,
#                     hyper, prost, http, tower, or a crate of their families (axum-core,
#                     hyper-util, http-body, tonic-prost, prost-types, ...). The core takes one
#                     typed Request and returns one typed Outcome; only the adapters in
#                     crates/mcp-runtime know a wire format. Direct dependencies only
#                     (--depth 1): reqwest and rmcp, the core's upstream client, bring http and
#                     hyper in transitively, which is not the core speaking a transport.
# grpc-never-http     the gRPC adapter (transport/grpc.rs) names no HTTP server or client crate
#                     (axum, hyper, reqwest, tower's oneshot) and not the HTTP adapter: it calls
#                     Runtime::handle itself and never re-encodes a request as HTTP.
# grpc-cfg-at-edge    `feature = "grpc-uds"` appears in crates/mcp-runtime/src only in the files
#                     at the edge (lib.rs, server.rs, transport.rs, main.rs, and policy.rs, which
#                     picks the Core SPI client's transport) and nowhere in the core; the tests
#                     may use it.
# public-never-trusts the public endpoint of edge mode (transport/public.rs) never reads the
#                     internal AuthContext header: it names neither `AUTH_CONTEXT_HEADER`,
#                     `x-contextforge-auth-context` nor the header's decoders; its caller is the
#                     policy core's answer.
# listeners-from-top  no adapter or core module binds a socket: crates/mcp-runtime/src binds only
#                     in socket.rs (called by main.rs and the tests); the core's src binds only
#                     in its unit tests (the embedded fixture upstream).

CORE_FORBIDDEN := ^(axum|tonic|hyper|prost|http|tower)([-_][A-Za-z0-9_-]+)? v
RUNTIME_SRC := crates/mcp-runtime/src
CORE_SRC := crates/mcp-runtime-core/src

.PHONY: architecture-check core-deps grpc-never-http grpc-cfg-at-edge listeners-from-top \
	public-never-trusts

core-deps:
	@deps=$$($(CARGO) tree -p mcp-runtime-core -e normal --all-features --depth 1 --prefix none) \
		|| { echo "core-deps: cargo tree failed"; exit 1; }; \
	bad=$$(printf '%s\n' "$$deps" | grep -E '$(CORE_FORBIDDEN)'); \
	if [ -n "$$bad" ]; then \
		echo "core-deps broken: transport crates are direct dependencies of mcp-runtime-core:"; \
		printf '%s\n' "$$bad"; exit 1; \
	else echo "core-deps ok: no transport crate among mcp-runtime-core's direct dependencies"; fi

grpc-never-http:
	@if grep -nE '\b(axum|hyper|reqwest)\b|oneshot|(super|transport|crate::transport)::http' \
		$(RUNTIME_SRC)/transport/grpc.rs; then \
		echo "grpc-never-http broken: the gRPC adapter uses an HTTP crate or the HTTP adapter"; exit 1; \
	else echo "grpc-never-http ok: transport/grpc.rs uses no HTTP crate and not the HTTP adapter"; fi

grpc-cfg-at-edge:
	@bad=$$(grep -rlE 'feature *= *"grpc-uds"' $(RUNTIME_SRC) $(CORE_SRC) \
		| grep -vxE '$(RUNTIME_SRC)/(lib|server|transport|main|policy)\.rs'); \
	if [ -n "$$bad" ]; then \
		echo "grpc-cfg-at-edge broken: the grpc-uds feature is named outside the edge files:"; \
		printf '%s\n' "$$bad"; exit 1; \
	else echo "grpc-cfg-at-edge ok: the grpc-uds feature is named only in lib.rs, server.rs, transport.rs, main.rs, policy.rs"; fi

public-never-trusts:
	@if grep -nE 'AUTH_CONTEXT_HEADER|x-contextforge-auth-context[^`]|decode_auth_context|auth_context\(' \
		$(RUNTIME_SRC)/transport/public.rs | grep -v '^[0-9]*: *//'; then \
		echo "public-never-trusts broken: the public endpoint reads the internal AuthContext header"; exit 1; \
	else echo "public-never-trusts ok: transport/public.rs never reads the internal AuthContext header"; fi

listeners-from-top:
	@bad=$$( { grep -rnE '(Unix|Tcp)Listener::bind|UnixDatagram::bind' $(RUNTIME_SRC) \
			| grep -v '^$(RUNTIME_SRC)/socket\.rs:'; \
		grep -rnE '(Unix|Tcp)Listener::bind' $(CORE_SRC) \
			| while IFS=: read -r f n _; do \
				sed -n "1,$${n}p" "$$f" | grep -q '#\[cfg(test)\]' || echo "$$f:$$n"; done; } ); \
	if [ -n "$$bad" ]; then \
		echo "listeners-from-top broken: a socket is bound outside socket.rs (or outside the core's tests):"; \
		printf '%s\n' "$$bad"; exit 1; \
	else echo "listeners-from-top ok: sockets are bound only in socket.rs and by the tests"; fi

architecture-check: core-deps grpc-never-http grpc-cfg-at-edge listeners-from-top public-never-trusts

# Run first in `make test` (seconds, no build): a structural break fails before any compile.
rust-lint: architecture-check
