"""The experiment registry: definitions shared by every replica through a tiny key-value `MetaStore`.

All experiments of one collection live under one key, so one `put_meta` replaces the whole set at once and a
reader never sees half a change. The store implements the protocol (the vector store does, so all replicas share
it); `FileMetaStore` is the JSON-file implementation for tests and a single embedded process.
Read-modify-write is not guarded across replicas: two replicas changing experiments in the same instant may race
(the later write wins); experiments are changed by an operator, not on the request path.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from app.core.errors import ExperimentConflict, ExperimentNotFound
from app.experiments.definitions import Experiment, ExperimentSpec, parse_name, same_design

# Answers whether a model version exists and covers every item (True), else why not (a message).
VersionCheck = Callable[[str], "bool | str"]


class MetaStore(Protocol):
    def get_meta(self, key: str) -> dict | None: ...

    def put_meta(self, key: str, value: dict) -> None: ...


class FileMetaStore:
    """One JSON file per key in a directory; writes are atomic (temp file, fsync, rename, fsync of the directory)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / (quote(key, safe="") + ".json")

    def get_meta(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def put_meta(self, key: str, value: dict) -> None:
        data = json.dumps(value, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".meta-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class ExperimentRegistry:
    """Experiments of one collection; at most one is running."""

    def __init__(
        self,
        store: MetaStore,
        collection: str = "items",
        *,
        version_check: VersionCheck | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._key = f"experiments/{collection}"
        self._version_check = version_check
        self._clock = clock
        self._lock = threading.Lock()  # read-modify-write within this process

    def _load(self) -> dict[str, Experiment]:
        doc = self._store.get_meta(self._key) or {}
        return {name: Experiment.model_validate(raw) for name, raw in doc.get("experiments", {}).items()}

    def _save(self, experiments: dict[str, Experiment]) -> None:
        doc = {"experiments": {name: e.model_dump(mode="json") for name, e in experiments.items()}}
        self._store.put_meta(self._key, doc)

    def experiments(self) -> list[Experiment]:
        return sorted(self._load().values(), key=lambda e: (e.started_at, e.name))

    def get(self, name: str) -> Experiment:
        found = self._load().get(name)
        if found is None:
            raise ExperimentNotFound(name)
        return found

    def running(self) -> Experiment | None:
        return next((e for e in self._load().values() if e.state == "running"), None)

    def put(self, name: str, spec: ExperimentSpec) -> tuple[Experiment, bool]:
        """Create and start `name`, or repeat its design (idempotent). Returns (experiment, created).

        409 experiment_conflict when another experiment is running, when the design of an existing one would
        change (running or stopped: a stopped experiment's data stays tied to its design), or when a variant's
        model version is missing or not fully covered.
        """
        parse_name(name)
        with self._lock:
            experiments = self._load()
            existing = experiments.get(name)
            if existing is not None:
                if not same_design(existing.spec(), spec):
                    raise ExperimentConflict(
                        f"experiment {name!r} is {existing.state}; its unit, variants, weights, shadow and salt "
                        "cannot change (start a new experiment under another name)"
                    )
                return existing, False
            other = next((e for e in experiments.values() if e.state == "running"), None)
            if other is not None:
                raise ExperimentConflict(f"experiment {other.name!r} is running; stop it first")
            self._check_versions(spec)
            experiment = Experiment.start(name, spec, self._clock())
            experiments[name] = experiment
            self._save(experiments)
            return experiment, True

    def stop(self, name: str) -> Experiment:
        """Stop `name` (stopping a stopped experiment changes nothing)."""
        with self._lock:
            experiments = self._load()
            found = experiments.get(name)
            if found is None:
                raise ExperimentNotFound(name)
            if found.state == "stopped":
                return found
            stopped = found.model_copy(update={"state": "stopped", "stopped_at": self._clock()})
            experiments[name] = stopped
            self._save(experiments)
            return stopped

    def apply(self, definitions: Iterable[tuple[str, ExperimentSpec]]) -> list[Experiment]:
        """Apply the experiments file at start-up: each entry is put (a repeat changes nothing)."""
        return [self.put(name, spec)[0] for name, spec in definitions]

    def _check_versions(self, spec: ExperimentSpec) -> None:
        if self._version_check is None:
            return
        problems = []
        for version in dict.fromkeys(v.model_version for v in spec.variants):
            verdict = self._version_check(version)
            if verdict is not True:
                problems.append(f"{version}: {verdict or 'missing or not fully covered'}")
        if problems:
            raise ExperimentConflict("model versions not usable: " + "; ".join(problems))
