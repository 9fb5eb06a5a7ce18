"""The project-share test of the embedded runner, run again with Celery workers: a host's queue
is FIFO, so without the share one project's burst would sit in front of every other's task."""
from __future__ import annotations

from tests.e2e.test_project_share import (  # noqa: F401 - collected here, with this tier's fixtures
    e2e_config,
    test_a_burst_of_one_project_does_not_hold_another_back,
)
