"""HTTP handlers of data that outlives a VM: volumes, attachments, snapshots of volumes and of
VMs' root disks, images made from VMs (a mixin of Handlers)."""
from __future__ import annotations

from dataclasses import dataclass

from src.api import views, volume_views
from src.api.answers import accepted, page, project, reveal
from src.api.http import Request, Response
from src.api.validation import validate_body
from src.services.vms.root_disks import RootDisks
from src.services.volumes.attachments import AttachmentService
from src.services.volumes.catalog import VolumeCreate, VolumeService
from src.services.volumes.snapshots import VolumeSnapshots

DEFAULT_VOLUMES = 1000


@dataclass(frozen=True)
class VolumeHandlers:
    volumes: VolumeService
    attachments: AttachmentService
    volume_snapshots: VolumeSnapshots
    root_disks: RootDisks

    def list_volumes(self, request: Request) -> Response:
        limit = request.params.get("limit", DEFAULT_VOLUMES)
        found = self.volumes.list(request.caller, limit, request.params.get("marker"))
        return Response(200, page([volume_views.volume(view, reveal(request)) for view in found],
                                  limit, found[-1].row.id if found else None, "volumes"))

    def create_volume(self, request: Request) -> Response:
        body = validate_body("VolumeCreate", request.json())
        view = self.volumes.create(VolumeCreate(**body), request.caller, request.request_id)
        return Response(202, volume_views.volume(view, reveal(request)),
                        [("Location", f"/v1/volumes/{view.row.id}")], touched=view.row)

    def show_volume(self, request: Request, volume: str) -> Response:
        view = self.volumes.show(volume, request.caller, project(request))
        return Response(200, volume_views.volume(view, reveal(request)))

    def delete_volume(self, request: Request, volume: str) -> Response:
        return accepted(request, self.volumes.delete(volume, request.caller, request.request_id,
                                                     project(request)))

    def resize_volume(self, request: Request, volume: str) -> Response:
        body = validate_body("VolumeResize", request.json())
        return accepted(request, self.volumes.resize(volume, body["size_gb"], request.caller,
                                                     request.request_id, project(request)))

    def attach_volume(self, request: Request, vm: str) -> Response:
        body = validate_body("AttachmentCreate", request.json())
        return accepted(request, self.attachments.attach(
            vm, body["volume"], bool(body.get("read_only", False)), request.caller,
            request.request_id, project(request)))

    def detach_volume(self, request: Request, vm: str, volume: str) -> Response:
        return accepted(request, self.attachments.detach(vm, volume, request.caller,
                                                         request.request_id, project(request)))

    def list_volume_snapshots(self, request: Request, volume: str) -> Response:
        rows = self.volume_snapshots.list(volume, request.caller, project(request))
        return Response(200, {"snapshots": [volume_views.snapshot(row) for row in rows]})

    def create_volume_snapshot(self, request: Request, volume: str) -> Response:
        body = validate_body("SnapshotCreate", request.json())
        row, task = self.volume_snapshots.create(volume, body["name"], request.caller,
                                                 request.request_id, project(request))
        return Response(202, volume_views.snapshot(row, task, reveal(request)),
                        [("Location", f"/v1/tasks/{task.id}")], touched=row)

    def delete_volume_snapshot(self, request: Request, volume: str, snapshot: str) -> Response:
        return accepted(request, self.volume_snapshots.delete(
            volume, snapshot, request.caller, request.request_id, project(request)))

    def revert_volume(self, request: Request, volume: str) -> Response:
        body = validate_body("Revert", request.json())
        return accepted(request, self.volume_snapshots.revert(
            volume, body["snapshot"], request.caller, request.request_id, project(request)))

    def list_vm_snapshots(self, request: Request, vm: str) -> Response:
        rows = self.root_disks.list(vm, request.caller, project(request))
        return Response(200, {"snapshots": [volume_views.snapshot(row) for row in rows]})

    def create_vm_snapshot(self, request: Request, vm: str) -> Response:
        body = validate_body("SnapshotCreate", request.json())
        row, task = self.root_disks.snapshot(vm, body["name"], request.caller,
                                             request.request_id, project(request))
        return Response(202, volume_views.snapshot(row, task, reveal(request)),
                        [("Location", f"/v1/tasks/{task.id}")], touched=row)

    def delete_vm_snapshot(self, request: Request, vm: str, snapshot: str) -> Response:
        return accepted(request, self.root_disks.delete_snapshot(
            vm, snapshot, request.caller, request.request_id, project(request)))

    def revert_vm(self, request: Request, vm: str) -> Response:
        body = validate_body("Revert", request.json())
        return accepted(request, self.root_disks.revert(vm, body["snapshot"], request.caller,
                                                        request.request_id, project(request)))

    def create_vm_image(self, request: Request, vm: str) -> Response:
        body = validate_body("ImageFromVm", request.json())
        image, task = self.root_disks.image(vm, body["name"], request.caller,
                                            request.request_id, project(request))
        return Response(202, views.image(image, reveal(request)),
                        [("Location", f"/v1/tasks/{task.id}")], touched=image)
