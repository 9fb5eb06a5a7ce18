"""Entry point: serve the API with a threaded wsgiref server until Ctrl-C or SIGTERM."""
from __future__ import annotations

import logging
import signal
import socketserver
import sys
from types import FrameType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from src.app import create_app
from src.config import ConfigError, load_config

log = logging.getLogger("iaas.serve")

LISTEN_BACKLOG = 1024
SOCKET_TIMEOUT_S = 30


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # the default of 5 drops connections under load
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT_S  # a slow or stalled client cannot hold a thread forever

    def log_message(self, format: str, *args: object) -> None:
        """The app logs one line per request itself."""


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    app = create_app(config)
    server = make_server(config.host, config.port, app, server_class=ThreadingWSGIServer,
                         handler_class=QuietHandler)
    signal.signal(signal.SIGTERM, _stop)
    log.info("serving on http://%s:%d (libvirt %s, domain type %s, network %s)",
             config.host, server.server_port, config.libvirt_uri, config.domain_type, config.network)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
