"""A download's limits against a server of the test's own that drips: the headers' total
deadline, the body's minimum rate and a stop from outside each end it at once, and close its
connection (the server sees it closed), whatever the per-read timeout."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.utils import fetch
from src.utils.cutoff import Cutoff, Pace
from tests.origin import Origin

REACH = fetch.Policy(allow_private=True, ports=((1, 65535),))
READ_TIMEOUT_S = 60.0  # far longer than any limit here: what ends a download is the limit


@pytest.fixture
def dripping(tmp_path: Path) -> Iterator[Origin]:
    (tmp_path / "image.raw").write_bytes(b"\0" * 4096)
    server = Origin(tmp_path / "image.raw", drip_s=0.1, drip_for_s=8.0)
    yield server
    server.stop()


def closed_soon(origin: Origin, path: str, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while path not in origin.closed:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_headers_that_drip_fail_at_the_header_deadline(dripping: Origin) -> None:
    started = time.monotonic()
    with Cutoff(Pace(header_timeout_s=1.0)) as cutoff, pytest.raises(fetch.Failed) as failed:
        fetch.open_url(f"{dripping.url}/drip-headers", REACH, cutoff, timeout_s=READ_TIMEOUT_S)
    assert failed.value.code == "download_failed"
    assert "headers within 1 s" in failed.value.message
    assert 1.0 <= time.monotonic() - started < 4.0
    assert closed_soon(dripping, "/drip-headers")


def test_the_header_deadline_counts_every_redirect(dripping: Origin) -> None:
    """Four redirects each answered well within the deadline take longer than it in all."""
    dripping.drip_s = 0.4
    with Cutoff(Pace(header_timeout_s=1.0)) as cutoff, pytest.raises(fetch.Failed) as failed:
        fetch.open_url(f"{dripping.url}/slow-redirect/4", REACH, cutoff)
    assert failed.value.code == "download_failed"
    assert dripping.requests[:3] == [f"/slow-redirect/{hops}" for hops in (4, 3, 2)]
    assert "/image.qcow2" not in dripping.requests
    with Cutoff(Pace(header_timeout_s=3.0)) as cutoff, fetch.open_url(
            f"{dripping.url}/slow-redirect/2", REACH, cutoff) as download:
        assert download.length == 4096  # in time: it is the sum that counts


def test_a_body_below_the_minimum_rate_fails(dripping: Origin) -> None:
    started = time.monotonic()
    cutoff = Cutoff(Pace(min_bytes=1000, window_s=1.0))
    with cutoff, fetch.open_url(f"{dripping.url}/drip-body", REACH, cutoff) as download, \
            pytest.raises(fetch.Failed) as failed:
        while download.read1(65536):
            pass
    assert failed.value.code == "download_failed"
    assert "fewer than 1000" in failed.value.message, failed.value.message
    assert 1.0 <= time.monotonic() - started < 4.0
    assert 0 < download.size < 1000
    assert closed_soon(dripping, "/drip-body")


def test_a_body_at_the_minimum_rate_goes_on(dripping: Origin) -> None:
    with Cutoff(Pace(min_bytes=5, window_s=1.0)) as cutoff, fetch.open_url(
            f"{dripping.url}/drip-body", REACH, cutoff) as download:  # ~10 bytes a second
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            assert download.read1(65536)
        assert cutoff.reason is None


def test_its_owner_stops_a_download_blocked_in_a_read(dripping: Origin) -> None:
    """As the task's deadline or a delete does: the reason asked for is the failure."""
    stop_at = time.monotonic() + 0.5

    def ask() -> tuple[str, str] | None:
        return ("task_timeout", "past its deadline") if time.monotonic() >= stop_at else None

    with Cutoff(Pace(), ask) as cutoff, pytest.raises(fetch.Failed) as failed:
        fetch.open_url(f"{dripping.url}/drip-headers", REACH, cutoff, timeout_s=READ_TIMEOUT_S)
    assert (failed.value.code, failed.value.message) == ("task_timeout", "past its deadline")
    assert time.monotonic() - stop_at < 2.0
    assert closed_soon(dripping, "/drip-headers")


def test_a_cut_body_of_unknown_length_is_no_short_success(dripping: Origin) -> None:
    """A socket shut down reads as the end of the body: without a length that would pass."""
    with Cutoff(Pace()) as cutoff, fetch.open_url(f"{dripping.url}/no-length", REACH,
                                                  cutoff) as download:
        assert download.length is None
        cutoff.stop("cancelled", "deleted")
        with pytest.raises(fetch.Failed) as failed:
            while download.read1(65536):
                pass
    assert failed.value.code == "cancelled"
