# Hardening (issue 6): fuzzing of the runtime's input decoding, and the soak runs.
#
# cargo-fuzz is installed from the crate registry into target/tools (cache that directory in
# CI); the fuzz crate (fuzz/, outside the workspace) builds with `--sanitizer none`, which works
# on the stable toolchain. Inputs libFuzzer finds go to fuzz/corpus/<target>/ (git-ignored);
# the committed seeds are fuzz/seeds/<target>/ (python3 fuzz/make_seeds.py); crashes land in
# fuzz/artifacts/<target>/ and each one found becomes a regression test.

CARGO_FUZZ := $(CURDIR)/target/tools/bin/cargo-fuzz
FUZZ_TARGETS := jsonrpc_parse envelope_decode runtime_handle
FUZZ_SECS ?= 60

.PHONY: fuzz-tools fuzz-smoke fuzz-long soak soak-abuse soak-runtime redis-memory soak-replicas

$(CARGO_FUZZ):
	$(CARGO) install --locked --root $(CURDIR)/target/tools cargo-fuzz

fuzz-tools: $(CARGO_FUZZ)

# One minute per target (in make test). Fails on any crash, leak-free panic or timeout.
fuzz-smoke: fuzz-tools
	cd fuzz && $(CARGO_FUZZ) build --sanitizer none
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t; \
		echo "fuzz $$t for $(FUZZ_SECS) s"; \
		$(CARGO_FUZZ) run --sanitizer none $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECS) -max_len=65536 -timeout=10 -print_final_stats=1 \
			> target/fuzz-$$t.log 2>&1; rc=$$?; \
		grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' target/fuzz-$$t.log; \
		if [ $$rc -ne 0 ]; then tail -n 40 target/fuzz-$$t.log; echo "fuzz $$t failed: see fuzz/artifacts/$$t/"; exit 1; fi; \
	done

# The documented long run: FUZZ_SECS per target (default here 1 hour), e.g.
# `make fuzz-long FUZZ_LONG_SECS=28800` for a night.
FUZZ_LONG_SECS ?= 3600
fuzz-long:
	$(MAKE) fuzz-smoke FUZZ_SECS=$(FUZZ_LONG_SECS)

# The soak run (not in make test): SOAK_SECS (default 600) per socket mode of mixed MCP traffic
# at concurrency 64 through the gateway (fresh fixture, runtime and gateway per mode; release
# build); prints req/s, p50/p99, errors and the RSS of every process per 30 s window and
# writes bench/results/soak-<UTC>/soak.{md,json}. Fails when a target is missed (an error, or a
# process growing by more than 10% after the first window). SOAK_MODES=python,http,grpc adds
# the Python baseline.
SOAK_SECS ?= 600
SOAK_MODES ?= http,grpc
soak: python-build
	$(CARGO) build --release -p mcp-runtime --features grpc-uds -p mcp-fixture-server -p mcp-bench
	@ts=$$(date -u +%Y%m%dT%H%M%SZ); out=bench/results/soak-$$ts; \
	./target/release/mcp-soak --secs $(SOAK_SECS) --modes $(SOAK_MODES) \
		--python $(CURDIR)/$(VPY) --repo-root $(CURDIR) --out-dir $$out; rc=$$?; \
	echo "results: $$out/"; exit $$rc

# The soak beside an abusive subject (issue 13): each of SOAK_MODES twice on fresh processes,
# quiet and then with a second, public-only subject that opens more sessions, GET streams and
# in-flight calls than its per-subject caps allow plus large results (mcp-soak --abuser).
# Fails when the normal traffic beside the abuser has an error or a p99 above 2x the quiet
# run's. SOAK_SECS defaults to 180 here (4 runs of 3 minutes for two modes).
soak-abuse: SOAK_SECS = 180
soak-abuse: python-build
	$(CARGO) build --release -p mcp-runtime --features grpc-uds -p mcp-fixture-server -p mcp-bench
	@ts=$$(date -u +%Y%m%dT%H%M%SZ); out=bench/results/soak-abuse-$$ts; \
	./target/release/mcp-soak --abuser --secs $(SOAK_SECS) --warmup-secs 30 --modes $(SOAK_MODES) \
		--python $(CURDIR)/$(VPY) --repo-root $(CURDIR) --out-dir $$out; rc=$$?; \
	echo "results: $$out/"; exit $$rc

# The same mix straight at the runtime's two sockets from Rust clients (no gateway):
# crates/mcp-runtime/tests/process/soak.rs (an ignored test of the process suite),
# SOAK_SECS per socket.
soak-runtime:
	$(CARGO) build --release -p mcp-fixture-server
	SOAK_SECS=$(SOAK_SECS) $(CARGO) test --release -p mcp-runtime --features grpc-uds --test process \
		-- --ignored --nocapture soak::soak_mixed

TEST_EXTRA += fuzz-smoke

# Redis memory per session (issue 15): one runtime on a fresh redis-server opens
# REDIS_MEMORY_SESSIONS sessions (default 10,000, 100 subjects) and prints Redis's used_memory
# per session, then waits for the idle TTL (REDIS_MEMORY_TTL_S, default 30) and fails unless
# every key it made is gone (tests/process/replicas.rs, ignored in make test).
REDIS_MEMORY_SESSIONS ?= 10000
REDIS_MEMORY_TTL_S ?= 30
redis-memory: redis-check
	$(CARGO) build --release -p mcp-fixture-server
	REDIS_MEMORY_SESSIONS=$(REDIS_MEMORY_SESSIONS) REDIS_MEMORY_TTL_S=$(REDIS_MEMORY_TTL_S) \
		$(CARGO) test --release -p mcp-runtime --features grpc-uds --test process \
		-- --ignored --nocapture redis_memory

# The replica soak (issue 15): three runtimes on one redis-server, CLIENTS clients (default 8)
# streaming the fixture's progress tool round robin over them, one replica SIGKILLed and started
# again on its sockets every KILL_EVERY seconds (default 10) for DURATION seconds (default 60);
# cut streams are resumed on another replica with Last-Event-ID. Prints calls started, completed
# and failed (by error), events expected, received, lost and duplicated; fails when an event is
# lost or duplicated or a call fails that was not in flight on a killed replica
# (tests/process/replicas/soak.rs; a 12 s variant runs in make test).
DURATION ?= 60
KILL_EVERY ?= 10
CLIENTS ?= 8
soak-replicas: redis-check
	REPLICA_SOAK_SECS=$(DURATION) REPLICA_SOAK_KILL_EVERY_S=$(KILL_EVERY) REPLICA_SOAK_CLIENTS=$(CLIENTS) \
		$(CARGO) test --release -p mcp-runtime --features grpc-uds --test process \
		-- --ignored --nocapture --exact replicas::soak::soak_replicas
