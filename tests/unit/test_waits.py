"""Long-poll slots: per token, over all tokens, and given back however the wait ends."""
import pytest

from src.services.tasks.waits import DEFAULT_THREADS, WaitLimiter


def test_a_token_holds_at_most_its_share() -> None:
    waits = WaitLimiter(per_token=2, threads=100)
    with waits.slot("a") as first, waits.slot("a") as second, waits.slot("a") as third:
        assert (first, second, third) == (True, True, False)
        with waits.slot("b") as other:
            assert other


def test_all_tokens_together_hold_at_most_half_the_threads() -> None:
    waits = WaitLimiter(per_token=10, threads=5)
    with waits.slot("a") as first, waits.slot("b") as second, waits.slot("c") as third:
        assert (first, second, third) == (True, True, False)
    waits.set_capacity(1)
    assert waits.capacity == 0
    with waits.slot("a") as granted:
        assert not granted


def test_a_slot_is_given_back_when_the_wait_fails() -> None:
    waits = WaitLimiter(per_token=1, threads=2)
    with pytest.raises(RuntimeError), waits.slot("a"):
        raise RuntimeError("the wait broke")
    with waits.slot("a") as granted:
        assert granted


def test_an_app_behind_no_server_has_a_default_capacity() -> None:
    assert WaitLimiter(per_token=4).capacity == DEFAULT_THREADS // 2 > 0
