"""Production entry point: the same WSGI app behind waitress.

Waitress reads each request whole in its I/O loop before a worker thread sees it, so slow or
stalled clients cost a socket, not a worker; wsgiref gives every connection a thread.
"""
from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from waitress.server import BaseWSGIServer, create_server

from src.app import App, create_app
from src.config import Config, ConfigError, load_config

log = logging.getLogger("iaas.serve")

CHANNEL_TIMEOUT_S = 30  # an idle or stalled connection is closed after this
CONNECTION_LIMIT = 1000
MAX_BODY_BYTES = 1024 * 1024  # the app refuses over 64 KiB itself; this stops abuse earlier


def bound_port(server: BaseWSGIServer) -> int:
    return int(server.getsockname()[1])


def make_prod_server(app: App, host: str, port: int, threads: int) -> BaseWSGIServer:
    server = create_server(
        app, host=host, port=port, threads=threads, ident="iaas",
        channel_timeout=CHANNEL_TIMEOUT_S, connection_limit=CONNECTION_LIMIT,
        max_request_body_size=MAX_BODY_BYTES, clear_untrusted_proxy_headers=True)
    assert isinstance(server, BaseWSGIServer)  # one listen address gives one server
    return server


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config: Config = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    app = create_app(config)
    server = make_prod_server(app, config.host, config.port, config.prod_threads)
    signal.signal(signal.SIGTERM, _stop)
    log.info("serving on http://%s:%d with waitress, %d threads (libvirt %s, network %s)",
             config.host, bound_port(server), config.prod_threads, config.libvirt_uri,
             config.network)
    try:
        server.run()  # waitress itself returns on KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping")
        server.close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
