# Operations (issue 18, docs/operations.md): what metrics, request logs and tracing cost the
# gateway. Not part of `make test` (speed is measured, never asserted).
#
# bench-ops     bench/ops_cost.py end to end: the fixture, the runtime and one gateway per
#               variant (off, metrics, logs, tracing, tracing-10pct, all), rounds rotated;
#               requests/s and the gateway's CPU per request, medians with min and max.
# bench-ops-app bench/ops_cost.py --in-process: the gateway's ASGI app alone over a backend
#               that answers at once, the variants taking turns every 100 requests.
# OPS_ARGS passes more options (for example OPS_ARGS="--rounds 9 --variants off,metrics").

OPS_ARGS ?=

.PHONY: bench-ops bench-ops-app

bench-ops: python-build python-binaries
	$(VPY) bench/ops_cost.py --bin-dir $(CURDIR)/$(PYBIN) $(OPS_ARGS)

bench-ops-app: python-build
	$(VPY) bench/ops_cost.py --in-process $(OPS_ARGS)
