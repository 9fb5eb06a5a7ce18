"""HTTP handlers: parse and validate, call a service, shape the response. Nothing else."""
from __future__ import annotations

from typing import Any

from src import errors
from src.api import views
from src.api.http import Request, Response
from src.api.metrics import Metrics
from src.api.openapi import DOCUMENT, PATHS, POWER_ACTIONS
from src.api.router import Route
from src.api.validation import parse_query, validate_body
from src.database import audit as audit_dao
from src.database import tasks as task_dao
from src.database.db import Database
from src.services.compute import ComputeService, CreateRequest, demand_of
from src.services.flavors import FlavorService
from src.services.gpus import GpuInventory
from src.services.images import ImageService
from src.services.orphans import OrphanFinder
from src.services.placement import Placement
from src.services.power import PowerOptions
from src.services.quotas import QuotaService
from src.services.tasks import TaskRunner
from src.utils.libvirt_host import Hypervisor
from src.utils.nocloud import InvalidSshKey, validate_ssh_key

MAX_WAIT_S = 60
MAX_USER_DATA_BYTES = 16 * 1024
DEFAULT_EVENTS = 100
DEFAULT_CONSOLE_LINES = 100
_OPTIONS_SCHEMA = {"shutdown": "ShutdownOptions", "reboot": "RebootOptions"}


def _valid_ssh_keys(keys: list[str]) -> list[str]:
    """Raises: ValidationFailed naming each key that is not an OpenSSH public key."""
    problems, valid = [], []
    for index, key in enumerate(keys):
        try:
            valid.append(validate_ssh_key(key.strip()))  # `cat id.pub` ends in a newline
        except InvalidSshKey as exc:
            problems.append({"field": f"ssh_keys[{index}]", "message": str(exc)})
    if problems:
        raise errors.ValidationFailed("An SSH key is not a valid OpenSSH public key.",
                                      errors=problems)
    return valid


class Handlers:
    def __init__(self, db: Database, hypervisor: Hypervisor, compute: ComputeService,
                 images: ImageService, runner: TaskRunner, orphans: OrphanFinder,
                 flavors: FlavorService, gpus: GpuInventory, placement: Placement,
                 quotas: QuotaService, metrics: Metrics) -> None:
        self._db = db
        self._metrics = metrics
        self._quotas = quotas
        self._gpus = gpus
        self._placement = placement
        self._flavors = flavors
        self._orphans = orphans
        self._hypervisor = hypervisor
        self._compute = compute
        self._images = images
        self._runner = runner

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/healthz", self.health, "public"),
            Route("GET", "/metrics", self.metrics, "public"),
            Route("GET", "/v1/openapi.json", self.openapi, "public"),
            Route("GET", "/v1/images", self.list_images),
            Route("POST", "/v1/images", self.create_image, "admin"),
            Route("GET", "/v1/images/{image}", self.show_image),
            Route("DELETE", "/v1/images/{image}", self.delete_image, "admin"),
            Route("GET", "/v1/flavors", self.list_flavors),
            Route("POST", "/v1/flavors", self.create_flavor, "admin"),
            Route("GET", "/v1/flavors/{flavor}", self.show_flavor),
            Route("DELETE", "/v1/flavors/{flavor}", self.delete_flavor, "admin"),
            Route("GET", "/v1/flavors/{flavor}/availability", self.show_availability),
            Route("GET", "/v1/gpus", self.list_gpus, "admin"),
            Route("POST", "/v1/gpus/refresh", self.refresh_gpus, "admin"),
            Route("GET", "/v1/vms", self.list_vms),
            Route("POST", "/v1/vms", self.create_vm),
            Route("GET", "/v1/vms/{vm}", self.show_vm),
            Route("DELETE", "/v1/vms/{vm}", self.delete_vm),
            Route("GET", "/v1/vms/{vm}/events", self.list_vm_events),
            Route("GET", "/v1/vms/{vm}/console", self.show_console),
            Route("GET", "/v1/vms/{vm}/stats", self.show_stats),
            *[Route("POST", f"/v1/vms/{{vm}}/{action}", self._action_handler(action))
              for action in POWER_ACTIONS],
            Route("GET", "/v1/admin/orphans", self.list_orphans, "admin"),
            Route("GET", "/v1/projects", self.list_projects, "admin"),
            Route("GET", "/v1/projects/{project}/quota", self.show_quota),
            Route("PUT", "/v1/projects/{project}/quota", self.update_quota, "admin"),
            Route("GET", "/v1/events", self.list_audit_events),
            Route("GET", "/v1/tasks/{task}", self.show_task),
        ]

    def health(self, _request: Request) -> Response:
        parts = {"db": self._check(self._db.ping), "libvirt": self._check(self._hypervisor.ping)}
        healthy = all(value == "ok" for value in parts.values())
        return Response(200 if healthy else 503, {"status": "ok" if healthy else "degraded", **parts})

    @staticmethod
    def _check(probe: Any) -> str:
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - health reports any failure, never raises
            return f"error: {exc}"
        return "ok"

    def metrics(self, _request: Request) -> Response:
        text, content_type = self._metrics.exposition()
        return Response(200, text, content_type=content_type)

    def openapi(self, _request: Request) -> Response:
        return Response(200, DOCUMENT)

    def list_images(self, _request: Request) -> Response:
        return Response(200, {"images": [views.image(row) for row in self._images.list()]})

    def create_image(self, request: Request) -> Response:
        body = validate_body("ImageCreate", request.json())
        image = self._images.register(body["name"], body["file"], body["format"])
        return Response(201, views.image(image), [("Location", f"/v1/images/{image.id}")])

    def show_image(self, _request: Request, image: str) -> Response:
        return Response(200, views.image(self._images.get(image)))

    def delete_image(self, _request: Request, image: str) -> Response:
        self._images.delete(image)
        return Response(204)

    def list_flavors(self, _request: Request) -> Response:
        return Response(200, {"flavors": [views.flavor(row) for row in self._flavors.list()]})

    def create_flavor(self, request: Request) -> Response:
        flavor = self._flavors.create(validate_body("FlavorCreate", request.json()))
        return Response(201, views.flavor(flavor), [("Location", f"/v1/flavors/{flavor.id}")])

    def show_flavor(self, _request: Request, flavor: str) -> Response:
        return Response(200, views.flavor(self._flavors.get(flavor)))

    def delete_flavor(self, _request: Request, flavor: str) -> Response:
        self._flavors.delete(flavor)
        return Response(204)

    def show_availability(self, _request: Request, flavor: str) -> Response:
        row = self._flavors.get(flavor)
        available, limited_by = self._placement.availability(demand_of(row))
        return Response(200, {"flavor": row.name, "available": available,
                              "limited_by": limited_by})

    def list_gpus(self, _request: Request) -> Response:
        return Response(200, {"gpus": [views.gpu(row) for row in self._gpus.list()]})

    def refresh_gpus(self, _request: Request) -> Response:
        self._placement.forget_host()
        return Response(200, {"gpus": [views.gpu(row) for row in self._gpus.refresh()]})

    def list_vms(self, request: Request) -> Response:
        query = parse_query(request.query, PATHS["/v1/vms"]["get"])
        limit = query.get("limit", 1000)
        page = self._compute.list(status=query.get("status"), name=query.get("name"),
                                  limit=limit, marker=query.get("marker"), project=request.scope)
        body: dict[str, Any] = {"vms": [views.vm(view) for view in page]}
        if len(page) == limit:
            body["next_marker"] = page[-1].row.id
        return Response(200, body)

    def create_vm(self, request: Request) -> Response:
        body = validate_body("VmCreate", request.json())
        sized = [field for field in ("cpu", "ram") if field in body]
        if ("flavor" in body) == bool(sized) or (not body.get("flavor") and len(sized) != 2):
            raise errors.ValidationFailed("Give either flavor, or both cpu and ram.",
                                          errors=[{"field": "flavor",
                                                   "message": "flavor xor (cpu and ram)"}])
        body["ssh_keys"] = tuple(_valid_ssh_keys(body.get("ssh_keys", [])))
        if len(body.get("user_data", "").encode()) > MAX_USER_DATA_BYTES:
            raise errors.ValidationFailed("user_data is over 16 KiB.", errors=[
                {"field": "user_data", "message": f"at most {MAX_USER_DATA_BYTES} bytes"}])
        view = self._compute.create(CreateRequest(**body, project=request.project),
                                    request.request_id)
        request.target_project = view.row.project
        return Response(202, views.vm(view), [("Location", f"/v1/vms/{view.row.id}")])

    def show_vm(self, request: Request, vm: str) -> Response:
        return Response(200, views.vm(self._compute.get(vm, request.scope)))

    def delete_vm(self, request: Request, vm: str) -> Response:
        task = self._compute.delete(vm, request.request_id, request.scope)
        request.target_project = task.project
        return Response(202, views.task(task), [("Location", f"/v1/tasks/{task.id}")])

    def _action_handler(self, action: str) -> Any:
        def handle(request: Request, vm: str) -> Response:
            body = validate_body(_OPTIONS_SCHEMA.get(action, "NoOptions"), request.optional_json())
            options = PowerOptions(timeout_s=body.get("timeout", 60), force=body.get("force", False),
                                   hard=body.get("hard", False))
            task = self._compute.act(vm, action, options, request.request_id, request.scope)
            request.target_project = task.project
            return Response(202, views.task(task), [("Location", f"/v1/tasks/{task.id}")])
        return handle

    def list_vm_events(self, request: Request, vm: str) -> Response:
        query = parse_query(request.query, PATHS["/v1/vms/{vm}/events"]["get"])
        rows = self._compute.events(vm, query.get("limit", DEFAULT_EVENTS), request.scope)
        return Response(200, {"events": [views.event(row) for row in rows]})

    def show_console(self, request: Request, vm: str) -> Response:
        query = parse_query(request.query, PATHS["/v1/vms/{vm}/console"]["get"])
        text = self._compute.console(vm, query.get("tail", DEFAULT_CONSOLE_LINES), request.scope)
        return Response(200, text, content_type="text/plain; charset=utf-8")

    def show_stats(self, request: Request, vm: str) -> Response:
        return Response(200, self._compute.stats(vm, request.scope))

    def list_projects(self, _request: Request) -> Response:
        return Response(200, {"projects": [self._quotas.show(name)
                                           for name in self._quotas.names()]})

    def show_quota(self, request: Request, project: str) -> Response:
        if request.scope is not None and project != request.scope:
            raise errors.ProjectNotFound(project=project)  # others' projects are not there
        return Response(200, self._quotas.show(project))

    def update_quota(self, request: Request, project: str) -> Response:
        request.target_project = project
        return Response(200, self._quotas.update(project, validate_body("QuotaUpdate",
                                                                        request.json())))

    def list_audit_events(self, request: Request) -> Response:
        query = parse_query(request.query, PATHS["/v1/events"]["get"])
        limit = query.pop("limit", DEFAULT_EVENTS)
        marker = query.pop("marker", None)
        if request.scope is not None:
            if query.get("project", request.scope) != request.scope:
                return Response(200, {"events": []})  # members read only their own trail
            query["project"] = request.scope
        with self._db.read() as conn:
            rows = audit_dao.page(conn, query, marker, limit)
        body: dict[str, Any] = {"events": [views.audit(row) for row in rows]}
        if len(rows) == limit:
            body["next_marker"] = rows[-1].id
        return Response(200, body)

    def list_orphans(self, _request: Request) -> Response:
        found = self._orphans.find()
        return Response(200, {"domains": [{"uuid": uuid, "name": name} for uuid, name in found.domains],
                              "folders": [str(folder) for folder in found.folders]})

    def show_task(self, request: Request, task: str) -> Response:
        query = parse_query(request.query, PATHS["/v1/tasks/{task}"]["get"])
        wait = min(query.get("wait", 0), MAX_WAIT_S)
        with self._db.read() as conn:
            row = task_dao.get(conn, task)
        if row is None or (request.scope is not None and row.project != request.scope):
            raise errors.TaskNotFound(task=task)  # another project's task is not there for you
        if wait:
            row = self._runner.wait(task, wait) or row
        return Response(200, views.task(row))
