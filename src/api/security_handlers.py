"""HTTP handlers of security groups and their attachment to VMs (a mixin of Handlers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.api import views
from src.api.answers import accepted, project, reveal
from src.api.http import Request, Response
from src.api.validation import validate_body
from src.services.security.groups import GroupCreate, GroupView, SecurityGroupService


def shown_group(view: GroupView, reveal_all: bool) -> dict[str, Any]:
    row = view.row
    return {"id": row.id, "name": row.name, "project": row.project,
            "description": row.description, "rules": view.rules, "vms": view.vms,
            "tasks": [views.task(task, reveal_all) for task in view.tasks],
            "created_at": row.created_at, "updated_at": row.updated_at}


@dataclass(frozen=True)
class SecurityHandlers:
    security_groups: SecurityGroupService

    def list_security_groups(self, request: Request) -> Response:
        found = self.security_groups.list(request.caller, project(request))
        return Response(200, {"security_groups": [shown_group(view, reveal(request))
                                                  for view in found]})

    def create_security_group(self, request: Request) -> Response:
        body = validate_body("SecurityGroupCreate", request.json())
        view = self.security_groups.create(GroupCreate(**body), request.caller,
                                           project(request))
        return Response(201, shown_group(view, reveal(request)),
                        [("Location", f"/v1/security-groups/{view.row.id}")], touched=view.row)

    def show_security_group(self, request: Request, group: str) -> Response:
        view = self.security_groups.show(group, request.caller, project(request))
        return Response(200, shown_group(view, reveal(request)))

    def delete_security_group(self, request: Request, group: str) -> Response:
        self.security_groups.delete(group, request.caller, project(request))
        return Response(204, None)

    def add_security_group_rule(self, request: Request, group: str) -> Response:
        body = validate_body("SecurityGroupRuleCreate", request.json())
        return self._changed(request, group, [body], [])

    def delete_security_group_rule(self, request: Request, group: str, rule: str) -> Response:
        return self._changed(request, group, [], [rule])

    def replace_security_group_rules(self, request: Request, group: str) -> Response:
        body = validate_body("SecurityGroupRules", request.json())
        return self._changed(request, group, body["rules"], [], replace_all=True)

    def _changed(self, request: Request, group: str, add: list[dict[str, Any]],
                 remove: list[str], replace_all: bool = False) -> Response:
        view = self.security_groups.change_rules(group, add, remove, request.caller,
                                                 request.request_id, project(request),
                                                 replace_all)
        return Response(200, shown_group(view, reveal(request)), touched=view.row)

    def attach_security_group(self, request: Request, vm: str) -> Response:
        body = validate_body("SecurityGroupAttach", request.json())
        return accepted(request, self.security_groups.attach(
            vm, body["name"], request.caller, request.request_id, project(request)))

    def detach_security_group(self, request: Request, vm: str, group: str) -> Response:
        return accepted(request, self.security_groups.detach(
            vm, group, request.caller, request.request_id, project(request)))
