# The contract as a product (issue 7, issue 14): buf checks of proto/ and the TypeScript client.
# proto/ holds two packages, each with its own version and its own append-only images:
# mcp.runtime.v1 (CONTRACT_VERSION, contract/images/mcp.runtime.v1.<minor>.json) and mcp.core.v1,
# the Core SPI (CORE_SPI_VERSION, contract/images/mcp.core.v1.<minor>.json); both constants are
# in crates/mcp-runtime-core/src/lib.rs.
#
# contract-check  buf lint (STANDARD) on proto/; for each package, buf breaking of it (--path)
#                 against every released image of it (one per v1 minor, append-only) and the
#                 image of its current version equals the package as built now; plus
#                 contract/check.test.mjs, which copies proto/, makes breaking, lint-violating
#                 and additive edits to either package and shows that the check fails on each
#                 (docs/contract.md and docs/core-spi.md, "Versioning").
# contract-image  records the image of each package whose current version has none yet (bump
#                 the minor first; a released image is never rewritten).
# ts-test         the TypeScript client of McpRuntime (clients/ts): code generated from proto/ by
#                 buf with protoc-gen-es, type-checked, then run against a real runtime over its
#                 gRPC Unix socket with the shared vectors (contract/vectors/boundary.json).
#
# Tools come from npm, pinned by clients/ts/package-lock.json (npm ci): @bufbuild/buf,
# @bufbuild/protoc-gen-es, typescript, tsx, @grpc/grpc-js, @bufbuild/protobuf.

TS_DIR := clients/ts
TS_MODULES := $(TS_DIR)/node_modules
BUF := $(CURDIR)/$(TS_MODULES)/.bin/buf
TS_GEN := $(TS_DIR)/src/gen

.PHONY: ts-deps contract-check contract-image ts-generate ts-test

$(TS_MODULES)/.installed: $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

ts-deps: $(TS_MODULES)/.installed

contract-check: ts-deps
	BUF=$(BUF) node contract/check.mjs
	BUF=$(BUF) node --test contract/

contract-image: ts-deps
	BUF=$(BUF) node contract/check.mjs --write-image

$(TS_GEN)/.generated: $(TS_MODULES)/.installed $(TS_DIR)/buf.gen.yaml proto/mcp/runtime/v1/runtime.proto \
		proto/mcp/core/v1/core.proto
	rm -rf $(TS_GEN)
	cd $(TS_DIR) && $(BUF) generate ../../proto --template buf.gen.yaml
	touch $@

ts-generate: $(TS_GEN)/.generated

ts-test: ts-generate python-binaries
	cd $(TS_DIR) && node_modules/.bin/tsc --noEmit -p .
	cd $(TS_DIR) && MCP_BIN_DIR=$(CURDIR)/$(PYBIN) node --import tsx --test test/*.test.ts

TEST_EXTRA += contract-check ts-test
