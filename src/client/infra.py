"""`iaas flavor …`, `iaas gpu list`, `iaas host …`: sizes, GPUs and the hosts VMs run on."""
from __future__ import annotations

import sys
from typing import Any

import click

from src.client.session import WAIT_HELP, TaskFailed, session
from src.client.waiting import wait


def _resources(value: dict[str, Any] | None) -> str:
    if not value:
        return "-"
    return f"{value['vcpus']} vCPU, {value['ram']} MiB, {value['disk_gb']} GiB, {value['gpus']} GPU"


@click.group("flavor")
def flavor_group() -> None:
    """Named VM sizes."""


@flavor_group.command("list")
@click.pass_context
def flavor_list(ctx: click.Context) -> None:
    """List flavors."""
    s = session(ctx)
    s.show(s.get("/v1/flavors"), lambda body: s.out.table(
        ("NAME", "CPU", "RAM", "DISK", "GPUS", "DESCRIPTION"),
        [[f["name"], f["cpu"], f"{f['ram']} MiB", f"{f['disk_gb']} GiB",
          f"{f['gpu_count']} {f['gpu_model'] or ''}".strip() if f["gpu_count"] else "-",
          f["description"]] for f in body["flavors"]]))


@flavor_group.command("show")
@click.argument("flavor")
@click.pass_context
def flavor_show(ctx: click.Context, flavor: str) -> None:
    """Show one flavor."""
    s = session(ctx)
    s.show(s.get(f"/v1/flavors/{flavor}"), lambda body: s.out.fields(body.items()))


@flavor_group.command("availability")
@click.argument("flavor")
@click.pass_context
def flavor_availability(ctx: click.Context, flavor: str) -> None:
    """How many VMs of FLAVOR could be created now, and what runs out first."""
    s = session(ctx)

    def render(body: dict[str, Any]) -> None:
        s.out.fields([("flavor", body["flavor"]), ("available", body["available"]),
                      ("limited_by", body["limited_by"])])
        if body.get("hosts"):
            s.out.table(("HOST", "AVAILABLE", "LIMITED BY"),
                        [[h["host"], h["available"], h["limited_by"]] for h in body["hosts"]])

    s.show(s.get(f"/v1/flavors/{flavor}/availability"), render)


@click.group("gpu")
def gpu_group() -> None:
    """GPU inventory (admins)."""


@gpu_group.command("list")
@click.option("--host", help="Only this host's GPUs.")
@click.pass_context
def gpu_list(ctx: click.Context, host: str | None) -> None:
    """Every GPU: free, allocated to which VM, or unavailable and why."""
    s = session(ctx)
    s.show(s.get("/v1/gpus", host=host), lambda body: s.out.table(
        ("HOST", "ADDRESS", "PRODUCT", "NUMA", "STATUS", "VM / REASON"),
        [[g["host"], g["id"], g["product"]["name"] or g["product"]["id"], g["numa_node"],
          g["status"], g["vm_id"] or g["reason"]] for g in body["gpus"]]))


@click.group("host")
def host_group() -> None:
    """libvirt hosts (admins)."""


HOST_COLUMNS = ("NAME", "STATE", "URI", "FREE", "CAPACITY", "VMS", "LAST SEEN")


@host_group.command("list")
@click.pass_context
def host_list(ctx: click.Context) -> None:
    """List hosts with their free and total capacity."""
    s = session(ctx)
    s.show(s.get("/v1/hosts"), lambda body: s.out.table(HOST_COLUMNS, [
        [h["name"], h["state"] + (f" ({h['reason']})" if h.get("reason") else ""), h["uri"],
         _resources(h["free"]), _resources(h["capacity"]), h["vms"], h["last_seen"]]
        for h in body["hosts"]]))


def _render_host(host: dict[str, Any], s: Any) -> None:
    s.out.fields([(key, _resources(value) if key in ("capacity", "allocated", "free")
                   else _drain(value) if key == "drain"
                   else _evacuation(value) if key == "evacuation" else value)
                  for key, value in host.items()])


def _drain(drain: dict[str, Any] | None) -> str | None:
    """`draining: 2/5 moved, 1 moving, 1 waiting; stays: db-1 (why)`."""
    if drain is None:
        return None
    text = (f"{drain['status']}: {drain['moved']}/{drain['vms']} moved, {drain['moving']} "
            f"moving, {drain['waiting']} waiting")
    stays = "; ".join(f"{vm['vm']} ({vm['reason']})" for vm in drain["unmovable"])
    return f"{text}; stays: {stays}" if stays else text


def _evacuation(evacuation: dict[str, Any] | None) -> str | None:
    """`done: 3/3 rebuilt, 0 under way; stays: db-1 (disks_on_down_host); stale copies: 2`."""
    if evacuation is None:
        return None
    tasks = evacuation["tasks"]
    done = sum(1 for task in tasks if task["status"] == "succeeded")
    busy = sum(1 for task in tasks if task["status"] in ("queued", "running"))
    text = f"{evacuation['status']}: {done}/{len(tasks)} rebuilt, {busy} under way"
    stays = "; ".join(f"{vm['vm']} ({vm['reason']})" for vm in evacuation["skipped"])
    stale = len(evacuation["stale_copies"])
    return text + (f"; stays: {stays}" if stays else "") + (
        f"; stale copies: {stale}" if stale else "")


@host_group.command("show")
@click.argument("host")
@click.pass_context
def host_show(ctx: click.Context, host: str) -> None:
    """Show one host."""
    s = session(ctx)
    s.show(s.get(f"/v1/hosts/{host}"), lambda body: _render_host(body, s))


@host_group.command("add")
@click.argument("name")
@click.argument("uri")
@click.option("--storage", type=click.Choice(["shared", "pool"]))
@click.option("--storage-pool")
@click.option("--network")
@click.option("--domain-type")
@click.option("--cpu-allocation-ratio", type=float)
@click.option("--ram-allocation-ratio", type=float)
@click.pass_context
def host_add(ctx: click.Context, /, name: str, uri: str, **options: Any) -> None:
    """Connect to the libvirt host at URI and place VMs on it."""
    s = session(ctx)
    body = {"name": name, "uri": uri, **{k: v for k, v in options.items() if v is not None}}
    s.show(s.api.send("POST", "/v1/hosts", body), lambda shown: _render_host(shown, s))


def _set_enabled(ctx: click.Context, host: str, enabled: bool) -> None:
    s = session(ctx)
    s.show(s.api.send("PATCH", f"/v1/hosts/{host}", {"enabled": enabled}),
           lambda shown: _render_host(shown, s))


@host_group.command("disable")
@click.argument("host")
@click.pass_context
def host_disable(ctx: click.Context, host: str) -> None:
    """No new VMs on HOST; its VMs keep running there (`drain` moves them away)."""
    _set_enabled(ctx, host, False)


@host_group.command("enable")
@click.argument("host")
@click.pass_context
def host_enable(ctx: click.Context, host: str) -> None:
    """Place new VMs on HOST again."""
    _set_enabled(ctx, host, True)


@host_group.command("drain")
@click.argument("host")
@click.pass_context
def host_drain(ctx: click.Context, host: str) -> None:
    """Disable HOST and migrate its VMs away (`iaas host show HOST` shows how far it got)."""
    s = session(ctx)
    s.show(s.api.send("POST", f"/v1/hosts/{host}/drain", {}),
           lambda shown: _render_host(shown, s))


@host_group.command("evacuate")
@click.argument("host")
@click.option("--rebuild-lost-disks", is_flag=True,
              help="Also rebuild VMs whose disks lived only on HOST: a fresh root disk from "
                   "the base image, their lost volumes detached.")
@click.option("--target", help="Rebuild every VM on this host (default: the scheduler's "
                               "pick for each).")
@click.option("--wait/--no-wait", "wait_for", default=None, help=WAIT_HELP)
@click.pass_context
def host_evacuate(ctx: click.Context, host: str, rebuild_lost_disks: bool,
                  target: str | None, wait_for: bool | None) -> None:
    """Rebuild the VMs of HOST, which is down, on other hosts (one task each); list those
    that stay, with why. With --wait, follow every task to its end (exit 1 if one failed)."""
    s = session(ctx)
    body: dict[str, Any] = {"rebuild_lost_disks": rebuild_lost_disks} | (
        {"host": target} if target else {})
    answer = s.api.send("POST", f"/v1/hosts/{host}/evacuate", body)
    s.show(answer, lambda shown: _render_evacuation(shown, s))
    if not s.waits(wait_for):
        return
    failed = []
    for entry in answer.json()["tasks"]:
        ended = wait(s.api, s.get(f"/v1/tasks/{entry['task_id']}").json(),
                     f"evacuate {entry['vm']}", live=sys.stderr.isatty())
        if ended["status"] != "succeeded":
            error = ended.get("error") or {}
            s.out.note(f"error: {entry['vm']} was not rebuilt: {error.get('code', 'unknown')}: "
                       f"{error.get('message', '')}")
            failed.append(entry["task_id"])
        elif not s.out.json:
            s.out.note(f"{entry['vm']} runs on {entry['target']}")
    if failed:
        raise TaskFailed(failed[0])


def _render_evacuation(body: dict[str, Any], s: Any) -> None:
    if body["tasks"]:
        s.out.table(("VM", "TARGET", "TASK"),
                    [[task["vm"], task["target"], task["task_id"]] for task in body["tasks"]],
                    title="rebuilt elsewhere")
    if body["skipped"]:
        s.out.table(("VM", "REASON", "WHY"),
                    [[vm["vm"], vm["reason"], vm["message"]] for vm in body["skipped"]],
                    title="staying")
    if not body["tasks"] and not body["skipped"]:
        s.out.note(f"host {body['host']} has no VMs")


@host_group.command("remove")
@click.argument("host")
@click.pass_context
def host_remove(ctx: click.Context, host: str) -> None:
    """Forget a host that has no VMs."""
    s = session(ctx)
    s.api.send("DELETE", f"/v1/hosts/{host}")
    s.out.note(f"host {host} removed")
