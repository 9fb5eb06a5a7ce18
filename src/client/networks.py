"""`iaas network list|create|delete`: the libvirt networks each host offers, and those the
platform defines."""
from __future__ import annotations

from typing import Any

import click

from src.client.session import session

NETWORK_COLUMNS = ("NAME", "HOST", "MODE", "SUBNET", "BRIDGE", "ACTIVE", "MANAGED")


def network_row(network: dict[str, Any]) -> list[object]:
    return [network["name"], network["host"] or "-", network["mode"], network["subnet"] or "-",
            network["bridge"] or "-", "yes" if network["active"] else "no",
            "yes" if network["managed"] else "no"]


@click.group("network")
def network_group() -> None:
    """libvirt networks VMs join (iaas vm create --network NAME)."""


@network_group.command("list")
@click.pass_context
def network_list(ctx: click.Context) -> None:
    """Every host's networks (members: the names a VM may ask for)."""
    s = session(ctx)
    s.show(s.get("/v1/networks"), lambda body: s.out.table(
        NETWORK_COLUMNS, [network_row(network) for network in body["networks"]]))


@network_group.command("create")
@click.argument("name")
@click.option("--host", required=True, help="The host to define it on.")
@click.option("--mode", type=click.Choice(["isolated", "nat", "bridge"]), required=True,
              help="isolated: no forwarding; nat: out through the host; bridge: onto a host "
                   "bridge.")
@click.option("--subnet", help="isolated and nat: an IPv4 CIDR, e.g. 10.60.0.0/24.")
@click.option("--bridge", help="bridge: the existing host bridge, e.g. br0.")
@click.pass_context
def network_create(ctx: click.Context, name: str, host: str, mode: str, subnet: str | None,
                   bridge: str | None) -> None:
    """Define and start a network on a host (admins)."""
    s = session(ctx)
    body = {"name": name, "host": host, "mode": mode, "subnet": subnet, "bridge": bridge}
    s.show(s.api.send("POST", "/v1/networks", {k: v for k, v in body.items() if v is not None}),
           lambda shown: s.out.fields(shown.items()))


@network_group.command("delete")
@click.argument("host")
@click.argument("name")
@click.pass_context
def network_delete(ctx: click.Context, host: str, name: str) -> None:
    """Remove a network the platform defined on HOST, once no VM uses it (admins)."""
    s = session(ctx)
    s.api.send("DELETE", f"/v1/networks/{host}/{name}")
    s.out.note(f"network {name} removed from host {host}")
