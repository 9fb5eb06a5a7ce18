"""Stopping `python -m src.serve`: SIGTERM ends it cleanly even when a second one follows at
once (make, killed with its process group, passes its own SIGTERM on to its child)."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from scripts.harness.uploads import child_on_test_driver


@pytest.mark.parametrize("kind", ["wsgiref", "waitress"])
def test_two_sigterms_stop_the_server_cleanly(tmp_path: Path, kind: str) -> None:
    server, _token = child_on_test_driver(tmp_path, kind, "iaas-test")
    try:
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "stopping" not in server.log.read_text():  # its clean-up has begun
            assert time.monotonic() < deadline, server.log.read_text()[-2000:]
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)  # make's, in the middle of the clean-up
        assert server.process.wait(timeout=30) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("the server did not stop: " + server.log.read_text()[-2000:])
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log, log[-2000:]
    assert "stopping" in log
