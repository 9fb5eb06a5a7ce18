"""The lifecycle tests of the embedded runner, run again with the broker executor: the same
fixtures, but every task goes through RabbitMQ to a Celery worker process."""
from __future__ import annotations

from tests.e2e.test_boot import (  # noqa: F401 - collected here, with this tier's fixtures
    test_tiny_guest_boots_and_is_deleted_without_trace,
)
from tests.e2e.test_lifecycle import (  # noqa: F401
    deaf_image,
    test_concurrent_actions_exactly_one_runs,
    test_delete_from_every_status,
    test_every_action_from_every_status_on_the_acpi_guest,
    test_shutdown_of_a_guest_ignoring_acpi,
)
