# The runtime core (crates/mcp-runtime-core) and its one structural invariant.
#
# core-deps  fails when a transport crate is a direct normal dependency of the core: axum,
#            tonic, hyper, prost, http, tower, or a crate of their families (axum-core,
#            hyper-util, http-body, tonic-prost, prost-types, ...). The core takes one typed
#            Request and returns one typed Outcome; only the adapters in crates/mcp-runtime know
#            a wire format. Direct dependencies only (--depth 1): reqwest and rmcp, the core's
#            upstream client, bring http and hyper in transitively, which is not the core
#            speaking a transport.

CORE_FORBIDDEN := ^(axum|tonic|hyper|prost|http|tower)([-_][A-Za-z0-9_-]+)? v

.PHONY: core-deps

core-deps:
	@deps=$$($(CARGO) tree -p mcp-runtime-core -e normal --all-features --depth 1 --prefix none) \
		|| { echo "core-deps: cargo tree failed"; exit 1; }; \
	bad=$$(printf '%s\n' "$$deps" | grep -E '$(CORE_FORBIDDEN)'); \
	if [ -n "$$bad" ]; then \
		echo "core-deps broken: transport crates are direct dependencies of mcp-runtime-core:"; \
		printf '%s\n' "$$bad"; exit 1; \
	else echo "core-deps ok: no transport crate among mcp-runtime-core's direct dependencies"; fi

TEST_EXTRA += core-deps
