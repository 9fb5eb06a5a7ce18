"""HTTP handlers of networks (a mixin of Handlers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.api.answers import reveal
from src.api.http import Request, Response
from src.api.validation import validate_body
from src.services.networks.catalog import NetworkCreate, NetworkService, NetworkView


def shown_network(view: NetworkView, admin: bool) -> dict[str, Any]:
    facts = view.facts
    return {"name": facts.name, "host": view.host if admin else None, "mode": facts.mode,
            "subnet": facts.subnet, "bridge": facts.bridge, "active": facts.active,
            "managed": view.managed}


def for_members(views: list[NetworkView]) -> list[dict[str, Any]]:
    """One entry per name a VM may ask for (active on some host), without the hosts."""
    seen: dict[str, dict[str, Any]] = {}
    for view in views:
        if view.facts.active:
            seen.setdefault(view.facts.name, shown_network(view, False))
    return list(seen.values())


@dataclass(frozen=True)
class NetworkHandlers:
    networks: NetworkService

    def list_networks(self, request: Request) -> Response:
        views = self.networks.every()
        shown = ([shown_network(view, True) for view in views] if reveal(request)
                 else for_members(views))
        return Response(200, {"networks": shown})

    def create_network(self, request: Request) -> Response:
        body = validate_body("NetworkCreate", request.json())
        view = self.networks.create(NetworkCreate(**body))
        return Response(201, shown_network(view, True),
                        [("Location", f"/v1/networks/{view.host}/{view.facts.name}")])

    def delete_network(self, request: Request, host: str, network: str) -> Response:
        self.networks.delete(host, network)
        return Response(204, None)
