"""HTTP handlers of hosts in motion: migrations of VMs, drains of hosts (a mixin of Handlers)."""
from __future__ import annotations

from dataclasses import dataclass

from src.api.answers import accepted, project
from src.api.http import Request, Response
from src.api.validation import validate_body
from src.services.motion.drains import DrainService
from src.services.motion.evacuations import EvacuationService
from src.services.motion.requests import MigrationService


@dataclass(frozen=True)
class MotionHandlers:
    moves: MigrationService
    drains: DrainService
    evacuations: EvacuationService

    def migrate_vm(self, request: Request, vm: str) -> Response:
        body = validate_body("VmMigrate", request.optional_json())
        return accepted(request, self.moves.migrate(
            vm, request.caller, body.get("host"), bool(body.get("live", True)),
            request.request_id, project(request)))

    def drain_host(self, request: Request, host: str) -> Response:
        validate_body("NoOptions", request.optional_json())
        return Response(202, self.drains.drain(host, request.caller, request.request_id))

    def evacuate_host(self, request: Request, host: str) -> Response:
        body = validate_body("HostEvacuate", request.optional_json())
        return Response(202, self.evacuations.evacuate(
            host, request.caller, bool(body.get("rebuild_lost_disks", False)), body.get("host"),
            request.request_id))
