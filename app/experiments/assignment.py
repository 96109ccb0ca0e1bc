"""Deterministic assignment of a unit (user or session id) to a variant.

sha256(salt|experiment|unit_id) read as a 64-bit integer, taken modulo the sum of the weights, falls into one
variant's slice. No state: every replica and every restart gives the same answer, and a unit's variant changes
only if the design does (which a running experiment forbids). The modulo bias is below 2^-40 for any weights.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from itertools import accumulate

from app.experiments.definitions import Experiment, Variant


def bucket(experiment: Experiment, unit_id: str) -> int:
    """The unit's point in [0, sum(weights))."""
    key = f"{experiment.effective_salt}|{experiment.name}|{unit_id}".encode()
    value = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    return value % sum(v.weight for v in experiment.variants)


def assign(experiment: Experiment, unit_id: str) -> Variant:
    """The variant this unit is in."""
    bounds = list(accumulate(v.weight for v in experiment.variants))
    return experiment.variants[bisect_right(bounds, bucket(experiment, unit_id))]


def served_variant(experiment: Experiment, assigned: Variant) -> Variant:
    """The variant whose list the user sees: the control in shadow mode (the assigned one is computed and logged)."""
    return experiment.control if experiment.shadow else assigned
