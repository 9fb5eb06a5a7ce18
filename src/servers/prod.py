"""`make serve-prod`: waitress, with IAAS_PROD_THREADS worker threads behind its I/O loop.

waitress reads each request whole in its I/O loop before a worker thread sees it (a large body
into a temporary file), so slow or stalled clients cost a socket, not a worker; only the body of
an upload the app admitted from its headers may be larger than 1 MiB there
(src/servers/upload_gate.py).
"""
from __future__ import annotations

from waitress.server import BaseWSGIServer, create_server

from src.app import App
from src.servers.upload_gate import make_channel_class

CHANNEL_TIMEOUT_S = 30  # an idle or stalled connection is closed after this
CONNECTION_LIMIT = 1000
# Bytes per socket read (waitress's default, 8 KiB, caps an upload near 150 MiB/s here).
RECV_BYTES = 256 * 1024
MAX_BODY_BYTES = 1024 * 1024  # the app refuses over 64 KiB itself; this stops abuse earlier


def make_prod_server(app: App, host: str, port: int, threads: int) -> BaseWSGIServer:
    server = create_server(
        app, host=host, port=port, threads=threads, ident="iaas",
        channel_timeout=CHANNEL_TIMEOUT_S, connection_limit=CONNECTION_LIMIT,
        max_request_body_size=MAX_BODY_BYTES, clear_untrusted_proxy_headers=True,
        recv_bytes=RECV_BYTES)
    assert isinstance(server, BaseWSGIServer)  # one listen address gives one server
    # waitress's extension point: the channel class a server makes for each connection.
    server.channel_class = make_channel_class(app, server.adj)
    app.waits.set_capacity(threads)
    return server


def bound_port(server: BaseWSGIServer) -> int:
    return int(server.getsockname()[1])
