# ContextForge, the gateway this project exists to improve on, as an optional peer of the
# benchmark (issue 19 item 2). Not in `make test`.
#
# contextforge       installs mcp-contextforge-gateway $(CONTEXTFORGE_VERSION) (pure Python, needs
#                    Python >= 3.12) into a venv of its own, $(CONTEXTFORGE_VENV) (git-ignored under
#                    target/); idempotent (a stamp file). Python 3.12 is looked up as
#                    $(CONTEXTFORGE_PYTHON), else `python3.12` on PATH, else pyenv's newest 3.12.
# contextforge-test  starts ContextForge through bench/contextforge.py (stateless and stateful)
#                    in front of the fixture and makes one tools/call through the official
#                    `mcp` client (python/tests/test_contextforge.py; the test skips itself when
#                    the venv is missing, so `make python-test` does not need it).
#
# bench-contextforge ContextForge alone beside the proxied gateway modes (python, http,
#                    http-httpx, grpc), on the profile's durations and concurrencies: mcp-bench
#                    --contextforge-only (no floor, runtime, Python-hop, direct, two-worker or
#                    edge rows). Results in bench/results/<UTC>-contextforge/.
#
# `make bench BENCH_PROFILE=full` needs `contextforge` and adds its rows (modes `contextforge`
# and `contextforge-stateful` of the gateway layer, --contextforge-python); the quick profile
# leaves them out.

CONTEXTFORGE_VERSION := 1.1.0
CONTEXTFORGE_VENV := target/contextforge-venv
CONTEXTFORGE_PY := $(CONTEXTFORGE_VENV)/bin/python
CONTEXTFORGE_PYTHON ?=

.PHONY: contextforge contextforge-test bench-contextforge

# The first candidate that runs and is >= 3.12 (a pyenv shim of a version not selected fails).
$(CONTEXTFORGE_VENV)/.installed-$(CONTEXTFORGE_VERSION):
	@py=""; for c in $(CONTEXTFORGE_PYTHON) python3.12 \
		$$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.12*/bin/python 2>/dev/null | sort -rV); do \
		if "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then py=$$c; break; fi; done; \
	if [ -z "$$py" ]; then \
		echo "contextforge: Python >= 3.12 not found (set CONTEXTFORGE_PYTHON=/path/to/python3.12, put python3.12 on PATH, or install it with pyenv)"; exit 1; fi; \
	echo "contextforge: $$py ($$("$$py" --version))"; \
	rm -rf $(CONTEXTFORGE_VENV) && "$$py" -m venv $(CONTEXTFORGE_VENV)
	$(CONTEXTFORGE_PY) -m pip install --quiet --upgrade pip
	$(CONTEXTFORGE_PY) -m pip install --quiet 'mcp-contextforge-gateway==$(CONTEXTFORGE_VERSION)'
	touch $@

contextforge: $(CONTEXTFORGE_VENV)/.installed-$(CONTEXTFORGE_VERSION)

contextforge-test: contextforge python-build python-binaries
	cd python && MCP_BIN_DIR=$(CURDIR)/$(PYBIN) MCP_CONTEXTFORGE_PYTHON=$(CURDIR)/$(CONTEXTFORGE_PY) \
		../$(VENV)/bin/pytest -q tests/test_contextforge.py

bench-contextforge: contextforge python-build
	@test -n "$(BENCH_ARGS_$(BENCH_PROFILE))" || { echo "BENCH_PROFILE must be quick or full"; exit 2; }
	$(CARGO) build --release -p mcp-runtime --features grpc-uds -p mcp-fixture-server -p mcp-bench
	@ts=$$(date -u +%Y%m%dT%H%M%SZ); out=bench/results/$$ts-contextforge; mkdir -p $$out; \
	./target/release/mcp-bench $(BENCH_ARGS_$(BENCH_PROFILE)) --python $(CURDIR)/$(VPY) \
		--contextforge-only --contextforge-python $(CURDIR)/$(CONTEXTFORGE_PY) \
		--gateway-modes python,http,http-httpx,grpc \
		--repo-root $(CURDIR) --out-dir $$out && \
	echo "results: $$out/ (profile $(BENCH_PROFILE), ContextForge beside the proxied modes)"
