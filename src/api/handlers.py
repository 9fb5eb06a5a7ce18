"""HTTP handlers: read the request, call one service, shape the response. Nothing else.

A mutating handler hands the service's result on as the answer's `touched`: the audit files the
request under that result's project (handlers never decide it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.api import views
from src.api.answers import accepted as _accepted
from src.api.answers import page as _page
from src.api.answers import project as _project
from src.api.answers import reveal as _reveal
from src.api.http import Request, Response
from src.api.metrics import Metrics
from src.api.motion_handlers import MotionHandlers
from src.api.network_handlers import NetworkHandlers
from src.api.queue_handlers import QueueHandlers
from src.api.reservation_handlers import ReservationHandlers
from src.api.security_handlers import SecurityHandlers
from src.api.validation import validate_body
from src.api.volume_handlers import VolumeHandlers
from src.api.web import Asset, Dashboard
from src.services.accounts.audit import AuditTrail
from src.services.accounts.auth import TokenService
from src.services.accounts.keypairs import KeypairService, marker_of
from src.services.actions.orphans import OrphanFinder
from src.services.actions.telemetry import Telemetry
from src.services.hosts.admin import HostService
from src.services.hosts.gpus import GpuInventory
from src.services.images.catalog import ImageService, NewImage
from src.services.images.files import Intake
from src.services.images.imports import ImageImporter
from src.services.rules.quotas import QuotaService
from src.services.vms.compute import ComputeService, CreateRequest
from src.services.vms.flavors import FlavorService
from src.services.vms.power import PowerOptions
from src.services.vms.reads import VmReader
from src.vocabulary import ACTION_OPTIONS

DEFAULT_EVENTS = 100
DEFAULT_CONSOLE_LINES = 100
DEFAULT_PAGE = 1000  # GET /v1/vms, /v1/images, /v1/keypairs, /v1/tokens


def _file(request: Request, asset: Asset) -> Response:
    """A dashboard file, or 304 when the browser's copy (If-None-Match) is still this one."""
    if request.header("If-None-Match") == asset.etag:
        return Response(304, None, asset.headers(), content_type=asset.content_type)
    return Response(200, asset.body, asset.headers(), content_type=asset.content_type)


@dataclass(frozen=True)
class Handlers(VolumeHandlers, QueueHandlers, ReservationHandlers, MotionHandlers,
               NetworkHandlers,
               SecurityHandlers):
    """One method per route; the route table (routes.py) says which serves what."""

    compute: ComputeService
    reads: VmReader
    images: ImageService
    intake: Intake
    importer: ImageImporter
    keypairs: KeypairService
    flavors: FlavorService
    gpus: GpuInventory
    quotas: QuotaService
    audit: AuditTrail
    orphans: OrphanFinder
    telemetry: Telemetry
    hosts: HostService
    metrics_registry: Metrics
    document: dict[str, Any]
    tokens: TokenService
    web: Dashboard

    def health(self, request: Request) -> Response:
        healthy, parts = self.telemetry.health(request.principal)
        return Response(200 if healthy else 503,
                        {"status": "ok" if healthy else "degraded", **parts})

    def metrics(self, _request: Request) -> Response:
        text, content_type = self.metrics_registry.exposition()
        return Response(200, text, content_type=content_type)

    def dashboard(self, request: Request) -> Response:
        return _file(request, self.web.page)

    def static_asset(self, request: Request, asset: str) -> Response:
        return _file(request, self.web.asset(asset))

    def openapi(self, _request: Request) -> Response:
        return Response(200, self.document)

    def list_images(self, request: Request) -> Response:
        limit = request.params.get("limit", DEFAULT_PAGE)
        rows = self.images.list(request.caller, limit, request.params.get("marker"))
        return Response(200, _page([views.image(row, _reveal(request)) for row in rows], limit,
                                   rows[-1].id if rows else None, "images"))

    def create_image(self, request: Request) -> Response:
        spec = NewImage(**validate_body("ImageCreate", request.json()))
        image = (self.importer.start(spec, request.caller, request.request_id) if spec.url
                 else self.images.create(spec, request.caller))
        return Response(201, views.image(image, _reveal(request)),
                        [("Location", f"/v1/images/{image.id}")], touched=image)

    def show_image(self, request: Request, image: str) -> Response:
        row = self.images.get(image, request.caller)
        body = views.image(row, _reveal(request))
        if _reveal(request):  # which hosts hold a copy is host detail
            body["hosts"] = list(self.images.copies(row))
        return Response(200, body)

    def upload_image(self, request: Request, image: str) -> Response:
        assert request.upload is not None  # the pipeline admits every upload before this
        row = self.intake.upload(request.upload, request.body_stream())
        return Response(200, views.image(row, _reveal(request)), touched=row)

    def delete_image(self, request: Request, image: str) -> Response:
        return Response(204, touched=self.images.delete(image, request.caller))

    def list_keypairs(self, request: Request) -> Response:
        limit = request.params.get("limit", DEFAULT_PAGE)
        rows = self.keypairs.list(request.caller, request.params.get("project"), limit,
                                  request.params.get("marker"))
        return Response(200, _page([views.keypair(row) for row in rows], limit,
                                   marker_of(rows[-1]) if rows else None, "keypairs"))

    def create_keypair(self, request: Request) -> Response:
        body = validate_body("KeypairCreate", request.json())
        row = self.keypairs.create(body["name"], body["public_key"], request.caller)
        return Response(201, views.keypair(row), [("Location", f"/v1/keypairs/{row.name}")],
                        touched=row)

    def show_keypair(self, request: Request, keypair: str) -> Response:
        row = self.keypairs.get(keypair, request.caller, request.params.get("project"))
        return Response(200, views.keypair(row))

    def delete_keypair(self, request: Request, keypair: str) -> Response:
        return Response(204, touched=self.keypairs.delete(keypair, request.caller,
                                                          request.params.get("project")))

    def list_flavors(self, _request: Request) -> Response:
        return Response(200, {"flavors": [views.flavor(row) for row in self.flavors.list()]})

    def create_flavor(self, request: Request) -> Response:
        flavor = self.flavors.create(validate_body("FlavorCreate", request.json()))
        return Response(201, views.flavor(flavor), [("Location", f"/v1/flavors/{flavor.id}")])

    def show_flavor(self, _request: Request, flavor: str) -> Response:
        return Response(200, views.flavor(self.flavors.get(flavor)))

    def delete_flavor(self, _request: Request, flavor: str) -> Response:
        self.flavors.delete(flavor)
        return Response(204)

    def show_availability(self, request: Request, flavor: str) -> Response:
        return Response(200, self.flavors.availability(flavor, request.caller,
                                                       request.params.get("at")))

    def list_gpus(self, request: Request) -> Response:
        host = request.params.get("host")
        return Response(200, {"gpus": [views.gpu(row) for row in self.gpus.list(host)],
                              "partitions": [views.partition(row)
                                             for row in self.gpus.partitions(host)]})

    def refresh_gpus(self, _request: Request) -> Response:
        gpus = self.gpus.refresh()
        return Response(200, {"gpus": [views.gpu(row) for row in gpus],
                              "partitions": [views.partition(row)
                                             for row in self.gpus.partitions()]})

    def list_vms(self, request: Request) -> Response:
        query = request.params
        limit = query.get("limit", DEFAULT_PAGE)
        page = self.reads.page(request.caller, status=query.get("status"), name=query.get("name"),
                               limit=limit, marker=query.get("marker"))
        reveal = _reveal(request)
        return Response(200, _page([views.vm(view, reveal) for view in page], limit,
                                   page[-1].row.id if page else None, "vms"))

    def create_vm(self, request: Request) -> Response:
        body = validate_body("VmCreate", request.json())
        view = self.compute.create(CreateRequest(**body), request.caller, request.request_id)
        return Response(202, views.vm(view, _reveal(request)), [("Location", f"/v1/vms/{view.row.id}")],
                        touched=view.row)

    def show_vm(self, request: Request, vm: str) -> Response:
        return Response(200, views.vm(self.reads.get(vm, request.caller, _project(request)),
                                      _reveal(request)))

    def delete_vm(self, request: Request, vm: str) -> Response:
        task = self.compute.delete(vm, request.caller, request.request_id, _project(request))
        return _accepted(request, task)

    def act(self, request: Request, vm: str, action: str) -> Response:
        schema = ACTION_OPTIONS.get(action, "NoOptions")
        options = PowerOptions(**validate_body(schema, request.optional_json()))
        task = self.compute.act(vm, action, options, request.caller, request.request_id,
                                _project(request))
        return _accepted(request, task)

    def list_vm_events(self, request: Request, vm: str) -> Response:
        rows = self.reads.events(vm, request.params.get("limit", DEFAULT_EVENTS), request.caller,
                                 _project(request))
        return Response(200, {"events": [views.event(row, _reveal(request)) for row in rows]})

    def show_console(self, request: Request, vm: str) -> Response:
        lines = request.params.get("tail", DEFAULT_CONSOLE_LINES)
        text = self.reads.console(vm, lines, request.caller, _project(request))
        return Response(200, text, content_type="text/plain; charset=utf-8")

    def show_stats(self, request: Request, vm: str) -> Response:
        return Response(200, self.reads.stats(vm, request.caller, _project(request)))

    def show_task(self, request: Request, task: str) -> Response:
        answer = self.reads.task(task, request.caller, request.params.get("wait", 0))
        retry = [("Retry-After", str(answer.retry_after_s))] if answer.retry_after_s else []
        return Response(200, views.task(answer.row, _reveal(request)), retry)

    def list_hosts(self, _request: Request) -> Response:
        return Response(200, {"hosts": self.hosts.list()})

    def create_host(self, request: Request) -> Response:
        host = self.hosts.add(validate_body("HostCreate", request.json()))
        return Response(201, host, [("Location", f"/v1/hosts/{host['name']}")])

    def show_host(self, _request: Request, host: str) -> Response:
        return Response(200, self.hosts.show(host))

    def update_host(self, request: Request, host: str) -> Response:
        return Response(200, self.hosts.update(host, validate_body("HostUpdate", request.json())))

    def delete_host(self, _request: Request, host: str) -> Response:
        self.hosts.remove(host)
        return Response(204)

    def list_orphans(self, _request: Request) -> Response:
        return Response(200, views.orphans(self.orphans.find()))

    def list_projects(self, _request: Request) -> Response:
        return Response(200, {"projects": [views.quota(quota) for quota in self.quotas.list()]})

    def show_quota(self, request: Request, project: str) -> Response:
        return Response(200, views.quota(self.quotas.show(project, request.caller)))

    def update_quota(self, request: Request, project: str) -> Response:
        changes = validate_body("QuotaUpdate", request.json())
        quota = self.quotas.update(project, changes)
        return Response(200, views.quota(quota), touched=quota)

    def list_audit_events(self, request: Request) -> Response:
        filters = dict(request.params)
        limit = filters.pop("limit", DEFAULT_EVENTS)
        rows = self.audit.page(request.caller, filters, filters.pop("marker", None), limit)
        return Response(200, _page([views.audit(row) for row in rows], limit,
                                   rows[-1].id if rows else None, "events"))

    def create_token(self, request: Request) -> Response:
        body = validate_body("TokenCreate", request.json())
        row, secret = self.tokens.create(request.caller, body["project"], body["role"],
                                         body.get("expires_in_days"), body.get("description", ""))
        return Response(201, views.token_created(row, secret), touched=row)

    def list_tokens(self, request: Request) -> Response:
        caller, limit = request.caller, request.params.get("limit", DEFAULT_PAGE)
        rows = self.tokens.visible(caller, limit, request.params.get("marker"))
        return Response(200, _page([views.token(row, caller.token_id) for row in rows], limit,
                                   rows[-1].id if rows else None, "tokens"))

    def delete_token(self, request: Request, token: str) -> Response:
        row = self.tokens.revoke_for(request.caller, token)
        return Response(204, touched=row)
