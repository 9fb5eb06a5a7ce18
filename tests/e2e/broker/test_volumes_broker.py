"""Volume tasks run by Celery workers: the same real-guest tests as the embedded runner's
(create, hot-plug, detach, snapshot, revert, delete; a VM's root disk and its image)."""
from __future__ import annotations

from tests.e2e.test_volumes import (  # noqa: F401 - collected here, with this tier's fixtures
    test_a_stopped_vms_disk_snapshots_reverts_and_becomes_an_image,
    test_data_outlives_the_vm_and_a_revert_gives_back_the_snapshot,
    tiny,
)
