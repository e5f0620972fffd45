"""The tests' waiting helpers: what they return, and what their failures say."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.waiting import eventually, eventually_async, stays

pytestmark = pytest.mark.unit


def test_eventually_returns_the_first_truthy_value() -> None:
    """The condition is polled until truthy, and that value is returned."""
    counter = itertools.count()
    assert eventually(lambda: max(next(counter) - 2, 0), 5, what="a count", interval_s=0) == 1


def test_eventually_names_what_it_waited_for_the_last_value_and_the_detail() -> None:
    """A timeout says what was awaited, the last value, and the detail the caller gave."""
    with pytest.raises(AssertionError, match=r"^waited 0.05 s for the rows; last: 0; stats=7$"):
        eventually(lambda: 0, 0.05, what="the rows", interval_s=0.01, detail=lambda: "stats=7")


def test_eventually_treats_ignored_errors_as_not_yet_and_reports_the_last_one() -> None:
    """An ignored exception means "not yet"; at the timeout it is named and chained."""

    def refused() -> bool:
        raise ConnectionRefusedError("not serving")

    with pytest.raises(AssertionError, match="last: ConnectionRefusedError: not serving") as caught:
        eventually(refused, 0.05, what="the endpoint", interval_s=0.01, ignoring=(OSError,))
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_eventually_ends_at_once_on_a_failed_assertion_in_the_condition() -> None:
    """A condition's own assertion (a thread that died, say) is not retried."""
    calls = []

    def dead() -> bool:
        calls.append(1)
        raise AssertionError("the loader stopped")

    with pytest.raises(AssertionError, match="the loader stopped"):
        eventually(dead, 5, what="anything")
    assert len(calls) == 1


def test_eventually_async_awaits_coroutine_conditions_and_times_out_the_same_way() -> None:
    """The async variant accepts plain and coroutine conditions and fails like the other."""

    async def ready() -> str:
        return "ready"

    assert asyncio.run(eventually_async(ready, 1, what="readiness")) == "ready"
    with pytest.raises(AssertionError, match=r"^waited 0.05 s for the lag; last: False$"):
        asyncio.run(eventually_async(lambda: False, 0.05, what="the lag", interval_s=0.01))


def test_stays_fails_as_soon_as_the_condition_breaks() -> None:
    """stays() passes while the condition holds and names it when it stops holding."""
    stays(lambda: True, 0.05, what="nothing loaded", interval_s=0.01)
    values = iter([True, True, False])
    with pytest.raises(AssertionError, match=r"^nothing loaded held for only .* of 5 s; last: False$"):
        stays(lambda: next(values), 5, what="nothing loaded", interval_s=0)
