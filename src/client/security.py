"""`iaas security-group create|list|show|delete|rule-add|rule-delete` and `iaas vm
security-group add|remove`: who may reach which port of a project's VMs."""
from __future__ import annotations

import sys
from typing import Any

import click

from src.client.session import WAIT_HELP, Session, TaskFailed, session
from src.client.vms import render_task, vm_group
from src.client.waiting import wait

GROUP_COLUMNS = ("NAME", "PROJECT", "RULES", "VMS", "DESCRIPTION", "ID")
RULE_COLUMNS = ("ID", "PROTOCOL", "PORTS", "FROM")
project_option = click.option("--project", help="Admins: another project's groups.")
wait_option = click.option("--wait/--no-wait", default=None, help=WAIT_HELP)


def ports(rule: dict[str, Any]) -> str:
    if rule["port_min"] is None:
        return "all"
    low, high = rule["port_min"], rule["port_max"]
    return str(low) if low == high else f"{low}-{high}"


def source(rule: dict[str, Any]) -> str:
    return rule["cidr"] or f"group {rule['group']}"


def render_group(group: dict[str, Any], out: Any) -> None:
    out.fields([(key, value) for key, value in group.items()
                if key not in ("rules", "vms", "tasks")]
               + [("vms", ", ".join(group["vms"]) or "-")])
    out.table(RULE_COLUMNS, [[rule["id"], rule["protocol"], ports(rule), source(rule)]
                             for rule in group["rules"]])


def rule_body(protocol: str, port: str | None, cidr: str | None,
              group: str | None) -> dict[str, Any]:
    """A rule from the options: --port 22 or 8000-8100; --cidr or --group."""
    body: dict[str, Any] = {"direction": "ingress", "protocol": protocol}
    if port:
        low, _, high = port.partition("-")
        try:
            body["port_min"] = int(low)
            body["port_max"] = int(high or low)
        except ValueError:
            raise click.UsageError(f"--port {port!r} is not PORT or MIN-MAX") from None
    if (cidr is None) == (group is None):
        raise click.UsageError("give --cidr or --group")
    body["cidr" if cidr else "group"] = cidr or group
    return body


def _changed(s: Session, answer: Any, wanted: bool | None) -> None:
    """Show the group; when waiting, follow the firewall tasks the rule change queued.

    Raises: TaskFailed (a VM's filter could not be brought up to date).
    """
    s.show(answer, lambda shown: render_group(shown, s.out))
    tasks = answer.json().get("tasks") or []
    if not s.waits(wanted):
        for task in tasks:
            s.out.note(f"task {task['id']} {task['status']}; wait for it with: "
                       f"iaas task wait {task['id']}")
        return
    for task in tasks:
        ended = wait(s.api, task, f"firewall of {task['vm_id']}", live=sys.stderr.isatty())
        if ended["status"] != "succeeded":
            error = ended.get("error") or {}
            s.out.note(f"error: task {ended['id']} ({ended['action']}) failed: "
                       f"{error.get('code', 'unknown')}: {error.get('message', '')}")
            raise TaskFailed(ended["id"])


@click.group("security-group")
def security_group() -> None:
    """Security groups: the inbound traffic a project's VMs let in (libvirt nwfilter)."""


@security_group.command("list")
@project_option
@click.pass_context
def group_list(ctx: click.Context, project: str | None) -> None:
    """Your project's groups (a project without any gets `default`)."""
    s = session(ctx)
    s.show(s.get("/v1/security-groups", project=project), lambda body: s.out.table(
        GROUP_COLUMNS, [[g["name"], g["project"], len(g["rules"]), len(g["vms"]),
                         g["description"] or "-", g["id"]] for g in body["security_groups"]]))


@security_group.command("show")
@click.argument("group")
@project_option
@click.pass_context
def group_show(ctx: click.Context, group: str, project: str | None) -> None:
    """Show a group and its rules."""
    s = session(ctx)
    s.show(s.get(f"/v1/security-groups/{group}", project=project),
           lambda shown: render_group(shown, s.out))


@security_group.command("create")
@click.argument("name")
@click.option("--description", default="", help="What it is for.")
@project_option
@click.pass_context
def group_create(ctx: click.Context, name: str, description: str, project: str | None) -> None:
    """Create an empty group (nothing in); add rules with rule-add."""
    s = session(ctx)
    s.show(s.api.send("POST", "/v1/security-groups", {"name": name, "description": description},
                      query={"project": project}), lambda shown: render_group(shown, s.out))


@security_group.command("delete")
@click.argument("group")
@project_option
@click.pass_context
def group_delete(ctx: click.Context, group: str, project: str | None) -> None:
    """Delete a group no VM has (409 security_group_in_use otherwise)."""
    s = session(ctx)
    s.show(s.api.send("DELETE", f"/v1/security-groups/{group}", query={"project": project}),
           lambda _body: s.out.line(f"deleted security group {group}"))


@security_group.command("rule-add")
@click.argument("group")
@click.option("--protocol", type=click.Choice(["tcp", "udp", "icmp", "all"]), required=True)
@click.option("--port", help="PORT or MIN-MAX (tcp, udp; default every port).")
@click.option("--cidr", help="IPv4 source network, e.g. 0.0.0.0/0.")
@click.option("--group", "source_group", help="Or: the members of this group of the project.")
@project_option
@wait_option
@click.pass_context
def rule_add(ctx: click.Context, group: str, protocol: str, port: str | None,
             cidr: str | None, source_group: str | None, project: str | None,
             wait: bool | None) -> None:
    """Let traffic in; running VMs of the group get it at once."""
    s = session(ctx)
    _changed(s, s.api.send("POST", f"/v1/security-groups/{group}/rules",
                           rule_body(protocol, port, cidr, source_group),
                           query={"project": project}), wait)


@security_group.command("rule-delete")
@click.argument("group")
@click.argument("rule")
@project_option
@wait_option
@click.pass_context
def rule_delete(ctx: click.Context, group: str, rule: str, project: str | None,
                wait: bool | None) -> None:
    """Remove a rule by its id (see show)."""
    s = session(ctx)
    _changed(s, s.api.send("DELETE", f"/v1/security-groups/{group}/rules/{rule}",
                           query={"project": project}), wait)


@vm_group.group("security-group")
def vm_security_group() -> None:
    """Attach and detach a VM's security groups (running VMs too)."""


def _membership(ctx: click.Context, method: str, path: str, body: dict[str, Any] | None,
                label: str, project: str | None, wait: bool | None) -> None:
    s = session(ctx)
    answer = s.api.send(method, path, body, query={"project": project})
    task = answer.json()
    s.run_task(task, label, wait, lambda t: s.get(f"/v1/tasks/{t['id']}"),
               lambda shown: render_task(shown, s.out), answer)


@vm_security_group.command("add")
@click.argument("vm")
@click.argument("group")
@click.option("--project", help="The VM's project, when a name is ambiguous.")
@wait_option
@click.pass_context
def vm_group_add(ctx: click.Context, vm: str, group: str, project: str | None,
                 wait: bool | None) -> None:
    """Attach a group of the VM's project."""
    _membership(ctx, "POST", f"/v1/vms/{vm}/security-groups", {"name": group},
                f"attach {group} to {vm}", project, wait)


@vm_security_group.command("remove")
@click.argument("vm")
@click.argument("group")
@click.option("--project", help="The VM's project, when a name is ambiguous.")
@wait_option
@click.pass_context
def vm_group_remove(ctx: click.Context, vm: str, group: str, project: str | None,
                    wait: bool | None) -> None:
    """Detach a group from the VM."""
    _membership(ctx, "DELETE", f"/v1/vms/{vm}/security-groups/{group}", None,
                f"detach {group} from {vm}", project, wait)
