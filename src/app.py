"""The application factory: wires config, database, libvirt and services into one WSGI callable."""
from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from src import errors
from src.api.handlers import Handlers
from src.api.http import Request, Response, error_body
from src.api.metrics import Metrics
from src.api.router import Router
from src.config import Config
from src.database import audit as audit_dao
from src.database.db import Database
from src.database.meta import ensure_installation_id
from src.services.addresses import AddressBook
from src.services.auth import TokenService, new_project_limits
from src.services.compute import ComputeService, Timeouts
from src.services.flavors import FlavorService
from src.services.gpus import GpuInventory
from src.services.idempotency import (
    IdempotencyStore,
    StoredResponse,
    check_key,
    request_hash,
)
from src.services.images import ImageService
from src.services.orphans import OrphanFinder
from src.services.placement import Placement
from src.services.provisioning import Provisioner
from src.services.quotas import QuotaService
from src.services.reconcile import Reconciler
from src.services.tasks import TaskRunner
from src.utils.clock import utc_now
from src.utils.libvirt_host import Hypervisor, HypervisorError
from src.utils.qemu_img import QemuImg, Runner, run_command

log = logging.getLogger("iaas.api")
MUTATING_METHODS = ("POST", "PUT", "PATCH", "DELETE")
KNOWN_METHODS = ("GET", "HEAD", "OPTIONS", *MUTATING_METHODS)
AUDIT_PATH_CHARS = 256

StartResponse = Callable[..., Any]
RETRY_AFTER_S = "5"


class App:
    """The WSGI callable, plus the pieces tests and the server need to reach."""

    def __init__(self, config: Config, db: Database, hypervisor: Hypervisor, images: ImageService,
                 compute: ComputeService, runner: TaskRunner, reconciler: Reconciler,
                 orphans: OrphanFinder, gpus: GpuInventory, placement: Placement,
                 installation_id: str) -> None:
        self.config = config
        self.db = db
        self.hypervisor = hypervisor
        self.images = images
        self.compute = compute
        self.runner = runner
        self.reconciler = reconciler
        self.orphans = orphans
        self.gpus = gpus
        self.placement = placement
        self.installation_id = installation_id
        self.tokens = TokenService(db, new_project_limits(config.default_quota))
        self.idempotency = IdempotencyStore(db)
        self.metrics = Metrics(db, hypervisor)
        self._router = Router(Handlers(db, hypervisor, compute, images, runner, orphans,
                                       FlavorService(db), gpus, placement,
                                       QuotaService(db), self.metrics).routes())

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = "req-" + uuid.uuid4().hex
        request = Request(environ, request_id)
        response = self._guarded(request, lambda: self._respond(request))
        if request.method in MUTATING_METHODS and (
                request.principal is not None or request.route != "unmatched"):
            self._audit(request, response)  # anonymous noise on unknown paths is not kept
        headers = [("Content-Type", response.content_type), ("X-Request-Id", request_id),
                   *response.headers]
        body = response.encoded()
        start_response(response.wsgi_status(), headers)
        elapsed = time.perf_counter() - started
        method = request.method if request.method in KNOWN_METHODS else "other"
        self.metrics.observe(method, request.route, response.status, elapsed)
        log.info("%s", json.dumps({
            "event": "request", "method": request.method, "path": request.path,
            "route": request.route, "status": response.status,
            "duration_ms": round(elapsed * 1000, 2), "request_id": request_id,
            "project": request.principal.project if request.principal else None}))
        return body

    def _respond(self, request: Request) -> Response:
        """Authenticate, then answer; a POST with an Idempotency-Key answers at most once.

        Raises: ApiError (and whatever a handler raises), turned into a response by _guarded.
        """
        self._router.label(request)
        if request.path.startswith("/v1/") and not self._router.is_public(request.path):
            request.principal = self.tokens.authenticate(request.header("Authorization"))
        key = request.header("Idempotency-Key")
        if key is None or request.method != "POST" or request.principal is None:
            return self._router.dispatch(request)
        check_key(key)
        token_id = request.principal.token_id
        digest = request_hash(request.method, request.path, request.raw_body())
        stored = self.idempotency.begin(token_id, key, digest)
        if stored is not None:
            return Response(stored.status, stored.body,
                            [*stored.headers, ("Idempotent-Replayed", "true")],
                            content_type=stored.content_type)
        response = self._guarded(request, lambda: self._router.dispatch(request))
        self.idempotency.finish(token_id, key, StoredResponse(
            status=response.status, body=response.body, headers=response.headers,
            content_type=response.content_type))
        return response

    def _guarded(self, request: Request, answer: Callable[[], Response]) -> Response:
        """answer(), with every failure turned into its JSON error response."""
        try:
            return answer()
        except errors.Unauthorized as exc:
            return Response(exc.status, error_body(exc), [("WWW-Authenticate", "Bearer")])
        except errors.MethodNotAllowed as exc:
            return Response(exc.status, error_body(exc), [("Allow", ", ".join(exc.details["allow"]))])
        except errors.ApiError as exc:
            return Response(exc.status, error_body(exc))
        except HypervisorError as exc:
            log.error("libvirt failed on %s %s: %s", request.method, request.path, exc)
            return Response(503, error_body(errors.HypervisorUnavailable(reason=str(exc))),
                            [("Retry-After", RETRY_AFTER_S)])
        except Exception:  # the boundary: log everything, leak nothing
            log.exception("unhandled error on %s %s", request.method, request.path)
            return Response(500, error_body(errors.ApiError()))

    def _audit(self, request: Request, response: Response) -> None:
        """Record a mutating request; a failure to record is logged, never the caller's problem."""
        principal = request.principal
        body = response.body if isinstance(response.body, dict) else {}
        resource = body.get("vm_id") or body.get("id") or body.get("project")
        row = audit_dao.AuditRow(
            id=0, at=utc_now(),
            # Filed under the project whose resource it touched, so its members see it.
            project=request.target_project or (principal.project if principal else None),
            token_id=principal.token_id if principal else None, method=request.method,
            path=request.path[:AUDIT_PATH_CHARS], status=response.status,
            request_id=request.request_id,
            resource_id=str(resource) if resource else None)
        try:
            with self.db.write() as conn:
                audit_dao.record(conn, row)
        except sqlite3.Error:
            log.exception("could not record %s %s in the audit trail", request.method, request.path)

    def close(self) -> None:
        """Stop background work and drop the libvirt connection."""
        self.reconciler.stop()
        self.runner.shutdown()
        self.hypervisor.close()


def create_app(config: Config, *, open_libvirt: Callable[[str], Hypervisor] = Hypervisor,
               run: Runner = run_command) -> App:
    """Build the app: migrate the DB, recover interrupted tasks, return the WSGI callable."""
    db = Database(config.db_path)
    db.migrate()
    with db.write() as conn:
        installation_id = ensure_installation_id(conn)
    hypervisor = open_libvirt(config.libvirt_uri)
    qemu_img = QemuImg(run)
    images = ImageService(db, config.images_dir, qemu_img)
    runner = TaskRunner(db, config.max_builds, on_finish=lambda task: reconciler.check(task.vm_id))
    provisioner = Provisioner(config, hypervisor, qemu_img, installation_id)
    addresses = AddressBook(db, hypervisor, config.network)
    placement = Placement(db, hypervisor, config.cpu_allocation_ratio,
                          config.ram_allocation_ratio)
    compute = ComputeService(db, hypervisor, images, provisioner, runner, addresses, placement,
                             Timeouts(task_s=config.task_timeout_s))
    reconciler = Reconciler(db, hypervisor, addresses, runner, config.reconcile_interval_s,
                            config.lifecycle_events)
    recovered = compute.recover_interrupted()
    if recovered:
        log.warning("ended %d task(s) a restart interrupted", recovered)
    reconciler.start()
    orphans = OrphanFinder(db, hypervisor, config.instances_dir, installation_id)
    gpus = GpuInventory(db, hypervisor)
    try:
        gpus.refresh()
    except HypervisorError as exc:  # libvirt down at start: serve anyway, refresh later
        log.warning("GPU inventory not refreshed: %s", exc)
    return App(config, db, hypervisor, images, compute, runner, reconciler, orphans, gpus,
               placement, installation_id)
