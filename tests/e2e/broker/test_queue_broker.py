"""The capacity queue with Celery workers: the delete's worker places what waits."""
from __future__ import annotations

from tests.e2e.test_queue_real import (  # noqa: F401 - collected here, with this tier's fixtures
    e2e_config,
    test_a_waiting_vm_boots_when_the_one_before_it_is_deleted,
)
