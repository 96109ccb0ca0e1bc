"""The import's parity spot-check: re-embed a seeded sample of the rows with the service's own model file and
compare each photo's vector with the one the file brings (cosine).

Vectors from another model file, or from another preprocessing (resize, crop, colour handling), land far from
the service's own (a cosine well under MIN_COSINE), and a look-alike list mixing both spaces would be noise: the
import is refused before anything is written. The photos go the way of a POST /items photo: the service's
fetcher and URL guard (FETCH_ALLOW_PRIVATE honoured), its decode limits and its decode mode (DECODE_DRAFT).
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from dataclasses import dataclass, field

import numpy as np

from app.core.errors import LookalikeError
from app.core.settings import Settings
from app.encode.encoder import OnnxImageEncoder
from app.ingest.decode import load_pixels
from app.ingest.fetch import ImageFetcher
from app.service.embedding import decode_base64
from app.service.import_rows import ImportRow

MIN_COSINE = 0.99
SPARE = 2  # rows kept per sampled row, in case some photos cannot be fetched


@dataclass(frozen=True)
class PhotoCosine:
    number: int  # the row's number in the file
    item_id: str
    photo: int
    cosine: float


@dataclass
class ParityReport:
    rows_checked: int = 0
    unfetchable: int = 0  # sampled rows skipped: a photo could not be fetched or decoded
    seconds: float = 0.0
    cosines: list[PhotoCosine] = field(default_factory=list)

    @property
    def failed(self) -> list[PhotoCosine]:
        """The photos under MIN_COSINE, worst first."""
        return sorted((c for c in self.cosines if c.cosine < MIN_COSINE), key=lambda c: c.cosine)

    @property
    def min_cosine(self) -> float | None:
        return min((c.cosine for c in self.cosines), default=None)


class Sample:
    """A seeded uniform sample of the rows seen (each row gets a random key; the smallest keys are kept)."""

    def __init__(self, size: int, seed: int) -> None:
        self.keep = size * SPARE
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int, ImportRow]] = []  # (-key, number, row): the largest key on top

    def offer(self, row: ImportRow) -> None:
        key = self._rng.random()
        entry = (-key, row.number, row)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, entry)
        elif key < -self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def rows(self) -> list[ImportRow]:
        """The kept rows, smallest key first (the order the check takes them in)."""
        return [row for _, _, row in sorted(self._heap, key=lambda e: -e[0])]


async def _photo_bytes(row: ImportRow, fetcher: ImageFetcher, max_bytes: int) -> list[bytes]:
    data = []
    for photo in row.item.photos():
        data.append(
            await fetcher.fetch(photo.url) if photo.url is not None else decode_base64(photo.base64 or "", max_bytes)
        )
    return data


async def spot_check(
    candidates: list[ImportRow], want: int, encoder: OnnxImageEncoder, fetcher: ImageFetcher, settings: Settings
) -> ParityReport:
    """Re-embed up to `want` of `candidates` (in order; rows whose photos cannot be fetched are passed over)."""
    report = ParityReport()
    started = time.perf_counter()
    meta = encoder.meta
    for row in candidates:
        if report.rows_checked >= want:
            break
        try:
            photos = await _photo_bytes(row, fetcher, settings.fetch_max_bytes)
            pixels = [
                await asyncio.to_thread(
                    load_pixels, data, meta.image_size, settings.image_max_pixels, meta.resample, settings.decode_draft
                )
                for data in photos
            ]
        except LookalikeError:
            report.unfetchable += 1
            continue
        ours = await asyncio.to_thread(encoder.embed, np.stack(pixels))
        cosines = np.sum(ours * row.vectors, axis=1) / np.linalg.norm(ours, axis=1)
        report.cosines += [PhotoCosine(row.number, row.item.item_id, i, float(c)) for i, c in enumerate(cosines)]
        report.rows_checked += 1
    report.seconds = time.perf_counter() - started
    return report
