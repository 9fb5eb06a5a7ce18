"""The composition root: wires config, database, hypervisor, services and the HTTP pipeline."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from src.api.handlers import Handlers
from src.api.metrics import Metrics
from src.api.openapi import DOCUMENT
from src.api.pipeline import Pipeline, StartResponse
from src.api.router import Router
from src.api.routes import ROUTES
from src.config import Config
from src.database.db import Database
from src.database.meta import ensure_installation_id
from src.hypervisor.disks import QemuImg, Runner, run_command
from src.hypervisor.domain_xml import template_has_agent_channel
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError
from src.services.addresses import AddressBook
from src.services.audit import AuditTrail
from src.services.auth import TokenService, new_project_limits
from src.services.compute import ComputeService, Timeouts
from src.services.flavors import FlavorService
from src.services.gpus import GpuInventory
from src.services.idempotency import IdempotencyStore
from src.services.images import ImageService
from src.services.orphans import OrphanFinder
from src.services.placement import Placement
from src.services.provisioning import Provisioner
from src.services.quotas import QuotaService
from src.services.reconcile import Reconciler
from src.services.retention import Retention
from src.services.tasks import TaskRunner
from src.services.telemetry import Telemetry
from src.services.vm_reads import VmReader
from src.services.vm_work import VmWork
from src.services.waits import WaitLimiter

log = logging.getLogger("iaas.api")


@dataclass
class App:
    """The WSGI callable, plus the pieces the servers, the CLI and tests reach."""

    config: Config
    db: Database
    hypervisor: Hypervisor
    installation_id: str
    tokens: TokenService
    runner: TaskRunner
    reconciler: Reconciler
    pipeline: Pipeline
    waits: WaitLimiter  # the serving server sets its capacity (src/serve.py)

    @property
    def router(self) -> Router:
        return self.pipeline.router

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self.pipeline(environ, start_response)

    def close(self) -> None:
        """Stop background work and drop the libvirt connection."""
        self.reconciler.stop()
        self.runner.shutdown()
        self.hypervisor.close()


def create_app(config: Config, *, open_libvirt: Callable[[str], Hypervisor] = Hypervisor,
               run: Runner = run_command) -> App:
    """Build the app: migrate the DB, recover interrupted tasks, start background work."""
    db = Database(config.db_path)
    db.migrate()
    with db.write() as conn:
        installation_id = ensure_installation_id(conn)
    hypervisor = open_libvirt(config.libvirt_uri)
    qemu_img = QemuImg(run)
    images = ImageService(db, config.images_dir, qemu_img)
    runner = TaskRunner(db, config.max_builds, project_max=config.project_max_tasks,
                        queue_timeout_s=config.task_queue_timeout_s,
                        on_finish=lambda task: reconciler.check(task.vm_id))
    provisioner = Provisioner(config, hypervisor, qemu_img, installation_id)
    addresses = AddressBook(db, hypervisor, config.network,
                            guest_agent=template_has_agent_channel())
    placement = Placement(db, hypervisor, config.cpu_allocation_ratio,
                          config.ram_allocation_ratio,
                          lambda: int(provisioner.storage_gb() * config.disk_allocation_ratio))
    work = VmWork(db, hypervisor, provisioner)
    compute = ComputeService(db, hypervisor, images, work, runner, placement,
                             Timeouts(task_s=config.task_timeout_s))
    retention = Retention(db, config.audit_retention_days, config.task_retention_days)
    reconciler = Reconciler(db, hypervisor, addresses, runner, config.reconcile_interval_s,
                            config.lifecycle_events,
                            housekeeping=lambda: (retention.purge(), runner.expire_queued()))
    recovered = work.recover_interrupted()
    if recovered:
        log.warning("ended %d task(s) a restart interrupted", recovered)
    reconciler.start()
    gpus = GpuInventory(db, hypervisor, on_refresh=placement.forget_host)
    try:
        gpus.refresh()
    except HypervisorError as exc:  # libvirt down at start: serve anyway, refresh later
        log.warning("GPU inventory not refreshed: %s", exc)
    telemetry = Telemetry(db, hypervisor)
    metrics = Metrics(telemetry)
    tokens = TokenService(db, new_project_limits(config.default_quota))
    waits = WaitLimiter(config.max_waits_per_token)
    handlers = Handlers(
        compute=compute, reads=VmReader(db, hypervisor, addresses, runner,
                                        provisioner.console_log, waits),
        images=images, flavors=FlavorService(db, placement), gpus=gpus,
        quotas=QuotaService(db), audit=AuditTrail(db),
        orphans=OrphanFinder(db, hypervisor, config.instances_dir, installation_id),
        telemetry=telemetry, metrics_registry=metrics, document=DOCUMENT)
    routes = [replace(route, access="public") if route.operation_id == "metrics"
              and config.metrics_public else route for route in ROUTES]
    pipeline = Pipeline(Router(routes), handlers, tokens, IdempotencyStore(db), AuditTrail(db),
                        metrics)
    return App(config=config, db=db, hypervisor=hypervisor, installation_id=installation_id,
               tokens=tokens, runner=runner, reconciler=reconciler, pipeline=pipeline,
               waits=waits)
