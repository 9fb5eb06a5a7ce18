"""The guest agent schedule: exponential backoff per VM, a budget per sweep, memory that follows
the running VMs."""
from src.services.vms.agent_asks import (
    FIRST_RETRY_S,
    MAX_RETRY_S,
    REFRESH_S,
    AgentSchedule,
    retry_delay,
)


def test_retry_delay_doubles_up_to_a_ceiling() -> None:
    assert [retry_delay(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    assert FIRST_RETRY_S == 10 and MAX_RETRY_S == 300
    assert retry_delay(1000) == MAX_RETRY_S  # no overflow, however long a guest stays silent


def test_new_vms_are_due_at_once_but_never_more_than_the_budget() -> None:
    schedule = AgentSchedule(budget=3)
    vms = {f"vm-{i}": False for i in range(7)}
    first = schedule.due(vms, now=0.0)
    assert first == ["vm-0", "vm-1", "vm-2"]
    for vm_id in first:
        schedule.unanswered(vm_id, 0.0)
    assert schedule.due(vms, now=0.0) == ["vm-3", "vm-4", "vm-5"]


def test_a_silent_agent_is_asked_again_after_a_growing_wait() -> None:
    schedule, vms, now, asked_at = AgentSchedule(), {"quiet": False}, 0.0, []
    while now <= 1000:
        if schedule.due(vms, now):
            asked_at.append(now)
            schedule.unanswered("quiet", now)
        now += 1.0
    assert asked_at == [0, 10, 30, 70, 150, 310, 610, 910]


def test_an_answering_agent_is_asked_again_only_to_refresh() -> None:
    schedule = AgentSchedule()
    assert schedule.due({"vm": False}, 0.0) == ["vm"]
    schedule.unanswered("vm", 0.0)
    schedule.unanswered("vm", 10.0)
    schedule.answered("vm", 30.0)  # an answer forgets the failures
    assert schedule.due({"vm": True}, 30.0 + REFRESH_S - 1) == []
    assert schedule.due({"vm": True}, 30.0 + REFRESH_S) == ["vm"]
    schedule.unanswered("vm", 400.0)
    assert schedule.due({"vm": True}, 400.0 + FIRST_RETRY_S) == ["vm"]


def test_vms_without_addresses_go_first_then_the_longest_waiting() -> None:
    schedule = AgentSchedule(budget=2)
    schedule.due({"old": True, "older": True}, 0.0)
    schedule.answered("older", 0.0)
    schedule.answered("old", 5.0)
    later = 1000.0
    assert schedule.due({"old": True, "older": True, "new": False}, later) == ["new", "older"]


def test_vms_that_are_no_longer_candidates_are_forgotten() -> None:
    schedule = AgentSchedule()
    schedule.due({"a": False, "b": False}, 0.0)
    schedule.unanswered("a", 0.0)
    schedule.unanswered("b", 0.0)
    assert schedule.due({"b": False}, 1.0) == []  # a stopped: forgotten; b still waits
    assert schedule.due({"a": False, "b": False}, 2.0) == ["a"]  # a restarted: asked at once
