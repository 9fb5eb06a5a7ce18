"""HTTP handlers of the capacity queue (a mixin of Handlers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.api import views
from src.api.http import Request, Response
from src.services.queue.listing import QueueService, Waiting


def _entry(entry: Waiting) -> dict[str, Any]:
    vm, wait = entry.vm, entry.wait
    return {"vm_id": vm.id, "name": vm.name, "project": vm.project, "flavor": vm.flavor_name,
            "cpu": vm.cpu, "ram": vm.ram, "gpus": int(wait.demand.get("gpu_count", 0)),
            **views.queue_place(wait)}


@dataclass(frozen=True)
class QueueHandlers:
    queue: QueueService

    def list_queue(self, request: Request) -> Response:
        return Response(200, {"queue": [_entry(entry) for entry in
                                        self.queue.list(request.caller)]})
