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
from src.api.web import Dashboard
from src.config import Config
from src.database import hosts as host_dao
from src.database import tasks as task_dao
from src.database.db import Database
from src.database.hosts import LOCAL
from src.database.meta import ensure_installation_id
from src.hypervisor.disks import QemuImg, Runner, run_command
from src.hypervisor.domain_xml import template_has_agent_channel
from src.hypervisor.driver import Hypervisor
from src.services.accounts.audit import AuditTrail
from src.services.accounts.auth import TokenService, new_project_limits
from src.services.accounts.idempotency import IdempotencyStore
from src.services.accounts.keypairs import KeypairService
from src.services.actions.orphans import OrphanFinder
from src.services.actions.reconcile import Reconciler
from src.services.actions.retention import Retention
from src.services.actions.task_runs import TaskExecution, TaskSteps
from src.services.actions.telemetry import Telemetry
from src.services.hosts.admin import HostService
from src.services.hosts.capacity import Capacity
from src.services.hosts.gpus import GpuInventory
from src.services.hosts.registry import Host, HostRegistry
from src.services.images.admissions import Admission, UploadDesk
from src.services.images.catalog import ImageService
from src.services.images.files import Intake
from src.services.images.imports import ImageDownloads, ImageImporter
from src.services.motion.drains import DrainService
from src.services.motion.evacuations import EvacuationService
from src.services.motion.rebuild import EvacuationWork
from src.services.motion.recovery import MoveRecovery
from src.services.motion.requests import MigrationService
from src.services.motion.stale_copies import StaleCopies
from src.services.motion.work import MigrationWork
from src.services.networks.catalog import NetworkService
from src.services.queue.clock import CapacityClock
from src.services.queue.listing import QueueService
from src.services.queue.placer import QueuePlacer
from src.services.reservations.booking import ReservationService
from src.services.reservations.clock import ReservationClock
from src.services.rules.quotas import QuotaService
from src.services.security.firewall import FirewallTasks
from src.services.security.firewall import settle as settle_filters
from src.services.security.groups import SecurityGroupService
from src.services.tasks.broker import BrokerExecutor, celery_app
from src.services.tasks.runner import Executor, TaskRunner
from src.services.tasks.waits import WaitLimiter
from src.services.vms import preemption, runtime
from src.services.vms.addresses import AddressBook
from src.services.vms.compute import ComputeService, QueueRules
from src.services.vms.flavors import FlavorService
from src.services.vms.provisioning import Provisioner
from src.services.vms.reads import VmReader
from src.services.vms.root_disks import RootDisks, RootDiskWork
from src.services.vms.runtime import RuntimeLimits
from src.services.vms.work import VmWork
from src.services.volumes.attachments import AttachmentService
from src.services.volumes.catalog import VolumeService
from src.services.volumes.checks import VolumeChecks
from src.services.volumes.layers import VolumeLayers
from src.services.volumes.snapshots import VolumeSnapshots
from src.services.volumes.sources import SourceFinder
from src.services.volumes.work import VolumeWork

log = logging.getLogger("iaas.api")


@dataclass
class App:
    """The WSGI callable, plus the pieces the servers, the CLI and tests reach."""

    config: Config
    db: Database
    hosts: HostRegistry
    installation_id: str
    tokens: TokenService
    runner: TaskRunner
    reconciler: Reconciler
    pipeline: Pipeline
    waits: WaitLimiter  # the serving server sets its capacity (src/serve.py)
    executor: Executor  # the TaskRunner itself, or the broker's outbox relay
    intake: Intake
    clock: CapacityClock  # places and expires waiting VMs, starts and ends reservations
    placer: QueuePlacer  # the capacity queue's passes (the clock and task ends run them)

    @property
    def router(self) -> Router:
        return self.pipeline.router

    @property
    def hypervisor(self) -> Hypervisor:
        """The host `local` (IAAS_LIBVIRT_URI): what a single-host install runs on."""
        return self.hosts.get(LOCAL).hypervisor

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self.pipeline(environ, start_response)

    def admit_upload(self, authorization: str | None, method: str, path: str,
                     length: int | None) -> Admission | None:
        """The admission of an upload judged from its headers alone, for a server that reads
        the body before the app sees the request (waitress: src/servers/upload_gate.py); the
        pipeline then takes it as it is. None: not an upload (the route table says).

        Raises: Unauthorized, and what Intake.admit raises.
        """
        params = self.router.file_route(method, path)
        if params is None:
            return None
        return self.pipeline.admit_upload(self.tokens.authenticate(authorization), params,
                                          length)

    def close(self) -> None:
        """Stop background work and drop every libvirt connection."""
        self.clock.stop()
        self.reconciler.stop()
        self.runner.shutdown()
        self.executor.close()
        self.hosts.close()


@dataclass(frozen=True)
class Core:
    """What the HTTP side, the background work and the Celery workers are all built on."""

    db: Database
    installation_id: str
    hosts: HostRegistry
    images: ImageService
    provisioner: Provisioner
    capacity: Capacity
    gpus: GpuInventory
    addresses: AddressBook
    runner: TaskRunner
    reconciler: Reconciler
    work: VmWork
    steps: TaskSteps
    execution: TaskExecution
    intake: Intake
    layers: VolumeLayers
    placer: QueuePlacer
    moves: MoveRecovery
    firewall_tasks: FirewallTasks


def create_app(config: Config, *, open_libvirt: Callable[[str], Hypervisor] = Hypervisor,
               run: Runner = run_command) -> App:
    """Build the app: migrate the DB, recover interrupted tasks, start background work."""
    core = build_core(config, open_libvirt, run, sweeps_refresh_gpus=True)
    executor: Executor = core.runner
    queue_depths = None
    if config.broker_url:  # Phase 2: the API records and publishes; Celery workers run tasks
        relay = BrokerExecutor(core.db, celery_app(config.broker_url), core.runner.notify)
        executor, queue_depths = relay, relay.queue_depths
    else:  # the embedded default: this process runs the tasks, so it ends those it left
        recovered = core.work.recover_interrupted()
        if recovered:
            log.warning("ended %d task(s) a restart interrupted", recovered)
        for task in core.moves.interrupted():  # a move finds out where its VM is, then ends
            log.warning("migration %s of vm %s was under way: resuming it", task.id, task.vm_id)
            core.runner.submit(task)
    if core.images.recover(imports_elsewhere=bool(config.broker_url)):
        log.warning("image imports a restart interrupted are in error")
    core.placer.bind(executor.submit)
    reservation_clock = ReservationClock(core.db, executor)
    clock = CapacityClock(config.reservation_tick_s, [
        reservation_clock.enforce, RuntimeLimits(core.db, executor).enforce,
        core.placer.expire, core.placer.place])
    compute = ComputeService(core.db, core.hosts, core.images, executor, core.capacity,
                             QueueRules(config.queue_backfill_limit_s, config.queue_max_wait_s),
                             on_queued=core.placer.place)
    host_views = HostService(core.db, core.hosts, core.capacity, core.gpus, config, clock.poke)
    moves = MigrationService(core.db, core.hosts, core.capacity, executor)
    volumes = VolumeService(core.db, core.hosts, core.images, core.capacity, executor)
    core.hosts.start()
    core.reconciler.start()
    core.gpus.refresh()  # every host that answers; the others at their next sweep
    clock.start()  # the queue lives in the database: what waited before a restart moves on
    telemetry = Telemetry(core.db, core.hosts, queue_depths)
    metrics = Metrics(telemetry)
    tokens = TokenService(core.db, new_project_limits(config.default_quota))
    waits = WaitLimiter(config.max_waits_per_token)
    core.firewall_tasks.bind(executor.submit)
    security_groups = SecurityGroupService(core.db, core.firewall_tasks)
    core.addresses.on_change = security_groups.after_addresses  # `group` rules follow them
    handlers = Handlers(
        compute=compute, reads=VmReader(core.db, core.hosts, core.addresses, core.runner,
                                        core.provisioner.console_tail, waits),
        images=core.images, intake=core.intake, keypairs=KeypairService(core.db),
        importer=ImageImporter(core.db, core.images, executor, config),
        flavors=FlavorService(core.db, core.capacity),
        gpus=core.gpus, quotas=QuotaService(core.db), audit=AuditTrail(core.db),
        orphans=OrphanFinder(core.db, core.hosts, config.instances_dir, core.installation_id,
                             core.layers),
        telemetry=telemetry,
        hosts=host_views,
        queue=QueueService(core.db),
        reservations=ReservationService(core.db, config.reservation_horizon_days, clock.poke),
        metrics_registry=metrics, document=DOCUMENT, tokens=tokens,
        web=Dashboard(), volumes=volumes,
        attachments=AttachmentService(core.db, volumes, executor),
        volume_snapshots=VolumeSnapshots(core.db, volumes, executor),
        root_disks=RootDisks(core.db, core.images, executor),
        moves=moves, drains=DrainService(core.db, core.hosts, host_views, moves),
        evacuations=EvacuationService(core.db, config, core.hosts, core.capacity, host_views,
                                      core.provisioner.shared, executor),
        networks=NetworkService(core.db, core.hosts),
        security_groups=security_groups)
    routes = [replace(route, access="public") if route.operation_id == "metrics"
              and config.metrics_public else route for route in ROUTES]
    pipeline = Pipeline(Router(routes), handlers, tokens, IdempotencyStore(core.db),
                        AuditTrail(core.db), metrics, core.intake)
    return App(config=config, db=core.db, hosts=core.hosts, installation_id=core.installation_id,
               tokens=tokens, runner=core.runner, reconciler=core.reconciler, pipeline=pipeline,
               waits=waits, executor=executor, intake=core.intake, clock=clock,
               placer=core.placer)


def build_core(config: Config, open_libvirt: Callable[[str], Hypervisor] = Hypervisor,
               run: Runner = run_command, *, sweeps_refresh_gpus: bool = False) -> Core:
    """Migrate the database and build every service (nothing started yet), each after what it
    is built on. sweeps_refresh_gpus: each host sweep re-reads the host's GPUs (the API's
    sweeps do; a worker's leave it to the API).
    """
    db = Database(config.db_path)
    db.migrate()
    with db.write() as conn:
        installation_id = ensure_installation_id(conn)
        drifted = host_dao.repair_usage(conn)  # a recount: see src/database/hosts.py
    if drifted:
        log.info("host usage recounted for %s", ", ".join(drifted))
    hosts = HostRegistry(db, config, open_libvirt)
    hosts.ensure_local()
    qemu_img = QemuImg(run)
    layers = VolumeLayers(db, config, installation_id)
    provisioner = Provisioner(config, db, qemu_img, installation_id, layers)
    capacity = Capacity(db, hosts, config.scheduler, lambda: int(
        provisioner.shared.capacity_gb() * config.disk_allocation_ratio))
    gpus = GpuInventory(db, hosts, on_refresh=capacity.reread)
    addresses = AddressBook(db, guest_agent=template_has_agent_channel())
    images = ImageService(db, config.images_dir, qemu_img)
    work = VmWork(db, hosts, provisioner)
    intake = Intake(db, images, config.image_max_bytes,
                    UploadDesk(config.max_uploads_per_project, config.upload_share))
    volume_work = VolumeWork(db, hosts, images, layers,
                             SourceFinder(db, config, images, installation_id),
                             config.detach_timeout_s)
    move_work = MigrationWork(db, config, hosts, images, provisioner, layers, qemu_img)
    moves = MoveRecovery(db, move_work)
    evacuations = EvacuationWork(db, hosts, images, provisioner)
    stale_copies = StaleCopies(db, provisioner)
    steps = TaskSteps(db, hosts, images, work, ImageDownloads(db, images, intake, config),
                      (config.task_timeout_s, config.import_timeout_s), volume_work,
                      RootDiskWork(db, hosts, provisioner, intake), move_work,
                      config.migration_timeout_s, config.project_max_tasks,
                      evacuations=evacuations)
    # A Celery worker's placer leaves what it places to the API's outbox relay (no submit).
    placer = QueuePlacer(db, hosts, capacity, "celery" if config.broker_url else "inprocess",
                         config.queue_backfill_limit_s)
    firewall_tasks = FirewallTasks(db, "celery" if config.broker_url else "inprocess")

    def after_task(task: task_dao.TaskRow) -> None:
        """A task ended: a stop for a reservation or a max_runtime_s gives the VM's GPUs
        back, and whatever freed room lets the capacity queue move on."""
        runtime.after_task(db, task)  # a run of a VM with max_runtime_s begins or ends
        if preemption.after_stop(db, task):
            placer.place()
        placer.after_task(task)
        firewall_tasks.after_task(task)  # a refresh a busy VM held back

    execution = TaskExecution(db, steps, config.task_queue_timeout_s, on_end=after_task)
    # The one cycle: a task's end re-checks its VM through the reconciler, which pokes the
    # runner on lifecycle events; the closure is read only once a task has run, by when
    # reconciler is bound.
    runner = TaskRunner(db, config.max_builds, step=execution.step, expire=steps.expire,
                        project_max=config.project_max_tasks,
                        import_project_max=config.project_max_imports,
                        queue_timeout_s=config.task_queue_timeout_s,
                        on_finish=lambda task: reconciler.after_task(task.vm_id or ""))
    checks = VolumeChecks(db, layers)

    def after_host_sweep(host: Host) -> None:
        """Every sweep removes what evacuations left on a host that came back; the API's
        sweeps also re-read the host's GPUs and check its volumes (a worker's leave both to
        the API)."""
        stale_copies.clean(host)
        if sweeps_refresh_gpus:
            gpus.refresh_host(host)
            checks.check_host(host)

    retention = Retention(db, config.audit_retention_days, config.task_retention_days)
    reconciler = Reconciler(db, hosts, addresses, runner, config.reconcile_interval_s,
                            config.lifecycle_events,
                            housekeeping=lambda: (retention.purge(), runner.expire_queued(),
                                                  execution.expire_stale(),
                                                  moves.settle_orphans(),
                                                  evacuations.settle_orphans(),
                                                  settle_filters(provisioner.firewall, db,
                                                                 hosts)),
                            after_host_sweep=after_host_sweep, on_stop=retention.stop)
    return Core(db, installation_id, hosts, images, provisioner, capacity, gpus, addresses,
                runner, reconciler, work, steps, execution, intake, layers, placer, moves,
                firewall_tasks)
