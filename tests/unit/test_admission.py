"""Admission budgets (app/service/admission.py): taken without waiting, all or nothing, given back exactly."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from app.core.errors import Overloaded
from app.service.admission import Budget


def in_use_gauge(resource: str) -> float | None:
    return REGISTRY.get_sample_value("lookalike_admission_in_use", {"resource": resource})


def test_acquire_takes_all_or_nothing_and_release_gives_back() -> None:
    budget = Budget("unit_images", 3)
    assert budget.try_acquire(2) is True
    assert (budget.in_use, budget.free) == (2, 1)
    assert budget.try_acquire(2) is False  # only 1 free: nothing is taken
    assert budget.in_use == 2
    assert budget.try_acquire() is True
    assert budget.try_acquire() is False
    budget.release(3)
    assert (budget.in_use, budget.free) == (0, 3)


def test_the_gauge_follows_what_is_held() -> None:
    budget = Budget("unit_gauge", 10)
    assert in_use_gauge("unit_gauge") == 0
    budget.try_acquire(7)
    assert in_use_gauge("unit_gauge") == 7
    budget.release(4)
    assert in_use_gauge("unit_gauge") == 3
    assert REGISTRY.get_sample_value("lookalike_admission_capacity", {"resource": "unit_gauge"}) == 10


def test_hold_raises_overloaded_at_once_when_nothing_is_free_and_counts_it() -> None:
    budget = Budget("unit_hold", 1)
    rejected_before = REGISTRY.get_sample_value("lookalike_overload_rejections_total") or 0.0
    with budget.hold():
        assert budget.in_use == 1
        with pytest.raises(Overloaded) as refused, budget.hold():
            pass
        assert refused.value.retry_after_s == 1
        assert "admission limit" in refused.value.message
    assert budget.in_use == 0
    assert REGISTRY.get_sample_value("lookalike_overload_rejections_total") == rejected_before + 1


def test_hold_gives_back_when_the_block_fails() -> None:
    budget = Budget("unit_fail", 2)
    with pytest.raises(ValueError, match="broken"), budget.hold(2):
        raise ValueError("broken image")
    assert budget.in_use == 0
    assert budget.try_acquire(2) is True


def test_releasing_more_than_held_or_negative_amounts_is_a_bug() -> None:
    budget = Budget("unit_bug", 2)
    budget.try_acquire()
    with pytest.raises(ValueError):
        budget.release(2)
    with pytest.raises(ValueError):
        budget.try_acquire(-1)
    with pytest.raises(ValueError):
        Budget("unit_empty", 0)
    assert budget.in_use == 1
