"""What both ways of `lookalike import` share: pass one over the file (rows checked, bad ones reported, the
check's sample drawn), pass two (the valid rows again), and the parity spot-check before anything is written."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from app.cli.client import CommandError
from app.cli.import_source import read_rows
from app.core.settings import Settings
from app.encode.encoder import OnnxImageEncoder
from app.encode.model_set import ModelSet
from app.service.import_rows import ImportRow, RowError, check_row
from app.service.parity import MIN_COSINE, Sample, spot_check
from app.service.runtime import make_fetcher


class ImportRefused(Exception):
    """The spot-check found vectors that the service's model does not make (exit 2)."""


@dataclass
class Scan:
    """Pass one over the file: which rows are valid, which are not (reported), the check's sample."""

    sha256: str  # the file's
    done: int  # rows already committed by an earlier run of this file
    sample: Sample
    valid: int = 0
    last: int = 0  # the file's last row number
    rejected: set[int] = field(default_factory=set)


class Rejects:
    """A bad row: one line on stderr, one JSONL line in --rejects when given."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.count = 0

    def add(self, number: int, raw: Any, reason: str) -> None:
        item_id = raw.get("item_id") if isinstance(raw, dict) else None
        self.count += 1
        tqdm.write(f"row {number} ({item_id if isinstance(item_id, str) else '?'}): {reason}", file=sys.stderr)
        if self.out is not None:
            self.out.write(json.dumps({"row": number, "item_id": item_id, "reason": reason}) + "\n")


def scan(path: Path, dim: int, settings: Settings, scan_state: Scan, rejects: Rejects) -> Scan:
    seen: dict[str, int] = {}
    for number, raw in read_rows(path):
        scan_state.last = number
        if number <= scan_state.done:
            continue
        try:
            if isinstance(raw, str):  # a JSONL line that is not JSON
                raise RowError(raw)
            row = check_row(number, raw, dim, settings.max_photos, settings.fetch_max_bytes)
            first = seen.setdefault(row.item.item_id, number)
            if first != number:
                raise RowError(f"item_id {row.item.item_id!r} is on row {first} too; give each listing once")
        except RowError as exc:
            scan_state.rejected.add(number)
            rejects.add(number, raw, str(exc))
            continue
        scan_state.valid += 1
        scan_state.sample.offer(row)
    return scan_state


def valid_rows(path: Path, dim: int, settings: Settings, scanned: Scan) -> Iterator[ImportRow]:
    """Pass two: the rows pass one found valid (checked again to build them), after the committed ones."""
    for number, raw in read_rows(path):
        if number > scanned.done and number not in scanned.rejected:
            yield check_row(number, raw, dim, settings.max_photos, settings.fetch_max_bytes)


async def parity(args: argparse.Namespace, scanned: Scan, encoder: OnnxImageEncoder, settings: Settings) -> None:
    if args.no_check:
        print(
            "lookalike import: WARNING: --no-check: the vectors are NOT compared with the service's model; "
            "vectors of another model or preprocessing make every look-alike list noise",
            file=sys.stderr,
        )
        return
    fetcher = make_fetcher(settings)
    try:
        report = await spot_check(scanned.sample.rows(), args.check, encoder, fetcher, settings)
    finally:
        await fetcher.aclose()
    print(
        f"spot-check: {report.rows_checked} row(s) re-embedded with {encoder.model_version} in {report.seconds:.1f} s "
        f"(lowest cosine {report.min_cosine if report.min_cosine is None else round(report.min_cosine, 4)}; "
        f"{report.unfetchable} sampled row(s) with a photo that could not be fetched)",
        file=sys.stderr,
    )
    failed = report.failed
    if failed:
        worst = "; ".join(f"row {c.number} ({c.item_id}) photo {c.photo}: cosine {c.cosine:.4f}" for c in failed[:5])
        raise ImportRefused(
            f"refused: {len(failed)} photo vector(s) of {len(report.cosines)} checked are under cosine {MIN_COSINE} "
            f"with the service's model {encoder.model_version}: {worst}. Were they made with another model file "
            f"(embed with the file LOOKALIKE_MODEL_PATH serves as {encoder.model_version}) or another preprocessing "
            "(use models.embed_catalog, which preprocesses like the service)? Nothing was written"
        )
    if report.rows_checked == 0:
        print("spot-check: no sampled row could be fetched: nothing compared", file=sys.stderr)


def version_encoder(models: ModelSet, version: str, why: str) -> OnnxImageEncoder:
    """The encoder of the import's model version; CommandError (saying `why` the import needs it) when no file of
    LOOKALIKE_MODEL_PATH has that version."""
    encoder = models.get(version)
    if encoder is None:
        raise CommandError(
            f"no file of model version {version!r} in LOOKALIKE_MODEL_PATH (it has {list(models.encoders)}): {why}"
        )
    return encoder
