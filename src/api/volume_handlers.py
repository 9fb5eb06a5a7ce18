"""HTTP handlers of volumes, their attachments and snapshots (a mixin of Handlers)."""
from __future__ import annotations

from src.api import volume_views
from src.api.answers import accepted, page, project, reveal
from src.api.http import Request, Response
from src.api.validation import validate_body
from src.services.volumes.attachments import AttachmentService
from src.services.volumes.catalog import VolumeCreate, VolumeService
from src.services.volumes.snapshots import VolumeSnapshots

DEFAULT_VOLUMES = 1000


class VolumeHandlers:
    volumes: VolumeService
    attachments: AttachmentService
    volume_snapshots: VolumeSnapshots

    def list_volumes(self, request: Request) -> Response:
        limit = request.params.get("limit", DEFAULT_VOLUMES)
        found = self.volumes.list(request.caller, limit, request.params.get("marker"))
        return Response(200, page([volume_views.volume(view, reveal(request)) for view in found],
                                  limit, found[-1].row.id if found else None, "volumes"))

    def create_volume(self, request: Request) -> Response:
        body = validate_body("VolumeCreate", request.json())
        view = self.volumes.create(VolumeCreate(**body), request.caller, request.request_id)
        return Response(202, volume_views.volume(view, reveal(request)),
                        [("Location", f"/v1/volumes/{view.row.id}")], project=view.row.project)

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
                        [("Location", f"/v1/tasks/{task.id}")], project=row.project)

    def delete_volume_snapshot(self, request: Request, volume: str, snapshot: str) -> Response:
        return accepted(request, self.volume_snapshots.delete(
            volume, snapshot, request.caller, request.request_id, project(request)))

    def revert_volume(self, request: Request, volume: str) -> Response:
        body = validate_body("Revert", request.json())
        return accepted(request, self.volume_snapshots.revert(
            volume, body["snapshot"], request.caller, request.request_id, project(request)))
