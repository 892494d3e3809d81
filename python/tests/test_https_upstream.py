"""An ``https://`` upstream with its ``ca_file``, in every mode.

The fixture server is put behind a TLS server (a thread of this test process forwarding each
decrypted connection to the fixture's plain port) whose certificate is issued by a CA made for
the test with trustme; the catalog names that CA in ``ca_file``. Every mode (the Python
baseline's httpx client and the runtime's rustls client) calls the fixture's ``echo`` through
it. A ``ca_file`` that is missing or holds no certificate is a catalog error naming the upstream
and the file; one with an ``http://`` URL is refused when the catalog is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from conftest import Gateway, serve_catalog
from mcp_gateway._baseline.catalog import load_catalog
from mcp_gateway._errors import CatalogError
from mcp_gateway.testing import free_port, start_fixture, stop


@contextlib.contextmanager
def _tls_front(plain_port: int, context: ssl.SSLContext) -> Iterator[int]:
    """A TLS server on a free loopback port forwarding to ``plain_port``; yields its port."""
    loop = asyncio.new_event_loop()
    port = free_port()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", plain_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", port, ssl=context))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def shutdown() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateway]]:
    """The fixture behind TLS, the runtime and one gateway per mode on a catalog with its CA."""
    workdir = tmp_path_factory.mktemp("https")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    fixture, url = start_fixture(log=workdir / "fixture.log")
    processes: list[subprocess.Popen[bytes]] = [fixture]
    try:
        plain_port = int(url.rsplit(":", 1)[1].split("/")[0])
        with _tls_front(plain_port, server_context) as tls_port:
            catalog = workdir / "catalog.toml"
            catalog.write_text(
                f'[[upstreams]]\nid = "tls"\nurl = "https://localhost:{tls_port}/mcp"\nca_file = "ca.pem"\n'
            )
            yield serve_catalog(catalog, workdir, "tls", processes)
    finally:
        for process in reversed(processes):
            stop(process)


async def test_every_mode_calls_an_https_upstream_trusted_through_its_ca_file(
    stack: dict[str, Gateway], http: httpx.AsyncClient
) -> None:
    for mode, gw in stack.items():
        token = gw.token()
        session = await gw.initialize(http, token)
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": f"tls {mode}"}},
        }
        r = await http.post(gw.url, json=call, headers=gw.headers(token, session))
        assert r.status_code == 200, f"{mode}: {r.text}"
        assert r.json()["result"]["content"][0]["text"] == f"tls {mode}", f"{mode}: {r.text}"


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "No such file"), ("not a certificate\n", "")],
)
def test_a_ca_file_that_is_missing_or_not_pem_is_a_catalog_error(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    if content is not None:
        (tmp_path / "ca.pem").write_text(content)
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[[upstreams]]\nid = "tls"\nurl = "https://localhost:9/mcp"\nca_file = "ca.pem"\n')
    upstream = load_catalog(catalog).upstreams[0]
    with pytest.raises(CatalogError) as e:
        upstream.tls_context()
    assert f"upstream `tls`: ca_file {tmp_path / 'ca.pem'}" in str(e.value)
    assert reason in str(e.value)


def test_a_ca_file_with_an_http_url_is_refused(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[[upstreams]]\nid = "plain"\nurl = "http://localhost:9/mcp"\nca_file = "ca.pem"\n')
    with pytest.raises(CatalogError, match="has a `ca_file` but an http:// `url`"):
        load_catalog(catalog)
