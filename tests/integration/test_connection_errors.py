"""A libvirt error on a connection that is still alive is the step's failure, never "the host
is away" (which makes a task wait and try again until its deadline)."""
from __future__ import annotations

import pytest

from src.hypervisor.connection import Connection
from src.hypervisor.errors import DomainNotFound, HypervisorError, HypervisorUnavailable


def test_an_error_on_a_live_connection_fails_and_a_missing_domain_is_missing() -> None:
    connection = Connection("test:///default")
    try:
        with pytest.raises(HypervisorError) as refused:
            connection.call(lambda conn: conn.defineXML("<domain type='test'><name>x</name>"
                                                        "<memory>no</memory></domain>"))
        assert not isinstance(refused.value, HypervisorUnavailable), refused.value
        with pytest.raises(DomainNotFound):
            connection.call(lambda conn: conn.lookupByName("iaas-nothing"))
        assert connection.connected
    finally:
        connection.close()
