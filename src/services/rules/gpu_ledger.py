"""The GPU ledger of time windows: which GPUs a booking of `count` VMs claims for [start, end)
(never one another claim holds at any moment of it), and the earliest start at which a window
of the same length would fit (the offer a conflict answers with). Pure."""
from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from src.utils.clock import utc_parse, utc_string

Gpu = tuple[str, str]  # (host, PCI address)
Window = tuple[str, str]  # [start, end), utc_now's format


@dataclass(frozen=True)
class Ledger:
    """What a booking decision reads: the assignable GPUs of the flavor's model per host, the
    windows already claimed on each GPU, the GPUs VMs use now, and those of them no booking may
    take (their VM never agreed to be preempted)."""

    gpus: dict[str, list[str]]
    claimed: dict[Gpu, list[Window]]  # by start: one GPU's windows never overlap (the trigger)
    in_use: frozenset[Gpu] = frozenset()
    kept: frozenset[Gpu] = frozenset()


@dataclass(frozen=True)
class Slot:
    slot: int  # which of the booking's VMs
    host: str
    gpu_id: str


def _free(ledger: Ledger, gpu: Gpu, start: str, end: str) -> bool:
    """No window of the GPU meets [start, end): the last one that starts before end must
    end by start (a bisection, so ten thousand claims cost a few steps)."""
    windows = ledger.claimed.get(gpu)
    if not windows:
        return True
    before = bisect_left(windows, end, key=lambda window: window[0])
    return before == 0 or windows[before - 1][1] <= start


def pick(ledger: Ledger, count: int, per_vm: int, start: str, end: str,
         spare_in_use: bool) -> list[Slot] | None:
    """The GPUs for count VMs of per_vm GPUs each (each VM's on one host), or None when they
    do not fit. GPUs no VM uses now go first; spare_in_use leaves those VMs use out entirely
    (a window that starts now must not stop them at once)."""
    free: dict[str, list[str]] = {}
    for host, ids in ledger.gpus.items():
        usable = [gpu for gpu in ids if _free(ledger, (host, gpu), start, end)
                  and (host, gpu) not in ledger.kept
                  and not (spare_in_use and (host, gpu) in ledger.in_use)]
        free[host] = sorted(usable, key=lambda gpu: ((host, gpu) in ledger.in_use, gpu))
    slots: list[Slot] = []
    # The hosts with the most room first: a booking spreads over as few hosts as it can.
    for host in sorted(free, key=lambda name: (-len(free[name]), name)):
        left = free[host]
        while len(left) >= per_vm and len(slots) // per_vm < count:
            vm = len(slots) // per_vm
            slots += [Slot(vm, host, gpu) for gpu in left[:per_vm]]
            left = left[per_vm:]
    return slots if len(slots) == count * per_vm else None


def next_start(ledger: Ledger, count: int, per_vm: int, start: str,
               length_s: float) -> str | None:
    """The earliest moment after start, to the second, at which [t, t + length_s) fits, or
    None when it never does (more GPUs than the hosts have).

    One sweep over the gaps between each GPU's claims: a GPU can serve a window starting at
    t while t lies in a gap at least length_s long (from the gap's start to its end less the
    length); a window fits once the hosts' GPUs so counted make count VMs. Only a gap's start
    (a claim's end) can be the earliest such t, so those are where it looks.
    """
    if count * per_vm > sum((host, gpu) not in ledger.kept
                            for host, ids in ledger.gpus.items() for gpu in ids):
        return None
    origin = utc_parse(start)
    parsed: dict[str, float] = {}  # windows often share their bounds (back to back, on the hour)

    def seconds(moment: str) -> float:
        found = parsed.get(moment)
        if found is None:
            found = parsed[moment] = (utc_parse(moment) - origin).total_seconds()
        return found

    events: list[tuple[float, int, str]] = []  # (when, 0 enters | 1 leaves, host)
    for host, ids in ledger.gpus.items():
        for gpu in ids:
            if (host, gpu) in ledger.kept:  # held for as long as its VM runs: no gap is known
                continue
            free_from = 0.0
            for taken_start, taken_end in ledger.claimed.get((host, gpu), ()):
                begins, ends = seconds(taken_start), seconds(taken_end)
                if ends <= free_from:
                    continue
                if begins - free_from >= length_s:
                    events += [(free_from, 0, host), (begins - length_s, 1, host)]
                free_from = max(free_from, ends)
            events += [(free_from, 0, host), (math.inf, 1, host)]
    events.sort()
    gpus_free: Counter[str] = Counter()
    vms = 0
    for moment, leaves, host in events:
        before = gpus_free[host] // per_vm
        gpus_free[host] += -1 if leaves else 1
        vms += gpus_free[host] // per_vm - before
        if not leaves and moment > 0 and vms >= count:
            # To the second, rounded up: a window offered must not begin before the gap does.
            return utc_string(_ceil_second(origin + timedelta(seconds=moment)))
    return None


def _ceil_second(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)
