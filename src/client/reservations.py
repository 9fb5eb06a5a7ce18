"""`iaas reservation create|list|show|cancel` (GPUs booked for a time window) and `iaas queue`
(what waits for capacity, in fair order)."""
from __future__ import annotations

from typing import Any

import click

from src.client.session import session

RESERVATION_COLUMNS = ("ID", "PROJECT", "FLAVOR", "COUNT", "VMS", "START", "END", "STATUS")
QUEUE_COLUMNS = ("POSITION", "NAME", "PROJECT", "FLAVOR", "GPUS", "REASON", "SINCE", "VM ID")


def claimed(reservation: dict[str, Any]) -> str:
    return "; ".join(f"{entry['host']}: {', '.join(entry['gpus'])}"
                     for entry in reservation["hosts"]) or "-"


def reservation_row(reservation: dict[str, Any]) -> list[object]:
    return [reservation["id"], reservation["project"], reservation["flavor"],
            reservation["count"], reservation["vms"], reservation["start"], reservation["end"],
            reservation["status"]]


def render_reservation(reservation: dict[str, Any], out: Any) -> None:
    pairs: list[tuple[str, object]] = [(key, value) for key, value in reservation.items()
                                       if key != "hosts"]
    pairs.append(("gpus", claimed(reservation)))
    out.fields(pairs)


@click.group("reservation")
def reservation_group() -> None:
    """GPUs booked for a time window: VMs of a GPU flavor, created with --reservation."""


@reservation_group.command("create")
@click.option("--flavor", required=True, help="A GPU flavor's name or id.")
@click.option("--count", type=int, required=True, help="How many VMs of the flavor.")
@click.option("--start", required=True, help='"now", or an RFC 3339 time (2026-12-24T09:00:00Z).')
@click.option("--end", required=True, help="An RFC 3339 time after --start.")
@click.option("--project", help="Admins: book for another project.")
@click.pass_context
def reservation_create(ctx: click.Context, flavor: str, count: int, start: str, end: str,
                       project: str | None) -> None:
    """Book the GPUs for [start, end); when they do not fit, the error says from when they do."""
    s = session(ctx)
    body: dict[str, Any] = {"flavor": flavor, "count": count, "start": start, "end": end}
    if project:
        body["project"] = project
    s.show(s.api.send("POST", "/v1/reservations", body),
           lambda shown: render_reservation(shown, s.out))


@reservation_group.command("list")
@click.pass_context
def reservation_list(ctx: click.Context) -> None:
    """Your project's reservations (admins: every project's), by start."""
    s = session(ctx)
    s.show(s.get("/v1/reservations"), lambda body: s.out.table(
        RESERVATION_COLUMNS, [reservation_row(entry) for entry in body["reservations"]]))


@reservation_group.command("show")
@click.argument("reservation")
@click.pass_context
def reservation_show(ctx: click.Context, reservation: str) -> None:
    """Show one reservation with the GPUs it claims."""
    s = session(ctx)
    s.show(s.get(f"/v1/reservations/{reservation}"),
           lambda shown: render_reservation(shown, s.out))


@reservation_group.command("cancel")
@click.argument("reservation")
@click.pass_context
def reservation_cancel(ctx: click.Context, reservation: str) -> None:
    """Cancel: a pending one at once; an active one stops its VMs as at its end."""
    s = session(ctx)
    s.show(s.api.send("DELETE", f"/v1/reservations/{reservation}"),
           lambda shown: render_reservation(shown, s.out))


@click.command("queue")
@click.pass_context
def queue_command(ctx: click.Context) -> None:
    """VMs waiting for capacity (created with --wait-for-capacity), in fair order."""
    s = session(ctx)
    s.show(s.get("/v1/queue"), lambda body: s.out.table(QUEUE_COLUMNS, [
        [entry["position"] or "-", entry["name"], entry["project"], entry["flavor"] or "-",
         entry["gpus"], entry["reason"], entry["since"], entry["vm_id"]]
        for entry in body["queue"]]))
