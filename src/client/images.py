"""`iaas image …`: list, show, register a file already on the server, upload, import, delete.

upload and import use the API of issue 15 (a pending image whose file is PUT, and an import task
with progress); until a server has it they answer with its error.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from src.client.output import size
from src.client.pages import every_page
from src.client.session import WAIT_HELP, Session, session
from src.client.waiting import transfer_progress

FORMATS = ("qcow2", "raw")
IMAGE_COLUMNS = ("NAME", "FORMAT", "SIZE", "VIRTUAL", "STATUS", "CREATED", "ID")


def image_row(image: dict[str, Any]) -> list[object]:
    return [image["name"], image["format"], size(image.get("size_bytes")),
            size(image.get("virtual_size_bytes")), image.get("status", "active"),
            image["created_at"], image["id"]]


def render_image(image: dict[str, Any], out: Any) -> None:
    out.fields([(key, size(value) if key.endswith("_bytes") else value)
                  for key, value in image.items()])


@click.group("image")
def image_group() -> None:
    """Base images."""


@image_group.command("list")
@click.pass_context
def image_list(ctx: click.Context) -> None:
    """List images (every page), with their status: only an active image boots; missing_file
    has no file in the server's images directory yet."""
    s = session(ctx)
    s.show(every_page(s, "/v1/images", "images"),
           lambda body: s.out.table(IMAGE_COLUMNS, [image_row(i) for i in body["images"]]))


@image_group.command("show")
@click.argument("image")
@click.pass_context
def image_show(ctx: click.Context, image: str) -> None:
    """Show one image, by name or id."""
    s = session(ctx)
    s.show(s.get(f"/v1/images/{image}"), lambda body: render_image(body, s.out))


@image_group.command("register")
@click.argument("name")
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="qcow2", show_default=True)
@click.pass_context
def image_register(ctx: click.Context, name: str, file: str, fmt: str) -> None:
    """Register FILE, already in the server's images directory, as NAME (admins)."""
    s = session(ctx)
    s.show(s.api.send("POST", "/v1/images", {"name": name, "file": file, "format": fmt}),
           lambda body: render_image(body, s.out))


def _format_of(path: Path, given: str | None) -> str:
    if given:
        return given
    return "qcow2" if path.suffix.lower() == ".qcow2" else "raw"


@image_group.command("upload")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Default: qcow2 for a .qcow2 file, else raw.")
@click.pass_context
def image_upload(ctx: click.Context, name: str, path: Path, fmt: str | None) -> None:
    """Upload a local file as image NAME (admins), with a progress bar on a terminal."""
    s = session(ctx)
    pending = s.api.send("POST", "/v1/images", {"name": name, "format": _format_of(path, fmt)})
    image = pending.json()
    total = path.stat().st_size
    live = sys.stderr.isatty()
    bar = transfer_progress(Console(file=sys.stderr)) if live else None
    step = max(total // 20, 1)
    marks = [0]

    def progress(sent: int) -> None:
        if bar is not None:
            bar.update(bar_id, completed=sent)
        elif sent - marks[0] >= step or sent == total:
            marks[0] = sent
            s.out.note(f"upload {name}: {sent}/{total} bytes")

    if bar is not None:
        bar_id = bar.add_task(f"upload {name}", total=total)
        bar.start()
    try:
        with path.open("rb") as stream:
            answer = s.api.upload(f"/v1/images/{image['id']}/file", stream, total, progress)
    except KeyboardInterrupt:
        s.out.note(f"upload stopped; image {image['id']} stays pending: upload again with "
                   f"iaas image upload, or remove it with: iaas image delete {image['id']}")
        raise
    finally:
        if bar is not None:
            bar.stop()
    _after_upload(s, answer.json(), image["id"])


def _after_upload(s: Session, body: Any, image_id: str) -> None:
    """The upload's answer is the image, or a task that checks the file: follow it then."""
    if isinstance(body, dict) and "action" in body and "status" in body:
        s.run_task(body, "check upload", True, lambda _t: s.get(f"/v1/images/{image_id}"),
                   lambda shown: render_image(shown, s.out), s.get(f"/v1/images/{image_id}"))
    else:
        s.show(s.get(f"/v1/images/{image_id}"), lambda shown: render_image(shown, s.out))


@image_group.command("import")
@click.argument("name")
@click.argument("url")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="qcow2", show_default=True)
@click.option("--sha256", help="The file's expected SHA-256 (hex).")
@click.option("--wait/--no-wait", default=None, help=WAIT_HELP)
@click.pass_context
def image_import(ctx: click.Context, name: str, url: str, fmt: str, sha256: str | None,
                 wait: bool | None) -> None:
    """Have the server fetch URL as image NAME (admins); shows bytes while it downloads."""
    s = session(ctx)
    body = {"name": name, "format": fmt, "url": url, **({"sha256": sha256} if sha256 else {})}
    answer = s.api.send("POST", "/v1/images", body)  # the image, importing, with its task's id
    image = answer.json()
    task = s.get(f"/v1/tasks/{image['task_id']}").json()
    s.run_task(task, f"import {name}", wait, lambda _t: s.get(f"/v1/images/{image['id']}"),
               lambda shown: render_image(shown, s.out), answer)


@image_group.command("delete")
@click.argument("image")
@click.pass_context
def image_delete(ctx: click.Context, image: str) -> None:
    """Delete an image no VM uses (admins)."""
    s = session(ctx)
    s.api.send("DELETE", f"/v1/images/{image}")
    s.out.note(f"image {image} deleted")

