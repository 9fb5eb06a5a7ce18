"""The GPU ledger of time windows: which GPUs a booking of `count` VMs claims for [start, end)
(never one another claim holds at any moment of it), and the earliest start at which a window
of the same length would fit (the offer a conflict answers with). Pure."""
from __future__ import annotations

from dataclasses import dataclass

from src.utils.clock import utc_plus

Gpu = tuple[str, str]  # (host, PCI address)
Window = tuple[str, str]  # [start, end), utc_now's format


@dataclass(frozen=True)
class Ledger:
    """What a booking decision reads: the assignable GPUs of the flavor's model per host, the
    windows already claimed on each GPU, and the GPUs VMs use now."""

    gpus: dict[str, list[str]]
    claimed: dict[Gpu, list[Window]]
    in_use: frozenset[Gpu] = frozenset()


@dataclass(frozen=True)
class Slot:
    slot: int  # which of the booking's VMs
    host: str
    gpu_id: str


def _free(ledger: Ledger, gpu: Gpu, start: str, end: str) -> bool:
    return all(not (taken_start < end and start < taken_end)
               for taken_start, taken_end in ledger.claimed.get(gpu, ()))


def pick(ledger: Ledger, count: int, per_vm: int, start: str, end: str,
         spare_in_use: bool) -> list[Slot] | None:
    """The GPUs for count VMs of per_vm GPUs each (each VM's on one host), or None when they
    do not fit. GPUs no VM uses now go first; spare_in_use leaves those VMs use out entirely
    (a window that starts now must not stop them at once)."""
    free: dict[str, list[str]] = {}
    for host, ids in ledger.gpus.items():
        usable = [gpu for gpu in ids if _free(ledger, (host, gpu), start, end)
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
    """The earliest start after start at which [t, t + length_s) fits, or None when it never
    does (more GPUs than the hosts have). Only the end of a claim can make room, so those are
    the starts worth trying."""
    ends = sorted({taken_end for windows in ledger.claimed.values()
                   for _, taken_end in windows if taken_end > start})
    for moment in ends:
        if pick(ledger, count, per_vm, moment, utc_plus(moment, length_s), False) is not None:
            return moment
    return None
