"""Turn volume, attachment and snapshot results into the JSON objects the API returns."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from src.api import views
from src.services.volumes.catalog import VolumeView

if TYPE_CHECKING:  # the rows services return; views only read their fields
    from src.database.snapshots import SnapshotRow
    from src.database.tasks import TaskRow


def volume(view: VolumeView, reveal: bool) -> dict[str, Any]:
    row = view.row
    source = ({"id": row.source_image_id, "name": row.source_image_name}
              if row.source_image_id else None)
    return {"id": row.id, "name": row.name, "project": row.project, "size_gb": row.size_gb,
            "status": view.status, "multiattach": row.multiattach, "host": row.host,
            "source_image": source,
            "attachments": [views.attachment(entry) for entry in view.attachments],
            "task": views.task(view.task, reveal) if view.task else None,
            "error": views.error(row.error_code, row.error_message, reveal),
            "created_at": row.created_at, "updated_at": row.updated_at}


def snapshot(row: SnapshotRow, task: TaskRow | None = None,
             reveal: bool = False) -> dict[str, Any]:
    body = {"id": row.id, "name": row.name, "size_gb": row.size_gb, "status": row.status,
            "created_at": row.created_at}
    if task is not None:
        body["task"] = views.task(task, reveal)
    return body
