"""Which Python HTTP server serves the core's HTTP/JSON transport fastest (issue 14).

Every candidate serves the same routes through the same :meth:`mcp_gateway.core.service.Core.route`
(so only the server library differs) on a Unix socket; one load client, the same for all, sends
``POST /v1/resolve-caller`` with a valid token (HS256 verification included) and counts answers.

Candidates:

- ``httptools``: the core's own server (:mod:`mcp_gateway.core.http_server`): an asyncio
  Protocol with the httptools C parser (the one the core ships);
- ``h11``: asyncio streams with the pure-Python h11 parser;
- ``aiohttp``: ``aiohttp.web`` with a catch-all route;
- ``starlette``: Starlette under uvicorn (httptools parser, asyncio loop), a catch-all route;
- ``grpc``: for comparison, the core's gRPC transport (grpc.aio), ``ResolveCaller`` with the
  same fields from a grpc.aio client (one channel, ``--concurrency`` concurrent calls): another
  client library, so compare its server CPU per request rather than its requests/s.

The load client is a separate process: ``--concurrency`` asyncio workers, each on its own
keep-alive connection, each sending one request and reading its whole answer (status line,
headers, ``content-length`` body) before the next; a warm-up second, then ``--seconds`` measured.

Usage::

    .venv/bin/python bench/core_http.py [--seconds 5] [--concurrency 16] [--rounds 2]
        [--servers httptools,h11,aiohttp,starlette,grpc]

Prints one line per server and round (requests/s, and the server process's CPU time per request
over the whole load run, warm-up included: less sensitive than requests/s to other work on the
machine) and a summary (the best round of each), and the JSON of the summary as the last line.
The numbers of docs/core-spi.md come from here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SERVERS = ("httptools", "h11", "aiohttp", "starlette", "grpc")


def _core() -> Any:
    from mcp_gateway.core.plugins import Plugins
    from mcp_gateway.core.policy import Policy
    from mcp_gateway.core.service import Core

    return Core(Policy(os.environ["JWT_SECRET_KEY"], 30_000, ()), Plugins())


async def _serve_h11(path: str) -> None:
    import h11

    from mcp_gateway.core.service import Reply

    core = _core()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    target = event.target.decode()
                    body = b""
                    while True:
                        part = conn.next_event()
                        if part is h11.NEED_DATA:
                            conn.receive_data(await reader.read(65536))
                        elif isinstance(part, h11.Data):
                            body += bytes(part.data)
                        else:
                            break
                    answer = core.route(event.method.decode(), target.split("?")[0], {}, body)
                    assert isinstance(answer, Reply)
                    headers = [
                        ("content-type", answer.content_type),
                        ("content-length", str(len(answer.body))),
                    ]
                    out = conn.send(h11.Response(status_code=answer.status, headers=headers))
                    out += conn.send(h11.Data(data=answer.body)) + conn.send(h11.EndOfMessage())
                    writer.write(out)
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path)
    async with server:
        await server.serve_forever()


def _serve_aiohttp(path: str) -> None:
    from aiohttp import web

    from mcp_gateway.core.service import Reply

    core = _core()

    async def handle(request: web.Request) -> web.Response:
        answer = core.route(request.method, request.path, dict(request.query), await request.read())
        assert isinstance(answer, Reply)
        return web.Response(status=answer.status, body=answer.body, content_type=answer.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, path=path, print=None, access_log=None)


def _serve_starlette(path: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from mcp_gateway.core.service import Reply

    core = _core()

    async def handle(request: Request) -> Response:
        answer = core.route(
            request.method, request.url.path, dict(request.query_params), await request.body()
        )
        assert isinstance(answer, Reply)
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    app = Starlette(routes=[Route("/{tail:path}", handle, methods=["GET", "POST"])])
    uvicorn.run(app, uds=path, log_level="warning", access_log=False, http="httptools", loop="asyncio")


def serve(name: str, path: str) -> None:
    """Run one candidate server on ``path`` until killed."""
    if name in ("httptools", "grpc"):
        from mcp_gateway.core.server import CoreSettings, run

        socket_kw = {"grpc_uds": path} if name == "grpc" else {"http_uds": path}
        sys.exit(run(CoreSettings(jwt_secret=os.environ["JWT_SECRET_KEY"], **socket_kw)))
    elif name == "h11":
        asyncio.run(_serve_h11(path))
    elif name == "aiohttp":
        _serve_aiohttp(path)
    else:
        _serve_starlette(path)


async def _load(path: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    request = (
        b"POST /v1/resolve-caller HTTP/1.1\r\nhost: core\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    counts = [0]
    total = [0]
    errors = [0]
    measuring = [False]
    stop_at = [0.0]

    async def worker() -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            while time.perf_counter() < stop_at[0]:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors[0] += 1
                total[0] += 1
                if measuring[0]:
                    counts[0] += 1
        finally:
            writer.close()

    stop_at[0] = time.perf_counter() + 1.0 + seconds
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(1.0)  # warm-up
    measuring[0] = True
    start = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {"rps": counts[0] / elapsed, "errors": errors[0], "total": total[0]}


async def _load_grpc(path: str, authorization: str, concurrency: int, seconds: float) -> dict[str, float]:
    import grpc.aio

    from mcp_gateway._proto.mcp.core.v1 import core_pb2 as pb
    from mcp_gateway._proto.mcp.core.v1 import core_pb2_grpc as pb_grpc

    options = [("grpc.default_authority", "localhost"), ("grpc.enable_http_proxy", 0)]
    request = pb.ResolveCallerRequest(
        authorization=authorization, request_id="r-1", client_address="127.0.0.1:1"
    )
    counts, total, errors = [0], [0], [0]
    measuring = [False]
    stop_at = time.perf_counter() + 1.0 + seconds
    async with grpc.aio.insecure_channel(f"unix:{path}", options=options) as channel:
        stub = pb_grpc.AuthPolicyServiceStub(channel)

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                answer = await stub.ResolveCaller(request, timeout=10)
                total[0] += 1
                if not answer.HasField("caller"):
                    errors[0] += 1
                if measuring[0]:
                    counts[0] += 1

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(1.0)  # warm-up
        measuring[0] = True
        start = time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"rps": counts[0] / elapsed, "errors": errors[0], "total": total[0]}


def load(path: str, concurrency: int, seconds: float, grpc: bool) -> None:
    """Measure one server; print one JSON object."""
    from mcp_gateway._auth import mint_token

    token = mint_token(os.environ["JWT_SECRET_KEY"], "bench@example.com", teams=["alpha"])
    if grpc:
        print(json.dumps(asyncio.run(_load_grpc(path, f"Bearer {token}", concurrency, seconds))))
        return
    body = json.dumps(
        {"authorization": f"Bearer {token}", "requestId": "r-1", "clientAddress": "127.0.0.1:1"}
    )
    print(json.dumps(asyncio.run(_load(path, body.encode(), concurrency, seconds))))


def _cpu_s(pid: int) -> float:
    """User plus system CPU time of a process so far, in seconds (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_socket(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start ({process.returncode})")
        time.sleep(0.05)
    time.sleep(0.3)


def main() -> int:
    """Run every candidate in rounds; print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--serve", nargs=2, metavar=("SERVER", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--grpc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    if args.load:
        load(args.load, args.concurrency, args.seconds, args.grpc)
        return 0
    env = {**os.environ, "JWT_SECRET_KEY": secrets.token_urlsafe(32)}
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="core-http-") as tmp:
        for round_ in range(args.rounds):
            for name in args.servers.split(","):
                sock = Path(tmp) / f"{name}.sock"
                server = subprocess.Popen(
                    [sys.executable, __file__, "--serve", name, str(sock)], env=env, stderr=subprocess.DEVNULL
                )
                try:
                    _wait_socket(sock, server)
                    cpu_before = _cpu_s(server.pid)
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--load",
                            str(sock),
                            "--concurrency",
                            str(args.concurrency),
                            "--seconds",
                            str(args.seconds),
                            *(["--grpc"] if name == "grpc" else []),
                        ],
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    us_per_request = (_cpu_s(server.pid) - cpu_before) / result["total"] * 1e6
                finally:
                    server.terminate()
                    server.wait(10)
                    sock.unlink(missing_ok=True)
                print(
                    f"round {round_ + 1} {name:10s} {result['rps']:9.0f} req/s  "
                    f"server CPU {us_per_request:6.1f} us/request  errors {result['errors']}",
                    flush=True,
                )
                best[name] = max(best.get(name, 0.0), result["rps"])
                cpu[name] = min(cpu.get(name, float("inf")), us_per_request)
    print(
        "best of rounds: "
        + ", ".join(
            f"{n} {r:.0f} req/s {cpu[n]:.0f} us" for n, r in sorted(best.items(), key=lambda x: -x[1])
        )
    )
    print(
        json.dumps(
            {"concurrency": args.concurrency, "seconds": args.seconds, "best_rps": best, "cpu_us": cpu}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
