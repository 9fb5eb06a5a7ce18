"""The one server entry point: `python -m src.serve [--server wsgiref|waitress]`.

wsgiref (`make serve`) gives every connection a thread; waitress (`make serve-prod`) reads each
request whole in its I/O loop before a worker thread sees it, so slow or stalled clients cost a
socket, not a worker.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socketserver
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from waitress.server import BaseWSGIServer, create_server

from src.app import App, create_app
from src.config import Config, ConfigError, load_config

log = logging.getLogger("iaas.serve")

LISTEN_BACKLOG = 1024
SOCKET_TIMEOUT_S = 30  # wsgiref: a slow or stalled client cannot hold a thread forever
CHANNEL_TIMEOUT_S = 30  # waitress: an idle or stalled connection is closed after this
CONNECTION_LIMIT = 1000
MAX_BODY_BYTES = 1024 * 1024  # the app refuses over 64 KiB itself; this stops abuse earlier


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # the default of 5 drops connections under load
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT_S

    def log_message(self, format: str, *args: object) -> None:
        """The app logs one line per request itself."""


def make_dev_server(app: App, host: str, port: int) -> ThreadingWSGIServer:
    server = make_server(host, port, app, server_class=ThreadingWSGIServer,
                         handler_class=QuietHandler)
    assert isinstance(server, ThreadingWSGIServer)
    return server


def make_prod_server(app: App, host: str, port: int, threads: int) -> BaseWSGIServer:
    server = create_server(
        app, host=host, port=port, threads=threads, ident="iaas",
        channel_timeout=CHANNEL_TIMEOUT_S, connection_limit=CONNECTION_LIMIT,
        max_request_body_size=MAX_BODY_BYTES, clear_untrusted_proxy_headers=True)
    assert isinstance(server, BaseWSGIServer)  # one listen address gives one server
    return server


def bound_port(server: BaseWSGIServer) -> int:
    return int(server.getsockname()[1])


def _run(app: App, config: Config, kind: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(serve forever, close) for the chosen server, after saying where it listens."""
    if kind == "waitress":
        prod = make_prod_server(app, config.host, config.port, config.prod_threads)
        log.info("serving on http://%s:%d with waitress, %d threads (libvirt %s, network %s)",
                 config.host, bound_port(prod), config.prod_threads, config.libvirt_uri,
                 config.network)
        return prod.run, prod.close
    dev = make_dev_server(app, config.host, config.port)
    log.info("serving on http://%s:%d (libvirt %s, domain type %s, network %s)",
             config.host, dev.server_port, config.libvirt_uri, config.domain_type,
             config.network)
    return dev.serve_forever, dev.server_close


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.serve")
    parser.add_argument("--server", choices=("wsgiref", "waitress"), default="wsgiref")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    app = create_app(config)
    serve, close = _run(app, config, args.server)
    signal.signal(signal.SIGTERM, _stop)
    try:
        serve()  # waitress itself returns on KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping")
        close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
