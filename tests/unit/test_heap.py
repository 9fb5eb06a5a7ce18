"""A server settles the collector once its app is built: what exists is frozen, the young
generation is collected less often; unsettle gives Python's settings back."""
from __future__ import annotations

import gc
import weakref

from src.servers import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_freezes_the_heap_and_raises_the_thresholds_then_unsettle_restores() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, heap.MIDDLE_THRESHOLD,
                                      heap.OLD_THRESHOLD)
        first, second = Node(), Node()
        first.other, second.other = second, first  # a cycle made after settling
        gone = weakref.ref(first)
        del first, second
        gc.collect()
        assert gone() is None  # still collected
        heap.unsettle()
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == heap.DEFAULTS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
