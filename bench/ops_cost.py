"""What metrics, request logs and tracing cost the gateway's hot path (issue 18).

Starts the fixture upstream, the runtime (both sockets) and one gateway per variant, all in the
same mode (``--mode``, default ``grpc``), then measures each variant in rounds, the variants
rotated every round (A B C, B C A, ...), and prints one JSON object per variant plus a Markdown
table. Variants (``docs/operations.md``):

- ``off``: ``MCP_GATEWAY_LOG_LEVEL=warning``: no metrics, no request log line, no tracing (the
  endpoint runs without an observer at all);
- ``metrics``: ``off`` plus ``MCP_GATEWAY_METRICS_LISTEN`` (scraped once per round, after it is
  measured, so the scrape is not in the measurement);
- ``logs``: ``MCP_GATEWAY_LOG_LEVEL=info`` and ``MCP_GATEWAY_LOG_FORMAT=json``: one line per
  request to a file;
- ``tracing``: ``off`` plus ``OTEL_EXPORTER_OTLP_ENDPOINT`` at a sink process that answers every
  OTLP/HTTP export 200 and drops it (every request sampled: one span each);
- ``tracing-10pct``: ``tracing`` with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` and
  ``OTEL_TRACES_SAMPLER_ARG=0.1`` (one request in ten recorded and exported);
- ``all``: metrics, logs and tracing (every request) together.

Each measurement: ``--concurrency`` asyncio workers in this process, each with its own
keep-alive connection (aiohttp) and its own MCP session, send ``tools/call echo`` (100 bytes)
for ``--duration-s`` seconds after ``--warmup-s`` seconds of warm-up. Reported per variant: the
median requests/s over the rounds with its min and max, and the gateway's CPU time per request
(``utime + stime`` of ``/proc/PID/stat`` across the measured phase, in microseconds) likewise:
with the load generator, the runtime and the gateway sharing a small machine, requests/s moves
with everything else running, while the gateway's CPU per request is what the variant adds.
``cost_pct`` compares each variant's medians with ``off``'s.

``--in-process`` measures the gateway's ASGI app alone instead, in this process: the real
app of ``create_app`` (authentication, the endpoint, the concurrency limit, the observer) in
front of a backend that answers every call with the same small JSON result at once, called
``--requests`` times per round with the ASGI messages of a ``tools/call``; reported is the CPU
time per request (``time.process_time``, every thread of the process: the span exporter's and
the log handler's included). Nothing else runs in the measured loop, so a loaded machine moves
it much less than the end-to-end rows; it is the gateway's own cost of each variant. The spans
go to the same sink process, the log lines to a file. ``--profile VARIANT`` then runs that
variant under cProfile and prints the functions with the most own time.

``--profile VARIANT`` (end to end) also records the gateway of that variant with py-spy for one measurement
(``--profile-out``, py-spy's raw collapsed stacks) and prints the functions with the most
samples (own time).

Usage::

    .venv/bin/python bench/ops_cost.py [--bin-dir target/release] [--mode grpc|http|python]
        [--rounds 5] [--duration-s 5] [--warmup-s 1] [--concurrency 8]
        [--variants off,metrics,logs,tracing,all] [--profile VARIANT]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from mcp_gateway import mint_token
from mcp_gateway.testing import free_port, start_fixture, start_gateway, start_runtime, stop, write_catalog

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
VARIANTS = ("off", "metrics", "logs", "tracing", "tracing-10pct", "all")
BATCH = 100
"""``--in-process``: requests of one variant before the next variant's turn."""
TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")

SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""


def cpu_us(pid: int) -> float:
    """``utime + stime`` of ``pid`` in microseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_US


def variant_env(variant: str, metrics_port: int, sink: str, logdir: Path) -> dict[str, str]:
    env = {"MCP_GATEWAY_LOG_LEVEL": "warning"}
    if variant in ("metrics", "all"):
        env["MCP_GATEWAY_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
    if variant in ("logs", "all"):
        env.update(MCP_GATEWAY_LOG_LEVEL="info", MCP_GATEWAY_LOG_FORMAT="json")
    if variant in ("tracing", "tracing-10pct", "all"):
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink, OTEL_SERVICE_NAME=f"bench-{variant}")
    if variant == "tracing-10pct":
        env.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.1")
    return env


async def open_session(http: aiohttp.ClientSession, url: str, token: str) -> dict[str, str]:
    headers = {"authorization": f"Bearer {token}", "accept": ACCEPT, "content-type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "ops", "version": "1"},
        },
    }
    async with http.post(url, json=init, headers=headers) as r:
        assert r.status == 200, await r.text()
        session = r.headers["mcp-session-id"]
        await r.read()
    headers = {**headers, "mcp-session-id": session, "mcp-protocol-version": PROTOCOL}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    async with http.post(url, json=note, headers=headers) as r:
        assert r.status == 202
    return headers


async def load(
    url: str, token: str, concurrency: int, warmup_s: float, duration_s: float, pid: int
) -> dict[str, Any]:
    """Run the workload; returns requests, errors, seconds and the gateway's CPU microseconds."""
    text = "x" * 100
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}},
        }
    ).encode()
    counts = {"ok": 0, "errors": 0}
    phase = {"measuring": False, "stop": False}

    async def worker() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as http:
            headers = await open_session(http, url, token)
            while not phase["stop"]:
                async with http.post(url, data=body, headers=headers) as r:
                    data = await r.read()
                ok = r.status == 200 and b'"result"' in data
                if phase["measuring"]:
                    counts["ok" if ok else "errors"] += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_s)
    cpu0, t0 = cpu_us(pid), time.perf_counter()
    phase["measuring"] = True
    await asyncio.sleep(duration_s)
    phase["measuring"] = False
    cpu1, t1 = cpu_us(pid), time.perf_counter()
    phase["stop"] = True
    await asyncio.gather(*tasks)
    requests = counts["ok"] + counts["errors"]
    return {
        "requests": requests,
        "errors": counts["errors"],
        "seconds": t1 - t0,
        "rps": requests / (t1 - t0),
        "gateway_cpu_us_per_request": (cpu1 - cpu0) / max(requests, 1),
    }


@contextlib.contextmanager
def processes(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        os.environ["MCP_BIN_DIR"] = str(args.bin_dir)
        fixture, fixture_url = start_fixture(log=workdir / "fixture.log")
        started.append(fixture)
        catalog = write_catalog(workdir / "catalog.toml", fixture_url)
        http_uds, grpc_uds = str(workdir / "rt-http.sock"), str(workdir / "rt-grpc.sock")
        runtime = start_runtime(catalog, http_uds, grpc_uds, log=workdir / "runtime.log")
        started.append(runtime)
        sink_port = free_port()
        sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)])
        started.append(sink)
        secret = "bench-ops-secret-0123456789abcdef"
        gateways: dict[str, dict[str, Any]] = {}
        for variant in args.variants:
            env = {
                "JWT_SECRET_KEY": secret,
                "MCP_RUNTIME_CATALOG": str(catalog),
                **variant_env(variant, free_port(), f"http://127.0.0.1:{sink_port}", workdir),
            }
            if args.mode == "grpc":
                env["MCP_RUST_GRPC_UDS"] = grpc_uds
            elif args.mode == "http":
                env["MCP_RUST_UDS"] = http_uds
            port = free_port()
            process = start_gateway(env, port, log=workdir / f"gateway-{variant}.log")
            started.append(process)
            gateways[variant] = {"process": process, "url": f"http://127.0.0.1:{port}/mcp", "env": env}
        yield {
            "gateways": gateways,
            "token": mint_token(secret, "bench@example.com", teams=None, is_admin=True),
        }
    finally:
        for process in reversed(started):
            stop(process)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def top_functions(raw: Path, limit: int = 25) -> list[tuple[str, float]]:
    """Own-time share of each function in py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] += int(count)
        total += int(count)
    return [(name, 100 * n / total) for name, n in own.most_common(limit)]


class CannedBackend:
    """A backend answering every request with one small JSON result at once (``--in-process``)."""

    BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"' + b"x" * 100 + b'"}]}}'

    async def handle(self, request: Any) -> Any:
        from mcp_gateway._backend import McpResponse

        return McpResponse(status=200, headers=[("content-type", "application/json")], body=self.BODY)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def health(self) -> Any:
        from mcp_gateway._backend import RuntimeHealth

        return RuntimeHealth(reachable=True, status="serving")


def in_process_app(variant: str, sink: str, logfile: Path) -> Any:
    """The gateway app of ``variant`` over :class:`CannedBackend`, logging set for the variant."""
    from mcp_gateway._app import create_app
    from mcp_gateway._metrics import GatewayMetrics
    from mcp_gateway._settings import Settings
    from mcp_gateway._telemetry import tracing_from_env

    _configure_logs(variant, logfile.parent)
    settings = Settings(jwt_secret="bench-ops-secret-0123456789abcdef", grpc_uds="/nonexistent")
    metrics = GatewayMetrics("grpc") if variant in ("metrics", "all") else None
    env = variant_env(variant, 0, sink, logfile.parent)
    # The SDK reads its sampler from os.environ when the provider is made.
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("OTEL_TRACES_SAMPLER")})
    try:
        tracing = tracing_from_env("bench-ops", env)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return create_app(settings, CannedBackend(), metrics=metrics, tracing=tracing), tracing  # type: ignore[arg-type]


async def drive(app: Any, requests: int, token: str, warmup: int = 50) -> float:
    """Send ``requests`` ``tools/call`` requests through ``app``; CPU seconds per request."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x" * 100}},
        }
    ).encode()
    headers = [
        (b"host", b"127.0.0.1:4444"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        (b"accept", ACCEPT.encode()),
        (b"mcp-session-id", b"0123456789abcdef0123456789abcdef"),
        (b"mcp-protocol-version", PROTOCOL.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/mcp", "raw_path": b"/mcp", "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 4444),
    }  # fmt: skip
    sent: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    async def one() -> None:
        delivered = False
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        await app(dict(scope), receive, send)
        done.set()

    for _ in range(warmup):
        await one()
    sent.clear()
    cpu0 = time.process_time()
    for _ in range(requests):
        await one()
    cpu = time.process_time() - cpu0
    assert sent == [200] * requests, sent[:3]
    return cpu / requests


async def in_process(args: argparse.Namespace) -> int:
    import cProfile
    import pstats

    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)])
    workdir = Path(tempfile.mkdtemp(prefix="ops-cost-"))
    token = mint_token("bench-ops-secret-0123456789abcdef", "bench@example.com", teams=None, is_admin=True)
    apps = {
        v: in_process_app(v, f"http://127.0.0.1:{sink_port}", workdir / f"{v}.log") for v in args.variants
    }
    cpu: dict[str, list[float]] = {v: [] for v in args.variants}
    try:
        for variant in args.variants:
            _configure_logs(variant, workdir)
            await drive(apps[variant][0], 200, token)
        for round_no in range(args.rounds):
            # The variants take turns every BATCH requests, so that whatever else loads the
            # machine weighs on each alike.
            spent = dict.fromkeys(args.variants, 0.0)
            for batch in range(max(1, args.requests // BATCH)):
                shift = (round_no + batch) % len(args.variants)
                for variant in args.variants[shift:] + args.variants[:shift]:
                    _configure_logs(variant, workdir)
                    spent[variant] += await drive(apps[variant][0], BATCH, token, warmup=0)
            for variant in args.variants:
                per = spent[variant] / max(1, args.requests // BATCH)
                cpu[variant].append(per * 1e6)
                print(f"round {round_no + 1} {variant:8s} {per * 1e6:7.1f} us CPU/request", file=sys.stderr)
        if args.profile:
            _configure_logs(args.profile, workdir)
            profiler = cProfile.Profile()
            profiler.enable()
            await drive(apps[args.profile][0], args.requests, token)
            profiler.disable()
            print(f"\ncProfile of {args.profile} (own time):", file=sys.stderr)
            stats = pstats.Stats(profiler, stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(
                "_observe|_telemetry|_logging|_metrics|opentelemetry|logging", 30
            )
    finally:
        for _app, tracing in apps.values():
            if tracing is not None:
                tracing.shutdown()
        stop(sink)
        shutil.rmtree(workdir, ignore_errors=True)
    base = statistics.median(cpu["off"])
    print(f"\nin-process ASGI app, {args.rounds} rounds x {args.requests} tools/call requests")
    print("| variant | gateway CPU us/request median (min-max) | cost vs off |")
    print("|---|---|---|")
    report = []
    for variant in args.variants:
        s = summary(cpu[variant])
        cost = 100 * (s["median"] / base - 1)
        report.append({"variant": variant, "cpu_us_per_request": s, "cost_pct": cost, "rounds": cpu[variant]})
        print(f"| {variant} | {s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f}) | {cost:+.1f}% |")
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"in_process": True, "args": sys.argv[1:], "variants": report}, indent=1)
        )
    return 0


_LOG_STREAMS: dict[Path, Any] = {}


def _configure_logs(variant: str, workdir: Path) -> None:
    """Root logging as the variant's gateway has it: request lines (JSON, to a file) or none."""
    from mcp_gateway._logging import configure

    path = workdir / f"{variant}.log"
    if path not in _LOG_STREAMS:
        _LOG_STREAMS[path] = path.open("a", encoding="utf-8")
    configure("info" if variant in ("logs", "all") else "warning", "json", _LOG_STREAMS[path])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_bin = (
        ROOT / "target" / ("release" if (ROOT / "target/release/mcp-runtime").exists() else "python-bin")
    )
    parser.add_argument("--bin-dir", type=Path, default=default_bin)
    parser.add_argument("--mode", choices=["grpc", "http", "python"], default="grpc")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    parser.add_argument("--profile", choices=VARIANTS)
    parser.add_argument("--profile-out", type=Path, default=Path("ops-profile.txt"))
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--in-process", action="store_true", help="the ASGI app alone (see above)")
    parser.add_argument("--requests", type=int, default=5000, help="--in-process: requests per round")
    args = parser.parse_args()
    if "off" not in args.variants:
        args.variants.insert(0, "off")
    if args.in_process:
        return await in_process(args)
    workdir = Path(tempfile.mkdtemp(prefix="ops-cost-"))
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    try:
        with processes(args, workdir) as running:
            gateways, token = running["gateways"], running["token"]
            for round_no in range(args.rounds):
                order = (
                    args.variants[round_no % len(args.variants) :]
                    + args.variants[: round_no % len(args.variants)]
                )
                for variant in order:
                    gw = gateways[variant]
                    row = await load(
                        gw["url"], token, args.concurrency, args.warmup_s, args.duration_s, gw["process"].pid
                    )
                    results[variant].append(row)
                    print(
                        f"round {round_no + 1} {variant:8s} {row['rps']:8.0f} req/s "
                        f"{row['gateway_cpu_us_per_request']:7.1f} us CPU/req, {row['errors']} errors",
                        file=sys.stderr,
                    )
                    listen = gw["env"].get("MCP_GATEWAY_METRICS_LISTEN")
                    if listen:
                        httpx.get(f"http://{listen}/metrics", timeout=5).raise_for_status()
            if args.profile:
                gw = gateways[args.profile]
                spy = subprocess.Popen(
                    [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record",
                     "--pid", str(gw["process"].pid), "--format", "raw", "--rate", "250",
                     "--output", str(args.profile_out), "--duration", str(int(args.duration_s) + 2)],
                    stdout=subprocess.DEVNULL,
                )  # fmt: skip
                await load(gw["url"], token, args.concurrency, 1.0, args.duration_s, gw["process"].pid)
                spy.wait(60)
                print(f"\nprofile of {args.profile} (own time, % of samples):", file=sys.stderr)
                for name, share in top_functions(args.profile_out):
                    print(f"  {share:5.1f}%  {name}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base_rps = statistics.median(r["rps"] for r in results["off"])
    base_cpu = statistics.median(r["gateway_cpu_us_per_request"] for r in results["off"])
    report = []
    print(f"\nmode {args.mode}, {args.rounds} rounds x {args.duration_s:g} s, concurrency {args.concurrency}")
    print(
        "| variant | req/s median (min-max) | cost req/s | gateway CPU us/req median (min-max) | cost CPU |"
    )
    print("|---|---|---|---|---|")
    for variant in args.variants:
        rps = summary([r["rps"] for r in results[variant]])
        cpu = summary([r["gateway_cpu_us_per_request"] for r in results[variant]])
        rps_cost = 100 * (1 - rps["median"] / base_rps)
        cpu_cost = 100 * (cpu["median"] / base_cpu - 1)
        report.append({"variant": variant, "rps": rps, "gateway_cpu_us_per_request": cpu,
                       "cost_pct": {"rps": rps_cost, "cpu": cpu_cost}, "rounds": results[variant]})  # fmt: skip
        print(
            f"| {variant} | {rps['median']:.0f} ({rps['min']:.0f}-{rps['max']:.0f}) | {rps_cost:+.1f}% "
            f"| {cpu['median']:.1f} ({cpu['min']:.1f}-{cpu['max']:.1f}) | {cpu_cost:+.1f}% |"
        )
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"mode": args.mode, "args": sys.argv[1:], "variants": report}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
