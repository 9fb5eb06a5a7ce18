"""`iaas volume …` and `iaas vm snapshot|revert|image`: volumes, attachments, snapshots, and
images made from a VM's disk. Each change is a task, followed to its end on a terminal."""
from __future__ import annotations

from typing import Any

import click

from src.client.session import WAIT_HELP, Session, session
from src.client.vms import render_task, vm_group

VOLUME_COLUMNS = ("NAME", "SIZE", "STATUS", "ATTACHED TO", "MULTI", "HOST", "ID")
SNAPSHOT_COLUMNS = ("NAME", "SIZE", "STATUS", "CREATED", "ID")
project_option = click.option("--project", help="The project, when a name is ambiguous.")
wait_option = click.option("--wait/--no-wait", default=None, help=WAIT_HELP)


def attached_to(volume: dict[str, Any]) -> str:
    return ", ".join(f"{entry['vm_name']}:{entry['device']}"
                     + (" (ro)" if entry["read_only"] else "")
                     for entry in volume.get("attachments") or []) or "-"


def volume_row(volume: dict[str, Any]) -> list[object]:
    return [volume["name"], f"{volume['size_gb']} GiB", volume["status"], attached_to(volume),
            "yes" if volume["multiattach"] else "no", volume.get("host") or "-", volume["id"]]


def render_volume(volume: dict[str, Any], out: Any) -> None:
    pairs: list[tuple[str, object]] = [
        (key, value) for key, value in volume.items() if key not in ("attachments", "task")]
    pairs.append(("attachments", attached_to(volume)))
    out.fields(pairs)


def _follow(s: Session, answer: Any, label: str, wait: bool | None, volume: str | None,
            project: str | None) -> None:
    """Follow the task the answer holds; then show the volume (or the task when it is gone)."""
    body = answer.json()
    task = body["task"] if body.get("task") else body  # a volume or snapshot holds its task

    def final(_ended: dict[str, Any]) -> Any:
        if volume is None:
            return s.get(f"/v1/tasks/{task['id']}")
        return s.get(f"/v1/volumes/{volume}", project=project)

    render = (lambda shown: render_volume(shown, s.out) if "size_gb" in shown
              and "attachments" in shown else render_task(shown, s.out))
    s.run_task(task, label, wait, final, render, answer)


@click.group("volume")
def volume_group() -> None:
    """Persistent block volumes: data that outlives a VM."""


@volume_group.command("list")
@click.pass_context
def volume_list(ctx: click.Context) -> None:
    """List volumes with what they are attached to."""
    s = session(ctx)
    volumes: list[dict[str, Any]] = []
    marker: str | None = None
    while True:  # every page
        answer = s.get("/v1/volumes", marker=marker)
        body = answer.json()
        volumes += body["volumes"]
        marker = body.get("next_marker")
        if not marker or s.out.json:
            break
    s.show(answer, lambda _body: s.out.table(VOLUME_COLUMNS, [volume_row(v) for v in volumes]))


@volume_group.command("show")
@click.argument("volume")
@project_option
@click.pass_context
def volume_show(ctx: click.Context, volume: str, project: str | None) -> None:
    """Show one volume, by name or id."""
    s = session(ctx)
    s.show(s.get(f"/v1/volumes/{volume}", project=project),
           lambda body: render_volume(body, s.out))


@volume_group.command("create")
@click.argument("name")
@click.option("--size", "size_gb", type=int, required=True, help="Size in GiB.")
@click.option("--image", "image_name", help="Start as a full copy of this image.")
@click.option("--multiattach", is_flag=True, help="May be attached read-only to several VMs.")
@click.option("--host", help="Admins: the host to make it on.")
@wait_option
@click.pass_context
def volume_create(ctx: click.Context, name: str, size_gb: int, image_name: str | None,
                  multiattach: bool, host: str | None, wait: bool | None) -> None:
    """Create a volume; on a terminal, wait until it is available."""
    s = session(ctx)
    body: dict[str, Any] = {"name": name, "size_gb": size_gb}
    if image_name:
        body["image_name"] = image_name
    if multiattach:
        body["multiattach"] = True
    if host:
        body["host"] = host
    answer = s.api.send("POST", "/v1/volumes", body)
    _follow(s, answer, f"create volume {name}", wait, answer.json()["id"], None)


@volume_group.command("delete")
@click.argument("volume")
@project_option
@wait_option
@click.pass_context
def volume_delete(ctx: click.Context, volume: str, project: str | None,
                  wait: bool | None) -> None:
    """Delete a volume attached nowhere, with its snapshots."""
    s = session(ctx)
    answer = s.api.send("DELETE", f"/v1/volumes/{volume}", query={"project": project})
    _follow(s, answer, f"delete volume {volume}", wait, None, project)


@volume_group.command("resize")
@click.argument("volume")
@click.option("--size", "size_gb", type=int, required=True, help="The new size in GiB.")
@project_option
@wait_option
@click.pass_context
def volume_resize(ctx: click.Context, volume: str, size_gb: int, project: str | None,
                  wait: bool | None) -> None:
    """Grow an available volume."""
    s = session(ctx)
    answer = s.api.send("POST", f"/v1/volumes/{volume}/resize", {"size_gb": size_gb},
                        query={"project": project})
    _follow(s, answer, f"resize {volume}", wait, volume, project)


@volume_group.command("attach")
@click.argument("volume")
@click.argument("vm")
@click.option("--read-only", is_flag=True, help="The guest may only read it.")
@project_option
@wait_option
@click.pass_context
def volume_attach(ctx: click.Context, volume: str, vm: str, read_only: bool,
                  project: str | None, wait: bool | None) -> None:
    """Attach VOLUME to VM (hot-plugged when the VM runs)."""
    s = session(ctx)
    answer = s.api.send("POST", f"/v1/vms/{vm}/volumes",
                        {"volume": volume, "read_only": read_only}, query={"project": project})
    _follow(s, answer, f"attach {volume} to {vm}", wait, volume, project)


@volume_group.command("detach")
@click.argument("volume")
@click.argument("vm")
@project_option
@wait_option
@click.pass_context
def volume_detach(ctx: click.Context, volume: str, vm: str, project: str | None,
                  wait: bool | None) -> None:
    """Detach VOLUME from VM (the guest must let go of it)."""
    s = session(ctx)
    answer = s.api.send("DELETE", f"/v1/vms/{vm}/volumes/{volume}", query={"project": project})
    _follow(s, answer, f"detach {volume} from {vm}", wait, volume, project)


@volume_group.command("snapshot")
@click.argument("volume")
@click.argument("name")
@project_option
@wait_option
@click.pass_context
def volume_snapshot(ctx: click.Context, volume: str, name: str, project: str | None,
                    wait: bool | None) -> None:
    """Snapshot VOLUME as NAME."""
    s = session(ctx)
    answer = s.api.send("POST", f"/v1/volumes/{volume}/snapshots", {"name": name},
                        query={"project": project})
    _follow(s, answer, f"snapshot {volume}", wait, volume, project)


@volume_group.command("snapshots")
@click.argument("volume")
@project_option
@click.pass_context
def volume_snapshots(ctx: click.Context, volume: str, project: str | None) -> None:
    """List a volume's snapshots."""
    s = session(ctx)
    s.show(s.get(f"/v1/volumes/{volume}/snapshots", project=project),
           lambda body: _snapshot_table(s, body))


@volume_group.command("revert")
@click.argument("volume")
@click.argument("snapshot")
@project_option
@wait_option
@click.pass_context
def volume_revert(ctx: click.Context, volume: str, snapshot: str, project: str | None,
                  wait: bool | None) -> None:
    """Bring VOLUME's content back to SNAPSHOT (attached nowhere)."""
    s = session(ctx)
    answer = s.api.send("POST", f"/v1/volumes/{volume}/revert", {"snapshot": snapshot},
                        query={"project": project})
    _follow(s, answer, f"revert {volume}", wait, volume, project)


def _snapshot_table(s: Session, body: dict[str, Any]) -> None:
    s.out.table(SNAPSHOT_COLUMNS, [[snap["name"], f"{snap['size_gb']} GiB", snap["status"],
                                    snap["created_at"], snap["id"]]
                                   for snap in body["snapshots"]])


@vm_group.command("snapshot")
@click.argument("vm")
@click.argument("name")
@project_option
@wait_option
@click.pass_context
def vm_snapshot(ctx: click.Context, vm: str, name: str, project: str | None,
                wait: bool | None) -> None:
    """Snapshot a stopped VM's root disk as NAME."""
    s = session(ctx)
    answer = s.api.send("POST", f"/v1/vms/{vm}/snapshots", {"name": name},
                        query={"project": project})
    _follow(s, answer, f"snapshot {vm}", wait, None, project)


@vm_group.command("snapshots")
@click.argument("vm")
@project_option
@click.pass_context
def vm_snapshots(ctx: click.Context, vm: str, project: str | None) -> None:
    """List a VM's root-disk snapshots."""
    s = session(ctx)
    s.show(s.get(f"/v1/vms/{vm}/snapshots", project=project),
           lambda body: _snapshot_table(s, body))


@vm_group.command("revert")
@click.argument("vm")
@click.argument("snapshot")
@project_option
@wait_option
@click.pass_context
def vm_revert(ctx: click.Context, vm: str, snapshot: str, project: str | None,
              wait: bool | None) -> None:
    """Bring a stopped VM's root disk back to SNAPSHOT."""
    s = session(ctx)
    answer = s.api.send("POST", f"/v1/vms/{vm}/revert", {"snapshot": snapshot},
                        query={"project": project})
    _follow(s, answer, f"revert {vm}", wait, None, project)


@vm_group.command("image")
@click.argument("vm")
@click.argument("name")
@project_option
@wait_option
@click.pass_context
def vm_image(ctx: click.Context, vm: str, name: str, project: str | None,
             wait: bool | None) -> None:
    """Make image NAME from a stopped VM's root disk (flattened)."""
    s = session(ctx)
    answer = s.api.send("POST", f"/v1/vms/{vm}/image", {"name": name},
                        query={"project": project})
    image = answer.json()
    task = s.get(f"/v1/tasks/{image['task_id']}").json()
    s.run_task(task, f"image {vm}", wait, lambda _t: s.get(f"/v1/images/{image['id']}"),
               lambda shown: s.out.fields(list(shown.items())), answer)
