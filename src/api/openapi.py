"""The OpenAPI 3.1 document, derived from the route table and the schemas: the API's contract."""
from __future__ import annotations

import re
from typing import Any

from src.api.routes import ROUTES, Route
from src.api.schemas import SCHEMAS

PATH_PARAMS = {"vm": "VM id or name", "image": "Image id or name", "flavor": "Flavor id or name",
               "project": "Project name", "task": "Task id", "host": "Host name",
               "keypair": "Keypair name", "token": "Token id", "volume": "Volume id or name",
               "snapshot": "Snapshot id or name", "reservation": "Reservation id",
               "network": "Network name",
               "group": "Security group id or name", "rule": "Security group rule id"}
IDEMPOTENCY_ANSWERS = {400: "Malformed key or request",
                       409: "The key's first request is still being answered",
                       422: "Key reused with another body"}
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                   "description": "Same key and body within 24 h: the first answer again, "
                                  "nothing new."}

HEADERS = {"Retry-After": {"schema": {"type": "integer"},
                           "description": "Seconds before retrying"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str = "Error") -> dict[str, Any]:
    return {"description": description, **_json(_ref("Error"))}


def _success(route: Route) -> dict[str, Any]:
    if route.text:
        success = {"description": "Success",
                   "content": {"text/plain": {"schema": {"type": "string"}}}}
    else:
        success = {"description": "Success",
                   **(_json(_ref(route.returns)) if route.returns else {})}
    if route.headers:
        success["headers"] = {name: HEADERS[name] for name in route.headers}
    return success


def _responses(route: Route) -> dict[str, Any]:
    """Success, then every error status the route can answer with."""
    statuses = set(route.errors) | {500, 503}
    if route.query or route.body:
        statuses.add(400)  # a malformed query or body
    if route.body or route.file_body:
        statuses |= {413, 415}
    if route.access != "public":
        statuses.add(401)
    if route.access == "admin":
        statuses.add(403)
    responses: dict[str, Any] = {str(route.ok): _success(route)}
    for status in sorted(statuses):
        responses[str(status)] = _error()
    if route.method == "POST" and route.replayable:
        for status, why in IDEMPOTENCY_ANSWERS.items():
            responses.setdefault(str(status), _error(why))
    if route.operation_id == "health":  # a degraded health check still says which part failed
        responses["503"] = {"description": "A part does not answer", **_json(_ref("Health"))}
    if "401" in responses:
        responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    responses["503"].setdefault("headers", {"Retry-After": HEADERS["Retry-After"]})
    if "429" in responses:
        responses["429"]["headers"] = {"Retry-After": HEADERS["Retry-After"]}
    return responses


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "security": [] if route.access == "public" else [{"bearer": []}],
        "x-access": route.access,
        "responses": _responses(route),
    }
    if route.description:
        operation["description"] = route.description
    parameters = [{"name": name, "in": "query", "required": False, "schema": schema}
                  for name, schema in route.query]
    if route.method == "POST" and route.replayable:
        parameters.append(IDEMPOTENCY_KEY)
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        operation["requestBody"] = {"required": route.body_required, **_json(_ref(route.body))}
    if route.file_body:
        operation["requestBody"] = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
    return operation


def _paths(routes: tuple[Route, ...]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        if route.web:  # the dashboard's HTML, scripts and styles are not part of the JSON API
            continue
        item = paths.setdefault(route.pattern, {})
        names = re.findall(r"\{(\w+)\}", route.pattern)
        if names:
            item["parameters"] = [{"name": name, "in": "path", "required": True,
                                   "description": PATH_PARAMS[name], "schema": {"type": "string"}}
                                  for name in names]
        item[route.method.lower()] = _operation(route)
    return paths


PATHS = _paths(ROUTES)


def _links(response: dict[str, Any], targets: dict[str, str]) -> None:
    """OpenAPI links: what a client (and Schemathesis's stateful runs) may call next."""
    response["links"] = {operation: {"operationId": operation,
                                     "parameters": {param: "$response.body#/id"}}
                         for operation, param in targets.items()}


_links(PATHS["/v1/vms"]["post"]["responses"]["202"], {
    "showVm": "vm", "deleteVm": "vm", "stopVm": "vm", "startVm": "vm", "listVmEvents": "vm",
    "showVmConsole": "vm"})
_links(PATHS["/v1/vms/{vm}"]["delete"]["responses"]["202"], {"showTask": "task"})
_links(PATHS["/v1/images"]["post"]["responses"]["201"], {"showImage": "image",
                                                         "deleteImage": "image",
                                                         "uploadImageFile": "image"})
_links(PATHS["/v1/flavors"]["post"]["responses"]["201"], {
    "showFlavor": "flavor", "deleteFlavor": "flavor", "showFlavorAvailability": "flavor"})

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "IaaS control plane for AI workloads", "version": "1.0.0"},
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "An API token: `python -m src.cli token create`, or IAAS_ADMIN_TOKEN "
                       "from db-init"}}},
    "security": [{"bearer": []}],
}
