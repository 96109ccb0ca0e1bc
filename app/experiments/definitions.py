"""Experiment definitions: what PUT /experiments/{name} and the experiments file accept, and what is stored.

The design (unit, variants with their model versions and weights, shadow, salt) is fixed once an experiment
runs: `same_design` tells the registry whether a new definition only repeats it (idempotent) or changes it (409).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.errors import ValidationError, validation_message
from app.core.schemas import MODEL_VERSION_PATTERN

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
ModelVersion = Annotated[str, Field(pattern=MODEL_VERSION_PATTERN)]
Unit = Literal["user", "session"]
State = Literal["running", "stopped"]


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    model_version: ModelVersion
    weight: Annotated[int, Field(strict=True, gt=0, le=1_000_000)]


class ExperimentSpec(BaseModel):
    """The body of PUT /experiments/{name}: the first variant is the control."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: Unit
    variants: Annotated[list[Variant], Field(min_length=2, max_length=8)]
    shadow: bool = False
    # Assignment salt; by default the experiment's name, so every replica derives the same one without coordination.
    salt: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return variants


class Experiment(ExperimentSpec):
    """A stored experiment: its spec plus name, state and times (UTC)."""

    name: Name
    state: State = "running"
    started_at: datetime
    stopped_at: datetime | None = None

    @property
    def control(self) -> Variant:
        return self.variants[0]

    @property
    def effective_salt(self) -> str:
        return self.salt if self.salt is not None else self.name

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    @classmethod
    def start(cls, name: str, spec: ExperimentSpec, now: datetime | None = None) -> Experiment:
        return cls(name=name, started_at=now or datetime.now(UTC), **spec.model_dump())

    def spec(self) -> ExperimentSpec:
        return ExperimentSpec(unit=self.unit, variants=self.variants, shadow=self.shadow, salt=self.salt)


def same_design(a: ExperimentSpec, b: ExperimentSpec) -> bool:
    """True when `b` only repeats `a`'s design: same unit, variants (names, versions, weights, order), shadow, salt."""
    return a.unit == b.unit and a.variants == b.variants and a.shadow == b.shadow and a.salt == b.salt


def parse_spec(body: Any) -> ExperimentSpec:
    """Validate a PUT body; a bad one raises ValidationError (422 validation_error) naming the fields."""
    try:
        return ExperimentSpec.model_validate(body)
    except pydantic.ValidationError as err:
        raise ValidationError(validation_message(err.errors())) from None


def parse_name(name: str) -> str:
    """An experiment name from a URL path; ValidationError (422) unless it matches NAME_PATTERN."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ValidationError(f"name: an experiment name is 1-64 characters of A-Z a-z 0-9 _ . -, got {name!r}")
    return name


def load_experiments_file(path: str | Path) -> list[tuple[str, ExperimentSpec]]:
    """Read LOOKALIKE_EXPERIMENTS_FILE:

        experiments:
          - name: siglip-v2
            unit: user
            variants:
              - {name: control, model_version: v1, weight: 50}
              - {name: treatment, model_version: v2, weight: 50}
            shadow: false

    Any problem (unreadable, not YAML, bad entry, duplicate name) raises ValidationError naming the file and entry.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValidationError(f"{path}: cannot read the experiments file: {err}") from None
    entries = doc.get("experiments") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValidationError(f"{path}: expected a mapping with an 'experiments' list")
    found: list[tuple[str, ExperimentSpec]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValidationError(f"{path}: experiments[{i}] needs a 'name'")
        body = {k: v for k, v in entry.items() if k != "name"}
        name = entry["name"]
        try:
            Experiment.model_validate({**body, "name": name, "started_at": datetime.now(UTC)})
            spec = ExperimentSpec.model_validate(body)
        except pydantic.ValidationError as err:
            raise ValidationError(f"{path}: experiments[{i}] ({name}): {validation_message(err.errors())}") from None
        if any(name == n for n, _ in found):
            raise ValidationError(f"{path}: experiment {name!r} appears twice")
        found.append((name, spec))
    return found
