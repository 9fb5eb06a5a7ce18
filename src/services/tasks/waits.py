"""Long-poll slots: waiting on a task must never take the threads every other request needs."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_THREADS = 16  # an app no server has announced itself to (the in-process test client)


class WaitLimiter:
    """At most per_token waits per token, and at most half of the serving threads in all."""

    def __init__(self, per_token: int, threads: int = DEFAULT_THREADS) -> None:
        self._per_token = per_token
        self._capacity = threads // 2
        self._lock = threading.Lock()
        self._by_token: dict[str, int] = {}
        self._total = 0

    @property
    def capacity(self) -> int:
        """How many requests may wait at once, over every token."""
        return self._capacity

    def set_capacity(self, threads: int) -> None:
        """The server serving the app answers on this many threads; half of them may wait."""
        with self._lock:
            self._capacity = threads // 2

    @contextmanager
    def slot(self, token_id: str) -> Iterator[bool]:
        """True, held until the block ends, when the caller may wait; False: answer now."""
        granted = self._take(token_id)
        try:
            yield granted
        finally:
            if granted:
                self._give_back(token_id)

    def _take(self, token_id: str) -> bool:
        with self._lock:
            held = self._by_token.get(token_id, 0)
            if held >= self._per_token or self._total >= self._capacity:
                return False
            self._by_token[token_id] = held + 1
            self._total += 1
            return True

    def _give_back(self, token_id: str) -> None:
        with self._lock:
            self._total -= 1
            held = self._by_token.pop(token_id) - 1
            if held:
                self._by_token[token_id] = held
