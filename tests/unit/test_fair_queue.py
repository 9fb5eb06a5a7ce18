"""The fair queue: projects in turn, a cap on what each has out, FIFO within a project."""
from __future__ import annotations

from src.services.tasks.fair_queue import FairQueue


def test_projects_are_served_in_turn() -> None:
    queue: FairQueue[str] = FairQueue(cap=10)
    for index in range(3):
        queue.put("a", "other", f"a{index}")
    queue.put("b", "other", "b0")
    taken = [queue.take("other") for _ in range(4)]
    assert [item for _, item in filter(None, taken)] == ["a0", "b0", "a1", "a2"]
    assert queue.take("other") is None


def test_a_project_at_its_cap_waits_while_others_go() -> None:
    queue: FairQueue[str] = FairQueue(cap=2)
    for index in range(5):
        queue.put("a", "other", f"a{index}")
    assert queue.take("other") == ("a", "a0")
    assert queue.take("other") == ("a", "a1")
    assert queue.take("other") is None  # a has 2 out
    queue.put("b", "other", "b0")
    assert queue.take("other") == ("b", "b0")
    queue.done("a", "other")
    assert queue.take("other") == ("a", "a2")


def test_kinds_share_the_cap_but_not_the_queue() -> None:
    queue: FairQueue[str] = FairQueue(cap=1)
    queue.put("a", "build", "create")
    queue.put("a", "other", "stop")
    assert queue.take("other") == ("a", "stop")
    assert queue.take("build") is None  # a's one slot is out
    queue.done("a", "other")
    assert queue.take("build") == ("a", "create")


def test_removed_items_never_come_out() -> None:
    queue: FairQueue[int] = FairQueue(cap=5)
    for value in range(6):
        queue.put("a" if value % 2 else "b", "other", value)
    assert sorted(queue.remove_where(lambda value: value < 3)) == [0, 1, 2]
    assert queue.queued() == 3
    assert sorted(item for _, item in filter(None, (queue.take("other") for _ in range(4)))) == [
        3, 4, 5]


def test_a_kind_of_its_own_cap_leaves_its_workers_to_other_projects() -> None:
    queue: FairQueue[str] = FairQueue(cap=8, kind_caps={"import": 1})
    queue.put("a", "import", "a0")
    queue.put("a", "import", "a1")
    queue.put("b", "import", "b0")
    assert queue.take("import") == ("a", "a0")
    assert queue.take("import") == ("b", "b0")  # a holds its one import: b goes first
    assert queue.take("import") is None
    queue.put("a", "other", "stop")
    assert queue.take("other") == ("a", "stop")  # the cap is the kind's alone
    queue.done("a", "import")
    assert queue.take("import") == ("a", "a1")
