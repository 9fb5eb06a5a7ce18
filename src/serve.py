"""The one server entry point: `python -m src.serve [--server wsgiref|waitress]`.

wsgiref (`make serve`, src/servers/dev.py) gives every connection a thread; waitress (`make
serve-prod`, src/servers/prod.py) reads each request whole in its I/O loop before a worker
thread sees it. Both hold clients to the same limits (src/servers/guards.py), and each tells
the app how many threads it answers on, so that long-polls take at most half of them and
uploads their share.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from src.app import App, create_app
from src.config import Config, start_process
from src.servers.dev import make_dev_server
from src.servers.heap import settle
from src.servers.prod import bound_port, make_prod_server

log = logging.getLogger("iaas.serve")


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
    """Stop serving, once: a second SIGTERM (make passes its own to its child too) must not
    cut the clean-up short, where it left threads and the process running."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.serve")
    parser.add_argument("--server", choices=("wsgiref", "waitress"), default="wsgiref")
    args = parser.parse_args(argv)
    config = start_process(log)
    if config is None:
        return 2
    app = create_app(config)
    settle()  # before "serving on" is logged: a SIGTERM may follow it at once
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
