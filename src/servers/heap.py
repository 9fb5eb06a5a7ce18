"""The garbage collector's settings for a server process, once the app is built.

Python's defaults collect the young generation every 700 new container objects. A 1,000-VM
listing holds some 30,000 (rows, views, their dicts) until its answer is encoded: each was
walked by young collections, promoted, walked again, and together they set off a full
collection of the whole heap about every other listing. Nearly all of it is freed by
reference counting as the answer goes out; the collector only has to find cycles.
"""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # new containers between young collections: a listing ends first
MIDDLE_THRESHOLD = 20  # young collections between collections of the middle generation
OLD_THRESHOLD = 100  # middle collections between full ones (Python also waits for 25% growth)
DEFAULTS = (700, 10, 10)


def settle() -> None:
    """After start-up: collect once, then freeze what is left (modules, the app, its
    connections: kept for the process's life), so full collections no longer walk it; and
    collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def unsettle() -> None:
    """Python's own settings again, the frozen objects collectable (for a process that
    builds another app after this one: tests, benchmarks)."""
    gc.unfreeze()
    gc.set_threshold(*DEFAULTS)
