"""`iaas security-group …`, `iaas vm security-group add|remove` and `iaas vm create
--security-group`, run for real against a live server on the test driver."""
from __future__ import annotations

from tests.cli.conftest import Iaas


def test_groups_and_rules_by_command(iaas: Iaas) -> None:
    made = iaas.json("security-group", "create", "web", "--description", "front ends")
    assert (made["name"], made["rules"]) == ("web", [])
    added = iaas("security-group", "rule-add", "web", "--protocol", "tcp", "--port", "8000-8100",
                 "--cidr", "10.0.0.0/8", "--wait")
    assert added.returncode == 0 and "8000-8100" in added.stdout, added.stderr
    also = iaas.json("security-group", "rule-add", "web", "--protocol", "icmp",
                     "--group", "web")
    assert [(r["protocol"], r["group"]) for r in also["rules"]] == [("tcp", None),
                                                                     ("icmp", "web")]
    listed = iaas("security-group", "list")
    assert listed.returncode == 0 and "default" in listed.stdout and "web" in listed.stdout
    bad = iaas("security-group", "rule-add", "web", "--protocol", "tcp", "--port", "x",
               "--cidr", "0.0.0.0/0")
    assert bad.returncode == 2 and "--port" in bad.stderr
    refused = iaas("security-group", "rule-add", "web", "--protocol", "icmp", "--port", "1",
                   "--cidr", "0.0.0.0/0")
    assert refused.returncode == 1 and "error: validation_failed:" in refused.stderr
    created = iaas("vm", "create", "v1", "--image", "base", "--flavor", "small",
                   "--security-group", "web", "--wait")
    assert created.returncode == 0, created.stderr
    assert iaas.json("vm", "show", "v1")["security_groups"] == ["web"]
    attached = iaas("vm", "security-group", "add", "v1", "default", "--wait")
    assert attached.returncode == 0 and "succeeded" in attached.stdout, attached.stderr
    assert iaas.json("vm", "show", "v1")["security_groups"] == ["default", "web"]
    busy = iaas("security-group", "delete", "web")
    assert busy.returncode == 1 and "error: security_group_in_use:" in busy.stderr
    removed = iaas("vm", "security-group", "remove", "v1", "web", "--wait")
    assert removed.returncode == 0, removed.stderr
    rule = iaas.json("security-group", "show", "web")["rules"][0]["id"]
    gone = iaas.json("security-group", "rule-delete", "web", rule)
    assert len(gone["rules"]) == 1
    assert iaas("security-group", "delete", "web").returncode == 0
    assert iaas("security-group", "show", "web").returncode == 1
