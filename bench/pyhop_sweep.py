"""Sweep ``bench/pyhop.py`` over clients, workloads and concurrencies against a running runtime.

The runtime (and its fixture upstream) must already run; this script only spawns one
``pyhop.py`` process per row and reads the runtime's CPU time (``utime + stime`` of
``/proc/PID/stat``, all threads, in ``getconf CLK_TCK`` ticks) just before and just after each
row. Clients are interleaved within each round (httpx, aiohttp, grpc, httpx, ...), so slow drift
of the machine hits every client alike; the report is the median over rounds of each figure.

The runtime CPU per request in the table is pyhop's own ``--runtime-pid`` reading, taken at the
edges of the measured phase. The reading around the whole process (``initialize`` and warmup
included, divided by the measured requests), which is what a driver that only spawns pyhop sees,
is kept in the JSON rows as ``runtime_cpu_us_per_req_process``. With CLK_TCK 100 the resolution is
10 ms per row: rows must run long enough (``--duration-s``) for the figure to mean something.

``--sniffio-dir DIR`` adds a fourth variant, ``httpx+sniffio``: the httpx client with ``DIR``
(where ``pip install --target DIR sniffio`` put the ``sniffio`` package) on ``PYTHONPATH``.
httpcore 1.0.9 tries ``import sniffio`` on every lock and semaphore it creates and, since anyio
4.11 stopped depending on sniffio, that import fails every time unless something else installed
it; the variant shows what that failing import costs.

Usage::

    .venv/bin/python bench/pyhop_sweep.py --runtime-pid PID --http-uds H.sock --grpc-uds G.sock
        [--rounds 3] [--requests 5000 | --duration-s S] [--warmup 300]
        [--clients httpx,aiohttp,grpc] [--workloads ping,echo1k] [--concurrency 1,16]
        [--sniffio-dir DIR] [--json-out rows.json]

Prints a Markdown table on stdout (medians; ratios grpc/httpx and aiohttp/httpx); progress on
stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PYHOP = Path(__file__).with_name("pyhop.py")


def clock_ticks_per_second() -> int:
    """``getconf CLK_TCK`` (ticks per second of ``/proc/PID/stat`` times)."""
    return int(os.sysconf("SC_CLK_TCK"))


def cpu_ticks(pid: int) -> int:
    """``utime + stime`` of process ``pid``, in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def run_row(
    args: argparse.Namespace, variant: str, workload: str, concurrency: int, tck: int
) -> dict[str, Any]:
    """Spawn pyhop for one row; return its report plus the runtime's CPU around the process.

    Args:
        args: The sweep's arguments.
        variant: A pyhop client, or ``httpx+sniffio``.
        workload: The pyhop workload.
        concurrency: Concurrent workers.
        tck: Clock ticks per second of ``/proc/PID/stat``.
    """
    client = variant.split("+", 1)[0]
    env = dict(os.environ)
    if variant == "httpx+sniffio":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.sniffio_dir, env.get("PYTHONPATH")) if p)
    uds = args.grpc_uds if client == "grpc" else args.http_uds
    cmd = [
        sys.executable,
        str(PYHOP),
        "--client",
        client,
        "--uds",
        uds,
        "--workload",
        workload,
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(args.warmup),
        "--runtime-pid",
        str(args.runtime_pid),
    ]
    cmd += ["--duration-s", str(args.duration_s)] if args.duration_s else ["--requests", str(args.requests)]
    before = cpu_ticks(args.runtime_pid)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    after = cpu_ticks(args.runtime_pid)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"pyhop failed ({proc.returncode}): {' '.join(cmd)}")
    report: dict[str, Any] = json.loads(proc.stdout)
    report["client"] = variant
    process_cpu_s = (after - before) / tck
    report["runtime_cpu_s_process"] = process_cpu_s
    n = report["requests"]
    report["runtime_cpu_us_per_req_process"] = process_cpu_s * 1e6 / n if n else 0.0
    return report


FIGURES = (
    ("rps", "req/s", 0),
    ("p50", "p50 µs", 0),
    ("p99", "p99 µs", 0),
    ("client_cpu_us_per_req", "client CPU µs/req", 1),
    ("runtime_cpu_us_per_req", "runtime CPU µs/req", 1),
)


def figure(report: dict[str, Any], key: str) -> float:
    """One figure of a row report (latencies from ``latency_us``)."""
    if key in ("p50", "p99"):
        return float(report["latency_us"][key])
    return float(report[key])


def table(rows: list[dict[str, Any]], clients: Sequence[str]) -> str:
    """Markdown: medians per (workload, concurrency, client), then ratios to httpx."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["workload"], r["concurrency"], r["client"]), []).append(r)
    med: dict[tuple[str, int, str], dict[str, float]] = {
        k: {key: statistics.median(figure(r, key) for r in v) for key, _, _ in FIGURES}
        for k, v in groups.items()
    }
    errors = {k: sum(r["errors"] for r in v) for k, v in groups.items()}
    rounds = {k: len(v) for k, v in groups.items()}
    head = "| workload | conc | client | " + " | ".join(t for _, t, _ in FIGURES) + " | errors | rounds |"
    out = [head, "|" + "---|" * (len(FIGURES) + 5)]
    for k in sorted(med, key=lambda k: (k[0], k[1], clients.index(k[2]))):
        cells = " | ".join(f"{med[k][key]:.{d}f}" for key, _, d in FIGURES)
        out.append(f"| {k[0]} | {k[1]} | {k[2]} | {cells} | {errors[k]} | {rounds[k]} |")
    out += ["", "Ratios of medians to httpx (req/s: higher is better; the rest: lower is better):", ""]
    out += [
        "| workload | conc | ratio | " + " | ".join(t for _, t, _ in FIGURES) + " |",
        "|" + "---|" * (len(FIGURES) + 3),
    ]
    for workload, conc in sorted({(k[0], k[1]) for k in med}):
        base = med.get((workload, conc, "httpx"))
        if base is None:
            continue
        for other in (c for c in clients if c != "httpx"):
            m = med.get((workload, conc, other))
            if m is None:
                continue
            cells = " | ".join(f"{m[key] / base[key]:.2f}" if base[key] else "n/a" for key, _, _ in FIGURES)
            out.append(f"| {workload} | {conc} | {other}/httpx | {cells} |")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="pyhop_sweep.py", description=__doc__.splitlines()[0])
    p.add_argument("--runtime-pid", type=int, required=True, help="pid of the running mcp-runtime")
    p.add_argument("--http-uds", required=True, help="the runtime's --http-uds socket")
    p.add_argument("--grpc-uds", required=True, help="the runtime's --grpc-uds socket")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=5000, help="measured requests per row")
    p.add_argument("--duration-s", type=float, default=None, help="measured seconds per row instead")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--clients", default="httpx,aiohttp,grpc")
    p.add_argument("--workloads", default="ping,echo1k")
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--sniffio-dir", default=None, help="adds the httpx+sniffio variant (see above)")
    p.add_argument("--json-out", type=Path, default=None, help="write every row's report here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; print the table."""
    args = parse_args(argv)
    clients = args.clients.split(",")
    if args.sniffio_dir and "httpx" in clients:
        clients.insert(clients.index("httpx") + 1, "httpx+sniffio")
    workloads = args.workloads.split(",")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    tck = clock_ticks_per_second()
    rows: list[dict[str, Any]] = []
    for rnd in range(1, args.rounds + 1):
        sys.stderr.write(f"-- round {rnd}/{args.rounds}\n")
        for workload in workloads:
            for conc in concurrencies:
                for client in clients:
                    report = run_row(args, client, workload, conc, tck)
                    report["round"] = rnd
                    rows.append(report)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows, clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
