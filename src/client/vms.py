"""`iaas vm …`: list, show, create, delete, power actions, migrate, console, events, stats."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from src.client.output import age
from src.client.session import WAIT_HELP, session

POWER = ("start", "stop", "shutdown", "reboot", "pause", "resume")
CONSOLE_POLL_S = 1.0
VM_COLUMNS = ("NAME", "STATUS", "POWER", "IPS", "FLAVOR", "GPUS", "HOST", "PROJECT", "AGE", "ID")


def status_text(vm: dict[str, Any]) -> str:
    """The status, with the task at work on the VM: `building (create running)`."""
    task = vm.get("task")
    return f"{vm['status']} ({task['action']} {task['status']})" if task else vm["status"]


def size_text(vm: dict[str, Any]) -> str:
    return vm["flavor"] or f"{vm['cpu']} vCPU/{vm['ram']} MiB"


def vm_row(vm: dict[str, Any]) -> list[object]:
    ips = [address["address"] for address in vm.get("ip_addresses") or []]
    return [vm["name"], status_text(vm), vm["power_state"], ips, size_text(vm),
            len(vm["gpus"]) or "-", vm.get("host"), vm["project"], age(vm["created_at"]),
            vm["id"]]


def render_vm(vm: dict[str, Any], out: Any) -> None:
    out.fields([
        ("name", vm["name"]), ("id", vm["id"]), ("project", vm["project"]),
        ("status", status_text(vm)), ("power_state", vm["power_state"]),
        ("actions", vm["actions"]), ("size", size_text(vm)), ("disk_gb", vm["disk_gb"]),
        ("image", vm["image"]["name"]), ("gpus", vm["gpus"]), ("host", vm.get("host")),
        ("ip_addresses", [a["address"] for a in vm.get("ip_addresses") or []]),
        ("nics", [f"{nic['network']} {nic['mac']}"
                  + "".join(f" {a['address']}" for a in nic["addresses"])
                  for nic in vm.get("nics") or []]),
        ("vnc", (vm.get("console") or {}).get("vnc")),
        ("security_groups", vm.get("security_groups") or []),
        *[(name, vm[name]) for name in ("preempt_at", "stop_at") if vm.get(name)],
        ("error", f"{vm['error']['code']}: {vm['error']['message']}" if vm.get("error") else None),
        ("created_at", vm["created_at"]), ("updated_at", vm["updated_at"])])


def render_task(task: dict[str, Any], out: Any) -> None:
    error = task.get("error")
    out.fields([("task", task["id"]), ("vm_id", task["vm_id"]), ("action", task["action"]),
                ("status", task["status"]),
                ("error", f"{error['code']}: {error['message']}" if error else None),
                ("created_at", task["created_at"]), ("finished_at", task["finished_at"])])


@click.group("vm")
def vm_group() -> None:
    """Virtual machines."""


project_option = click.option("--project", help="The VM's project, when a name is ambiguous.")
wait_option = click.option("--wait/--no-wait", default=None, help=WAIT_HELP)


@vm_group.command("list")
@click.option("--status", help="Only VMs of this status.")
@click.option("--name", help="Only VMs of this name.")
@click.option("--limit", type=click.IntRange(1, 1000), help="At most this many.")
@click.pass_context
def vm_list(ctx: click.Context, status: str | None, name: str | None, limit: int | None) -> None:
    """List VMs (members: their project's)."""
    s = session(ctx)
    s.show(s.get("/v1/vms", status=status, name=name, limit=limit),
           lambda body: s.out.table(VM_COLUMNS, [vm_row(vm) for vm in body["vms"]]))


@vm_group.command("show")
@click.argument("vm")
@project_option
@click.pass_context
def vm_show(ctx: click.Context, vm: str, project: str | None) -> None:
    """Show one VM, by name or id."""
    s = session(ctx)
    s.show(s.get(f"/v1/vms/{vm}", project=project), lambda body: render_vm(body, s.out))


def _keys(values: tuple[str, ...]) -> list[str]:
    """--ssh-key values: a public key file's path, or the key itself."""
    keys = []
    for value in values:
        path = Path(value).expanduser()
        keys.append(path.read_text().strip() if path.is_file() else value)
    return keys


@vm_group.command("create")
@click.argument("name")
@click.option("--image", "image_name", required=True, help="Image name or id.")
@click.option("--flavor", help="Flavor name or id (or give --cpu and --ram).")
@click.option("--cpu", type=int, help="vCPUs, with --ram instead of a flavor.")
@click.option("--ram", type=int, help="MiB, with --cpu instead of a flavor.")
@click.option("--disk-gb", type=int, help="Disk size (GiB).")
@click.option("--ssh-key", "ssh_keys", multiple=True, help="A public key, or its file. Repeatable.")
@click.option("--key-name", "key_names", multiple=True, help="A keypair's name. Repeatable.")
@click.option("--user-data", type=click.File("r"), help="cloud-init user-data file.")
@click.option("--host", help="Admins: the host to run on.")
@click.option("--reservation", help="Run in this reservation of your project (its flavor).")
@click.option("--network", "networks", multiple=True,
              help="A network to join, one NIC each in order (the first is eth0). Repeatable; "
                   "default: the host's network.")
@click.option("--wait-for-capacity", is_flag=True,
              help="When it fits nowhere now, wait in the queue (iaas queue) instead of 409.")
@click.option("--security-group", "security_groups", multiple=True,
              help="A security group of your project. Repeatable (default: default).")
@click.option("--preemptible", is_flag=True,
              help="A reservation may stop it (after a notice), never delete it.")
@click.option("--max-runtime", "max_runtime_s", type=click.IntRange(min=1), metavar="SECONDS",
              help="Stop it (never delete it) this long after each start; its GPUs go back.")
@wait_option
@click.pass_context
def vm_create(ctx: click.Context, name: str, image_name: str, flavor: str | None,
              cpu: int | None, ram: int | None, disk_gb: int | None, ssh_keys: tuple[str, ...],
              key_names: tuple[str, ...], user_data: Any, host: str | None,
              reservation: str | None, networks: tuple[str, ...], wait_for_capacity: bool,
              security_groups: tuple[str, ...], preemptible: bool, max_runtime_s: int | None,
              wait: bool | None) -> None:
    """Create a VM; on a terminal, wait until it runs."""
    s = session(ctx)
    if not flavor and (cpu is None or ram is None):
        raise click.UsageError("give --flavor, or both --cpu and --ram")
    body: dict[str, Any] = {"name": name, "image_name": image_name, "flavor": flavor, "cpu": cpu,
                            "ram": ram, "disk_gb": disk_gb, "host": host,
                            "ssh_keys": _keys(ssh_keys) or None,
                            "key_names": list(key_names) or None,
                            "user_data": user_data.read() if user_data else None,
                            "reservation": reservation, "networks": list(networks) or None,
                            "wait_for_capacity": True if wait_for_capacity else None,
                            "security_groups": list(security_groups) or None,
                            "preemptible": True if preemptible else None,
                            "max_runtime_s": max_runtime_s}
    answer = s.api.send("POST", "/v1/vms", {k: v for k, v in body.items() if v is not None})
    vm = answer.json()
    s.run_task(vm["task"], f"create {name}", wait, lambda _t: s.get(f"/v1/vms/{vm['id']}"),
               lambda shown: render_vm(shown, s.out), answer)


@vm_group.command("delete")
@click.argument("vm")
@project_option
@wait_option
@click.pass_context
def vm_delete(ctx: click.Context, vm: str, project: str | None, wait: bool | None) -> None:
    """Delete a VM; on a terminal, wait until it is gone."""
    s = session(ctx)
    answer = s.api.send("DELETE", f"/v1/vms/{vm}", query={"project": project})
    task = answer.json()
    s.run_task(task, f"delete {vm}", wait, lambda t: s.get(f"/v1/tasks/{t['id']}"),
               lambda shown: render_task(shown, s.out), answer)


@vm_group.command("migrate")
@click.argument("vm")
@click.option("--host", help="The target host (default: the scheduler's pick).")
@click.option("--live/--cold", default=None,
              help="Live (default) keeps the guest running; cold stops, moves and starts it "
                   "(the only way for a VM with GPUs).")
@project_option
@wait_option
@click.pass_context
def vm_migrate(ctx: click.Context, vm: str, host: str | None, live: bool | None,
               project: str | None, wait: bool | None) -> None:
    """Move a VM to another host (admins); on a terminal, wait until it runs there."""
    s = session(ctx)
    body = {key: value for key, value in (("host", host), ("live", live)) if value is not None}
    answer = s.api.send("POST", f"/v1/vms/{vm}/migrate", body, query={"project": project})
    task = answer.json()
    s.run_task(task, f"migrate {vm}", wait, lambda t: s.get(f"/v1/vms/{t['vm_id']}"),
               lambda shown: (render_vm if "actions" in shown else render_task)(shown, s.out),
               answer)


def _power(action: str) -> click.Command:
    @click.pass_context
    def command(ctx: click.Context, /, vm: str, project: str | None, wait: bool | None,
                **options: Any) -> None:
        s = session(ctx)
        body = {key: value for key, value in options.items() if value is not None}
        answer = s.api.send("POST", f"/v1/vms/{vm}/{action}", body or None,
                            query={"project": project})
        task = answer.json()
        s.run_task(task, f"{action} {vm}", wait,
                   lambda t: s.get(f"/v1/vms/{t['vm_id']}"),
                   lambda shown: (render_vm if "actions" in shown else render_task)(shown, s.out),
                   answer)

    params: list[click.Parameter] = [click.Argument(["vm"])]
    if action == "shutdown":
        params += [click.Option(["--timeout"], type=int, help="Seconds to wait for the guest."),
                   click.Option(["--force/--no-force"], default=None,
                                help="Power off once the timeout passes.")]
    if action == "reboot":
        params.append(click.Option(["--hard/--soft"], default=None, help="Reset, not ACPI."))
    return click.Command(action, callback=command, help=f"{action.capitalize()} a VM.",
                         params=[*params, *_shared_params()])


def _shared_params() -> list[click.Parameter]:
    return [click.Option(["--project"], help="The VM's project, when a name is ambiguous."),
            click.Option(["--wait/--no-wait"], default=None, help=WAIT_HELP)]


for _action in POWER:
    vm_group.add_command(_power(_action))


@vm_group.command("console")
@click.argument("vm")
@click.option("--tail", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
@project_option
@click.pass_context
def vm_console(ctx: click.Context, vm: str, tail: int, follow: bool, project: str | None) -> None:
    """The end of the VM's serial console."""
    s = session(ctx)
    seen = s.get(f"/v1/vms/{vm}/console", tail=tail, project=project).text.splitlines()
    for line in seen:
        click.echo(line)
    try:
        while follow:
            time.sleep(CONSOLE_POLL_S)
            lines = s.get(f"/v1/vms/{vm}/console", tail=1000, project=project).text.splitlines()
            for line in lines[new_from(seen, lines):]:
                click.echo(line)
            seen = lines
    except KeyboardInterrupt:
        pass


def new_from(before: list[str], after: list[str]) -> int:
    """Where the lines not yet printed start in after: past the longest end of before that
    after begins with (the log only grows; a tail window slides)."""
    for start in range(max(0, len(before) - len(after)), len(before)):
        overlap = before[start:]
        if after[:len(overlap)] == overlap:
            return len(overlap)
    return 0


@vm_group.command("events")
@click.argument("vm")
@click.option("--limit", type=click.IntRange(1, 1000))
@project_option
@click.pass_context
def vm_events(ctx: click.Context, vm: str, limit: int | None, project: str | None) -> None:
    """The VM's tasks: what was asked, when, and how it ended."""
    s = session(ctx)
    s.show(s.get(f"/v1/vms/{vm}/events", limit=limit, project=project),
           lambda body: s.out.table(
               ("ACTION", "RESULT", "ERROR", "CREATED", "FINISHED", "REQUEST"),
               [[e["action"], e["result"], (e.get("error") or {}).get("code"),
                 e["created_at"], e["finished_at"], e["request_id"]] for e in body["events"]]))


@vm_group.command("stats")
@click.argument("vm")
@project_option
@click.pass_context
def vm_stats(ctx: click.Context, vm: str, project: str | None) -> None:
    """CPU, memory, disk and network counters of a running VM."""
    s = session(ctx)

    def render(stats: dict[str, Any]) -> None:
        s.out.fields([("cpu", f"{stats['cpu']['percent']:.1f}% of {stats['cpu']['vcpus']} vCPU"),
                      *((f"memory.{k}", v) for k, v in stats["memory"].items())])
        s.out.table(("DISK", "READ", "WRITTEN"), [[d["name"], d["read_bytes"], d["write_bytes"]]
                                                   for d in stats["disks"]])
        s.out.table(("NIC", "RX", "TX"), [[n["name"], n["rx_bytes"], n["tx_bytes"]]
                                          for n in stats["nics"]])

    s.show(s.get(f"/v1/vms/{vm}/stats", project=project), render)



