"""`iaas token …`, `iaas quota …`, `iaas keypair …` and `iaas task …`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from src.client.pages import every_page
from src.client.session import TaskFailed, session
from src.client.vms import render_task
from src.client.waiting import wait


@click.group("token")
def token_group() -> None:
    """API tokens."""


@token_group.command("create")
@click.option("--project", required=True)
@click.option("--role", type=click.Choice(["admin", "member"]), default="member",
              show_default=True)
@click.option("--expires-in-days", type=click.FloatRange(min=0, min_open=True))
@click.option("--description", default="")
@click.pass_context
def token_create(ctx: click.Context, project: str, role: str, expires_in_days: float | None,
                 description: str) -> None:
    """Make a token; its secret is printed this once."""
    s = session(ctx)
    body: dict[str, Any] = {"project": project, "role": role, "description": description}
    if expires_in_days is not None:
        body["expires_in_days"] = expires_in_days
    answer = s.api.send("POST", "/v1/tokens", body)

    def render(made: dict[str, Any]) -> None:
        s.out.note(f"token {made['id']} (project {made['project']}, role {made['role']}, "
                   f"expires {made['expires_at'] or 'never'}); the secret is shown only now:")
        s.out.line(made["token"])

    s.show(answer, render)


@token_group.command("list")
@click.pass_context
def token_list(ctx: click.Context) -> None:
    """Tokens you may see (admins: all; every page), without their secrets."""
    s = session(ctx)
    s.show(every_page(s, "/v1/tokens", "tokens"), lambda body: s.out.table(
        ("ID", "PROJECT", "ROLE", "STATE", "DESCRIPTION", "CREATED BY"),
        [[t["id"] + (" *" if t["current"] else ""), t["project"], t["role"],
          "revoked" if t["revoked_at"] else f"expires {t['expires_at'] or 'never'}",
          t["description"], t["created_by"]] for t in body["tokens"]]))


@token_group.command("revoke")
@click.argument("token_id")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a token at once."""
    s = session(ctx)
    s.api.send("DELETE", f"/v1/tokens/{token_id}")
    s.out.note(f"token {token_id} revoked")


@click.group("quota")
def quota_group() -> None:
    """Project quotas."""


def _render_quota(body: dict[str, Any], s: Any) -> None:
    """Every resource the server has a limit of, in its order."""
    s.out.table(("RESOURCE", "IN USE", "LIMIT"),
                [[r, body["in_use"].get(r), limit if limit is not None else "unlimited"]
                 for r, limit in body["limits"].items()], title=f"project {body['project']}")


def _own_project(s: Any) -> str:
    tokens = every_page(s, "/v1/tokens", "tokens").json()["tokens"]
    return str(next(t["project"] for t in tokens if t["current"]))


@quota_group.command("show")
@click.argument("project", required=False)
@click.pass_context
def quota_show(ctx: click.Context, project: str | None) -> None:
    """A project's limits and usage (default: your token's project)."""
    s = session(ctx)
    s.show(s.get(f"/v1/projects/{project or _own_project(s)}/quota"),
           lambda body: _render_quota(body, s))


def _limit(value: str) -> int | None:
    if value.lower() in ("none", "unlimited"):
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a whole number nor 'unlimited'") from None


@quota_group.command("set")
@click.argument("project")
@click.option("--instances")
@click.option("--vcpus")
@click.option("--ram", help="MiB")
@click.option("--gpus")
@click.option("--disk-gb")
@click.option("--images-gb", help="GiB the project's images store")
@click.option("--images", help="How many images")
@click.option("--keypairs", help="How many keypairs")
@click.option("--tokens", help="How many live tokens its members made")
@click.option("--volumes", help="How many volumes")
@click.option("--volumes-gb", help="GiB its volumes may hold together")
@click.pass_context
def quota_set(ctx: click.Context, /, project: str, **limits: str | None) -> None:
    """Set limits (admins): a whole number, or 'unlimited'."""
    s = session(ctx)
    body = {key: _limit(value) for key, value in limits.items() if value is not None}
    if not body:
        raise click.UsageError("give at least one of " + " ".join(
            f"--{key.replace('_', '-')}" for key in limits))
    s.show(s.api.send("PUT", f"/v1/projects/{project}/quota", body),
           lambda shown: _render_quota(shown, s))


@click.group("keypair")
def keypair_group() -> None:
    """SSH keypairs to name in `vm create --key-name`."""


@keypair_group.command("list")
@click.pass_context
def keypair_list(ctx: click.Context) -> None:
    """List keypairs (every page; admins: every project's)."""
    s = session(ctx)
    s.show(every_page(s, "/v1/keypairs", "keypairs"), lambda body: s.out.table(
        ("NAME", "PROJECT", "FINGERPRINT", "CREATED"),
        [[k["name"], k.get("project"), k.get("fingerprint"), k.get("created_at")]
         for k in body["keypairs"]]))


@keypair_group.command("show")
@click.argument("name")
@click.pass_context
def keypair_show(ctx: click.Context, name: str) -> None:
    """Show one keypair."""
    s = session(ctx)
    s.show(s.get(f"/v1/keypairs/{name}"), lambda body: s.out.fields(body.items()))


@keypair_group.command("create")
@click.argument("name")
@click.option("--public-key", "public_key", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An OpenSSH public key file, e.g. ~/.ssh/id_ed25519.pub.")
@click.pass_context
def keypair_create(ctx: click.Context, name: str, public_key: Path) -> None:
    """Register a public key as NAME."""
    s = session(ctx)
    body = {"name": name, "public_key": public_key.read_text().strip()}
    s.show(s.api.send("POST", "/v1/keypairs", body), lambda shown: s.out.fields(shown.items()))


@keypair_group.command("delete")
@click.argument("name")
@click.pass_context
def keypair_delete(ctx: click.Context, name: str) -> None:
    """Delete a keypair (VMs made with it keep their key)."""
    s = session(ctx)
    s.api.send("DELETE", f"/v1/keypairs/{name}")
    s.out.note(f"keypair {name} deleted")


@click.group("task")
def task_group() -> None:
    """The background work behind creates, deletes and actions."""


@task_group.command("show")
@click.argument("task_id")
@click.pass_context
def task_show(ctx: click.Context, task_id: str) -> None:
    """Show a task."""
    s = session(ctx)
    s.show(s.get(f"/v1/tasks/{task_id}"), lambda body: render_task(body, s.out))


@task_group.command("wait")
@click.argument("task_id")
@click.pass_context
def task_wait(ctx: click.Context, task_id: str) -> None:
    """Wait for a task to end; exit 1 if it failed."""
    s = session(ctx)
    ended = wait(s.api, s.get(f"/v1/tasks/{task_id}").json(), f"task {task_id[:8]}",
                 live=sys.stderr.isatty())
    s.show(s.get(f"/v1/tasks/{task_id}"), lambda body: render_task(body, s.out))
    if ended["status"] != "succeeded":
        raise TaskFailed(task_id)
