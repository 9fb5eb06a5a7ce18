"""HTTP handlers of reservations (a mixin of Handlers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.api.http import Request, Response
from src.api.validation import validate_body
from src.services.reservations.booking import (
    Booking,
    ReservationService,
    ReservationView,
    hosts_of,
)
from src.services.rules.windows import shown


def shown_reservation(view: ReservationView) -> dict[str, Any]:
    row = view.row
    return {"id": row.id, "project": row.project, "flavor": row.flavor_name,
            "count": row.count, "gpus_per_vm": row.gpus_per_vm, "start": shown(row.start_at),
            "end": shown(row.end_at), "status": row.status, "vms": view.vms,
            "hosts": hosts_of(view.claims), "created_at": row.created_at}


@dataclass(frozen=True)
class ReservationHandlers:
    reservations: ReservationService

    def create_reservation(self, request: Request) -> Response:
        body = validate_body("ReservationCreate", request.json())
        view = self.reservations.create(Booking(**body), request.caller)
        return Response(201, shown_reservation(view),
                        [("Location", f"/v1/reservations/{view.row.id}")], touched=view.row)

    def list_reservations(self, request: Request) -> Response:
        return Response(200, {"reservations": [shown_reservation(view) for view in
                                               self.reservations.list(request.caller)]})

    def show_reservation(self, request: Request, reservation: str) -> Response:
        return Response(200, shown_reservation(self.reservations.show(reservation,
                                                                      request.caller)))

    def cancel_reservation(self, request: Request, reservation: str) -> Response:
        view = self.reservations.cancel(reservation, request.caller)
        return Response(200, shown_reservation(view), touched=view.row)
