"""The `iaas` command: global options, the command groups, and one exit code per outcome.

Exit codes: 0 success, 1 the API refused or the task failed, 2 usage, 3 the API is unreachable,
130 Ctrl-C (waiting stopped; the task goes on).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from src.client import config
from src.client.accounts import keypair_group, quota_group, task_group, token_group
from src.client.http import Api, Refused, Unreachable
from src.client.images import image_group
from src.client.infra import flavor_group, gpu_group, host_group
from src.client.networks import network_group
from src.client.output import Printer
from src.client.reservations import queue_command, reservation_group
from src.client.security import security_group  # also adds vm security-group
from src.client.session import Session, TaskFailed
from src.client.vms import vm_group
from src.client.volumes import volume_group  # also adds vm snapshot, revert and image
from src.client.waiting import StoppedWaiting

OK, REFUSED, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: exactly the API's JSON.")
@click.option("--url", help=f"The API (default: IAAS_URL, else {config.DEFAULT_URL}).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the token (default: IAAS_TOKEN, else ./iaas-admin-token).")
@click.pass_context
def cli(ctx: click.Context, output: str, url: str | None, token_file: Path | None) -> None:
    """Drive the IaaS API: VMs, volumes, images, flavors, GPUs, hosts, networks, quotas, tokens
    and tasks."""
    try:
        api = Api(config.api_url(url), config.token(token_file))
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None
    ctx.obj = Session(api, Printer(output))


for group in (vm_group, volume_group, image_group, flavor_group, gpu_group, host_group, keypair_group,
              quota_group, token_group, task_group, reservation_group, queue_command,
              network_group,
              security_group):
    cli.add_command(group)


def _say(text: str) -> None:
    click.echo(text, err=True)


def _refused(exc: Refused) -> int:
    where = f" (request {exc.request_id})" if exc.request_id else ""
    _say(f"error: {exc.code}: {exc.message}{where}")
    for problem in exc.details.get("errors") or []:
        if isinstance(problem, dict):
            _say(f"  {problem.get('field')}: {problem.get('message')}")
    return REFUSED


def run(argv: list[str] | None = None) -> int:
    """Run one command; every outcome is an exit code and a message, never a traceback."""
    try:
        result = cli.main(args=argv, prog_name="iaas", standalone_mode=False)
        return result if isinstance(result, int) else OK
    except click.UsageError as exc:
        exc.show()
        return USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except config.ConfigError as exc:
        _say(f"error: {exc}")
        return USAGE
    except Refused as exc:
        return _refused(exc)
    except TaskFailed:
        return REFUSED
    except Unreachable as exc:
        _say(f"error: {exc}")
        return UNREACHABLE
    except StoppedWaiting as exc:
        _say(f"\nStopped waiting; task {exc.task_id} goes on. Wait again with: "
             f"iaas task wait {exc.task_id}")
        return INTERRUPTED
    except (click.Abort, KeyboardInterrupt):
        _say("interrupted")
        return INTERRUPTED


def main() -> int:
    sys.exit(run())
