"""The Python hop: a Python client calling the MCP runtime directly over its Unix sockets.

Layer 3 of the benchmark (``DESIGN.md``): what one gateway-to-runtime call costs a Python
process, for each transport and each Python HTTP client, without the gateway's ASGI front. One
run measures ONE row (client, workload, concurrency) and prints one JSON object on stdout, so
that a driver (``crates/mcp-bench``, ``bench/pyhop_sweep.py``) can spawn it per row, interleave
modes and read the runtime's CPU time around it. A one-line summary goes to stderr.

Usage::

    .venv/bin/python bench/pyhop.py --client {httpx,aiohttp,grpc} --uds PATH
        --workload {ping,echo1k} --concurrency N (--requests N | --duration-s S)
        [--warmup N] [--server-id ID] [--timeout-s S] [--runtime-pid PID]

Sequence: ``initialize`` and ``notifications/initialized`` over the same transport (the session
id comes from the ``mcp-session-id`` response header, in gRPC from ``head.headers``), then
``--warmup`` requests untimed, then the measured requests, all sent by ``--concurrency`` asyncio
workers sharing ONE client object:

- ``httpx``: one ``httpx.AsyncClient`` over ``httpx.AsyncHTTPTransport(uds=...)``, the pool
  limits set on the transport (httpx ignores the client's ``limits=`` once a transport is given);
- ``aiohttp``: one ``aiohttp.ClientSession`` over ``aiohttp.UnixConnector(path=..., limit=N)``;
- ``grpc``: one ``grpc.aio`` channel with the gateway's own ``CHANNEL_OPTIONS`` (authority
  ``localhost``, no HTTP proxy, 65 MiB messages), unary ``Invoke`` with a deadline.

Reused from the gateway (``mcp_gateway``), not copied: the AuthContext and its
``x-contextforge-auth-context`` encoding (:meth:`AuthContext.to_header_value`), its proto mapping
(``auth_to_proto``), the gRPC channel options and the generated stubs. The caller is
``bench@example.com``, admin, teams unrestricted (``"teams": null`` /
``TEAM_SCOPE_UNRESTRICTED``). The header value is the gateway's full JSON form (it also carries
the default ``scopes``, ``token_exp``, ``traceparent`` and ``trace_id``), so it is longer than,
but means the same as, the Rust client's ``{"email":...,"is_admin":true,"teams":null}``.

A request counts as a success when the response is HTTP 200 (gRPC: ``head.http_status`` 200) and
its body is a JSON-RPC response with a ``result`` and the request's ``id``; anything else,
including a transport exception or a timeout, is an error, counted without stopping. Like the
Rust driver: ``requests`` is successes plus errors, ``rps`` and the CPU per request divide by
``requests``, latencies are those of the successes.

Latencies: each request's ``time.perf_counter_ns()`` round trip goes into a list; percentiles are
exact nearest-rank over the sorted list (no histogram package: the lists are small, and exact
ranks need no bucket precision argument). Client CPU: ``resource.getrusage(RUSAGE_SELF)`` user
plus system time over the measured phase only, all threads (gRPC's core threads included).
With ``--runtime-pid``, the runtime's ``utime + stime`` (``/proc/PID/stat``, in ``CLK_TCK`` ticks,
usually 10 ms) is read at the same two instants and reported too, so a driver need not count
``initialize`` and the warmup in the runtime's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mcp_gateway import AuthContext

PROTOCOL_VERSION = "2025-11-25"
"""MCP protocol version sent in ``mcp-protocol-version`` (and the ``initialize`` params)."""

ACCEPT = "application/json, text/event-stream"
"""``accept`` of every POST, as the MCP spec asks of clients."""

SUBJECT_EMAIL = "bench@example.com"
"""Subject of the bench's AuthContext (the same as the Rust clients')."""

ECHO_TEXT_BYTES = 1024
"""Length in bytes of the ``text`` argument of the ``echo1k`` workload."""

CLIENTS = ("httpx", "aiohttp", "grpc")
WORKLOADS = ("ping", "echo1k")

_MIB = 1024 * 1024


def _auth() -> AuthContext:
    """The bench's caller: admin, unrestricted teams (``teams=None``)."""
    return AuthContext(email=SUBJECT_EMAIL, is_admin=True, teams=None)


# --------------------------------------------------------------------------------------------
# Request bodies


@dataclass(frozen=True, slots=True)
class Workload:
    """A JSON-RPC request body with a variable ``id``, pre-encoded around the id.

    Attributes:
        name: The workload's name in reports (``ping``, ``echo1k``).
        prefix: Bytes before the decimal id.
        suffix: Bytes after the decimal id.
    """

    name: str
    prefix: bytes
    suffix: bytes

    def body(self, request_id: int) -> bytes:
        """The UTF-8 JSON body of the request with id ``request_id``."""
        return self.prefix + str(request_id).encode("ascii") + self.suffix


def make_workload(name: str) -> Workload:
    """Build the workload ``name``.

    Args:
        name: ``ping`` (JSON-RPC ``ping``, answered by the runtime itself) or ``echo1k``
            (``tools/call`` of the fixture's ``echo`` with a 1024-byte ``text``, a round trip to
            the upstream).

    Raises:
        ValueError: An unknown name.
    """
    if name == "ping":
        return Workload(name, b'{"jsonrpc":"2.0","method":"ping","id":', b"}")
    if name == "echo1k":
        params = {"name": "echo", "arguments": {"text": "x" * ECHO_TEXT_BYTES}}
        prefix = '{"jsonrpc":"2.0","method":"tools/call","params":' + json.dumps(params) + ',"id":'
        return Workload(name, prefix.encode(), b"}")
    raise ValueError(f"unknown workload {name!r} (expected one of {', '.join(WORKLOADS)})")


def initialize_body() -> bytes:
    """The ``initialize`` request (id 0)."""
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "pyhop", "version": "0.1.0"},
            },
        },
        separators=(",", ":"),
    ).encode()


INITIALIZED_BODY = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
"""The ``notifications/initialized`` notification (answered 202, empty)."""


def check_result(status: int, body: bytes, request_id: int) -> str | None:
    """Judge one response.

    Args:
        status: HTTP status (gRPC: ``head.http_status``).
        body: Response body.
        request_id: The id the request carried.

    Returns:
        ``None`` for a JSON-RPC result with the right id, else why not.
    """
    if status != 200:
        return f"HTTP status {status}: {body[:200]!r}"
    try:
        message = json.loads(body)
    except ValueError as e:
        return f"not JSON ({e}): {body[:200]!r}"
    if not isinstance(message, dict):
        return f"not a JSON-RPC object: {body[:200]!r}"
    if "error" in message:
        return f"JSON-RPC error {message['error']}"
    if "result" not in message:
        return "no result"
    if message.get("id") != request_id:
        return f"id {message.get('id')!r}, expected {request_id}"
    return None


# --------------------------------------------------------------------------------------------
# Clients


class HopClient(ABC):
    """One client object shared by all workers; posts JSON-RPC bodies to the runtime.

    Args:
        uds: Path of the runtime's socket (HTTP/JSON or gRPC, matching the client).
        concurrency: Number of concurrent workers (sizes the HTTP connection pools).
        server_id: Virtual server scope (``/servers/{id}/mcp``, gRPC ``server_id``), or ``None``.
        timeout_s: Deadline of one request, in seconds.
    """

    name: str = ""

    def __init__(self, uds: str, concurrency: int, server_id: str | None, timeout_s: float) -> None:
        self.uds = uds
        self.concurrency = concurrency
        self.server_id = server_id
        self.timeout_s = timeout_s
        self.session_id: str | None = None

    @abstractmethod
    async def start(self) -> None:
        """Create the client inside the running loop (no request is sent)."""

    @abstractmethod
    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST one JSON-RPC message in the current session.

        Returns:
            The HTTP status and the body.
        """

    @abstractmethod
    async def initialize(self, body: bytes) -> tuple[int, str | None, bytes]:
        """POST ``initialize`` (no session yet).

        Returns:
            The HTTP status, the ``mcp-session-id`` response header (``None`` when absent) and
            the body.
        """

    def set_session(self, session_id: str) -> None:
        """Use ``session_id`` on every later :meth:`post`."""
        self.session_id = session_id

    @abstractmethod
    async def aclose(self) -> None:
        """Close the client and its connections."""


class _HttpBase(HopClient):
    """Shared header handling of the two HTTP/JSON clients."""

    def __init__(self, uds: str, concurrency: int, server_id: str | None, timeout_s: float) -> None:
        super().__init__(uds, concurrency, server_id, timeout_s)
        self.path = f"/servers/{quote(server_id, safe='')}/mcp" if server_id is not None else "/mcp"
        self.base_headers = {
            "x-contextforge-auth-context": _auth().to_header_value(),
            "mcp-protocol-version": PROTOCOL_VERSION,
            "accept": ACCEPT,
            "content-type": "application/json",
        }
        self.headers = dict(self.base_headers)

    def set_session(self, session_id: str) -> None:
        """Use ``session_id`` (the ``mcp-session-id`` header) on every later :meth:`post`."""
        super().set_session(session_id)
        self.headers = {**self.base_headers, "mcp-session-id": session_id}


class HttpxClient(_HttpBase):
    """``httpx.AsyncClient`` over the HTTP/JSON socket, pool sized to the concurrency."""

    name = "httpx"

    async def start(self) -> None:
        """Create the transport (with the pool limits) and the client."""
        import httpx

        # httpx ignores the client's ``limits=`` when a transport is given: set them here
        # (as mcp_gateway's HttpUdsBackend does), one keep-alive connection per worker.
        limits = httpx.Limits(
            max_connections=self.concurrency,
            max_keepalive_connections=self.concurrency,
            keepalive_expiry=30.0,
        )
        transport = httpx.AsyncHTTPTransport(uds=self.uds, limits=limits, retries=0)
        self._client = httpx.AsyncClient(
            transport=transport, base_url="http://localhost", timeout=httpx.Timeout(self.timeout_s)
        )

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body``; returns the status and the whole body."""
        response = await self._client.post(self.path, content=body, headers=self.headers)
        return response.status_code, response.content

    async def initialize(self, body: bytes) -> tuple[int, str | None, bytes]:
        """POST ``initialize`` without a session header."""
        response = await self._client.post(self.path, content=body, headers=self.base_headers)
        return response.status_code, response.headers.get("mcp-session-id"), response.content

    async def aclose(self) -> None:
        """Close the client and its pool."""
        await self._client.aclose()


class AiohttpClient(_HttpBase):
    """``aiohttp.ClientSession`` over ``aiohttp.UnixConnector(limit=concurrency)``."""

    name = "aiohttp"

    async def start(self) -> None:
        """Create the connector and the session."""
        import aiohttp

        connector = aiohttp.UnixConnector(path=self.uds, limit=self.concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        )
        self._url = "http://localhost" + self.path

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body``; returns the status and the whole body."""
        async with self._session.post(self._url, data=body, headers=self.headers) as response:
            return response.status, await response.read()

    async def initialize(self, body: bytes) -> tuple[int, str | None, bytes]:
        """POST ``initialize`` without a session header."""
        async with self._session.post(self._url, data=body, headers=self.base_headers) as response:
            return response.status, response.headers.get("mcp-session-id"), await response.read()

    async def aclose(self) -> None:
        """Close the session and its connector."""
        await self._session.close()


class GrpcClient(HopClient):
    """One ``grpc.aio`` channel over the gRPC socket; unary ``Invoke`` per message."""

    name = "grpc"

    async def start(self) -> None:
        """Create the channel with the gateway's options, and the stub."""
        import grpc.aio

        from mcp_gateway._grpc_backend import CHANNEL_OPTIONS, auth_to_proto
        from mcp_gateway._proto.mcp.runtime.v1 import runtime_pb2 as pb
        from mcp_gateway._proto.mcp.runtime.v1 import runtime_pb2_grpc as pb_grpc

        options = dict(CHANNEL_OPTIONS)
        # The options the bench relies on, whatever the gateway's tuple says later.
        assert options["grpc.default_authority"] == "localhost"
        assert options["grpc.enable_http_proxy"] == 0
        assert options["grpc.max_receive_message_length"] >= 65 * _MIB
        self._grpc = grpc
        self._pb = pb
        self._auth = auth_to_proto(_auth())
        self._channel = grpc.aio.insecure_channel(f"unix:{self.uds}", options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.McpRuntimeStub(self._channel)
        self._headers = self._mcp_headers("")

    def _mcp_headers(self, session_id: str) -> Any:
        return self._pb.McpHeaders(
            session_id=session_id,
            protocol_version=PROTOCOL_VERSION,
            accept=ACCEPT,
            content_type="application/json",
        )

    def set_session(self, session_id: str) -> None:
        """Put ``session_id`` into every later envelope's ``headers.session_id``."""
        super().set_session(session_id)
        self._headers = self._mcp_headers(session_id)

    async def _invoke(self, body: bytes) -> Any:
        pb = self._pb
        request = pb.InvokeRequest(
            envelope=pb.RequestEnvelope(
                method=pb.HTTP_METHOD_POST,
                headers=self._headers,
                server_id=self.server_id or "",
                auth=self._auth,
                body=body,
            )
        )
        return await self._stub.Invoke(request, timeout=self.timeout_s)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """``Invoke`` with ``body``; returns ``head.http_status`` and the body."""
        reply = await self._invoke(body)
        return reply.head.http_status, reply.body

    async def initialize(self, body: bytes) -> tuple[int, str | None, bytes]:
        """``Invoke`` ``initialize``; the session id is read from ``head.headers``."""
        reply = await self._invoke(body)
        session = next((h.value for h in reply.head.headers if h.name.lower() == "mcp-session-id"), None)
        return reply.head.http_status, session, reply.body

    async def aclose(self) -> None:
        """Close the channel."""
        await self._channel.close(grace=None)


def make_client(name: str, uds: str, concurrency: int, server_id: str | None, timeout_s: float) -> HopClient:
    """The client called ``name`` (one of :data:`CLIENTS`)."""
    kinds: dict[str, type[HopClient]] = {"httpx": HttpxClient, "aiohttp": AiohttpClient, "grpc": GrpcClient}
    return kinds[name](uds, concurrency, server_id, timeout_s)


# --------------------------------------------------------------------------------------------
# Load


@dataclass(slots=True)
class PhaseResult:
    """What one phase produced.

    Attributes:
        requests: Requests sent (successes plus errors).
        errors: Requests that failed or were not answered with a JSON-RPC result.
        latencies_ns: Round trips of the successes, in nanoseconds, in completion order.
        duration_s: Wall time of the phase, in seconds.
        first_error: The first error's description, ``None`` without errors.
    """

    requests: int = 0
    errors: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    duration_s: float = 0.0
    first_error: str | None = None


class Tickets:
    """Hands out request ids until the phase is over (a count, or a deadline).

    Args:
        first_id: The first request id handed out.
        requests: Total requests of the phase, or ``None`` with ``duration_s``.
        duration_s: Length of the phase in seconds (requests in flight at the deadline still
            complete and count), or ``None`` with ``requests``.
    """

    def __init__(self, first_id: int, requests: int | None, duration_s: float | None) -> None:
        self._next = first_id
        self._end = None if requests is None else first_id + requests
        self._deadline_ns = None if duration_s is None else time.perf_counter_ns() + int(duration_s * 1e9)

    def take(self) -> int | None:
        """The next request id, or ``None`` when the phase is over."""
        if self._end is not None and self._next >= self._end:
            return None
        if self._deadline_ns is not None and time.perf_counter_ns() >= self._deadline_ns:
            return None
        request_id = self._next
        self._next += 1
        return request_id


async def _worker(client: HopClient, workload: Workload, tickets: Tickets, result: PhaseResult) -> None:
    """Send requests one at a time until the tickets run out; record into ``result``."""
    perf_ns = time.perf_counter_ns
    latencies = result.latencies_ns
    while (request_id := tickets.take()) is not None:
        body = workload.body(request_id)
        t0 = perf_ns()
        try:
            status, reply = await client.post(body)
        except Exception as e:  # any transport fault is one error; the run goes on
            dt = perf_ns() - t0
            problem: str | None = f"{type(e).__name__}: {e}"
        else:
            dt = perf_ns() - t0
            problem = check_result(status, reply, request_id)
        result.requests += 1
        if problem is None:
            latencies.append(dt)
        else:
            result.errors += 1
            if result.first_error is None:
                result.first_error = problem


async def run_phase(
    client: HopClient,
    workload: Workload,
    concurrency: int,
    first_id: int,
    requests: int | None,
    duration_s: float | None,
) -> PhaseResult:
    """Run ``concurrency`` workers on ``client`` until ``requests`` or ``duration_s``."""
    result = PhaseResult()
    tickets = Tickets(first_id, requests, duration_s)
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(_worker(client, workload, tickets, result))
    result.duration_s = time.perf_counter() - t0
    return result


async def open_session(client: HopClient) -> str:
    """``initialize`` plus ``notifications/initialized``; returns the session id.

    Raises:
        RuntimeError: The runtime did not answer as expected.
    """
    status, session, body = await client.initialize(initialize_body())
    problem = check_result(status, body, 0)
    if problem is not None:
        raise RuntimeError(f"initialize failed: {problem}")
    if not session:
        raise RuntimeError("initialize answered without an mcp-session-id header")
    client.set_session(session)
    status, body = await client.post(INITIALIZED_BODY)
    if status != 202:
        raise RuntimeError(f"notifications/initialized: HTTP status {status}: {body[:200]!r}")
    return session


# --------------------------------------------------------------------------------------------
# Statistics and output


def nearest_rank(sorted_values: Sequence[int], q: float) -> int:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of ascending ``sorted_values``; 0 when empty."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary_us(latencies_ns: list[int]) -> dict[str, float]:
    """p50, p95, p99, max and mean of ``latencies_ns``, in microseconds (all 0 when empty)."""
    values = sorted(latencies_ns)
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    return {
        "p50": nearest_rank(values, 0.50) / 1e3,
        "p95": nearest_rank(values, 0.95) / 1e3,
        "p99": nearest_rank(values, 0.99) / 1e3,
        "max": values[-1] / 1e3,
        "mean": sum(values) / len(values) / 1e3,
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_s() -> float:
    """User plus system CPU time of this process so far (all threads), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def runtime_cpu_s(pid: int | None) -> float | None:
    """``utime + stime`` of process ``pid`` (``/proc/PID/stat``), in seconds; ``None`` without a pid."""
    if pid is None:
        return None
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis; utime and
    # stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run one row: session, warmup, measured phase. Returns the report object."""
    workload = make_workload(args.workload)
    client = make_client(args.client, args.uds, args.concurrency, args.server_id, args.timeout_s)
    await client.start()
    try:
        await open_session(client)
        next_id = 1
        if args.warmup > 0:
            await run_phase(client, workload, args.concurrency, next_id, args.warmup, None)
            next_id += args.warmup
        rt0 = runtime_cpu_s(args.runtime_pid)
        cpu0 = _cpu_s()
        result = await run_phase(client, workload, args.concurrency, next_id, args.requests, args.duration_s)
        cpu_s = _cpu_s() - cpu0
        rt1 = runtime_cpu_s(args.runtime_pid)
    finally:
        await client.aclose()
    n = result.requests
    rt_s = None if rt0 is None or rt1 is None else rt1 - rt0
    return {
        "client": args.client,
        "workload": args.workload,
        "concurrency": args.concurrency,
        "requests": n,
        "errors": result.errors,
        "duration_s": result.duration_s,
        "rps": n / result.duration_s if result.duration_s > 0 else 0.0,
        "latency_us": latency_summary_us(result.latencies_ns),
        "client_cpu_s": cpu_s,
        "client_cpu_us_per_req": cpu_s * 1e6 / n if n else 0.0,
        "runtime_cpu_s": rt_s,
        "runtime_cpu_us_per_req": None if rt_s is None else (rt_s * 1e6 / n if n else 0.0),
        "first_error": result.first_error,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("httpx", "aiohttp", "grpcio", "protobuf")},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="pyhop.py",
        description="Measure one (client, workload, concurrency) row of Python -> runtime calls "
        "over a Unix socket; prints one JSON object on stdout.",
    )
    p.add_argument("--client", required=True, choices=CLIENTS)
    p.add_argument(
        "--uds", required=True, help="runtime socket: --http-uds for httpx/aiohttp, --grpc-uds for grpc"
    )
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--concurrency", type=int, default=1, help="concurrent workers (default 1)")
    stop = p.add_mutually_exclusive_group(required=True)
    stop.add_argument("--requests", type=int, help="measured requests, over all workers")
    stop.add_argument("--duration-s", type=float, help="measured phase length, seconds")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests first (default 200)")
    p.add_argument("--server-id", default=None, help="virtual server scope (default: federated /mcp)")
    p.add_argument(
        "--timeout-s", type=float, default=30.0, help="deadline of one request, seconds (default 30)"
    )
    p.add_argument(
        "--runtime-pid",
        type=int,
        default=None,
        help="also report this process's CPU time over the measured phase (the runtime's pid)",
    )
    args = p.parse_args(argv)
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if args.requests is not None and args.requests < 1:
        p.error("--requests must be at least 1")
    if args.duration_s is not None and args.duration_s <= 0:
        p.error("--duration-s must be positive")
    if args.warmup < 0:
        p.error("--warmup must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 once the measured phase ran, 2 on setup failure)."""
    args = parse_args(argv)
    try:
        report = asyncio.run(measure(args))
    except Exception as e:  # setup failed (socket missing, initialize refused, ...)
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        print(f"pyhop: {args.client} {args.workload} c={args.concurrency}: {reason}", file=sys.stderr)
        return 2
    lat = report["latency_us"]
    print(
        f"pyhop {report['client']:<7} {report['workload']:<6} c={report['concurrency']:<3} "
        f"{report['requests']} req ({report['errors']} err) in {report['duration_s']:.2f} s: "
        f"{report['rps']:.0f} req/s, p50 {lat['p50']:.0f} us, p99 {lat['p99']:.0f} us, "
        f"client CPU {report['client_cpu_us_per_req']:.1f} us/req"
        + (f"; first error: {report['first_error']}" if report["first_error"] else ""),
        file=sys.stderr,
    )
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
