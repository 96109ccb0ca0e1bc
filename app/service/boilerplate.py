"""Boilerplate photos: a picture that many listings carry (a shop's size chart, logo, "how to measure").

Such a photo would make all those listings look alike, so it leaves matching (app/store/photos.py): it is
still shown, never used to rank. At each write, every new photo (serving version) asks the store for the
OTHER listings holding a near-copy (cosine >= BOILERPLATE_MIN_COSINE); with at least
BOILERPLATE_MIN_LISTINGS of them, the photo is boilerplate: marked in the new listing's payload (written
with it) and in those listings' payloads (patched right after the write).

A mark is `{"write_id": ..., "photos": [indexes]}` in the payload: it holds for the listing's write it
names, so a mark that races a replace of that listing (or lands after it) is ignored, never wrong. A kill -9
between the write and the patches, or two listings written at once, leaves the others unmarked until the
next write of that photo marks them. Marks stay when listings go: a size chart stays a size chart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.core.settings import Settings
from app.service.store_access import StoreAccess
from app.store.photos import boilerplate_photos


class Boilerplate:
    def __init__(self, access: StoreAccess, settings: Settings) -> None:
        self._access = access
        self._min_listings = settings.boilerplate_min_listings
        self._min_cosine = settings.boilerplate_min_cosine

    async def find(self, payloads: list[dict[str, Any]], photos: list[np.ndarray | None]) -> dict[str, set[int]]:
        """Mark the boilerplate photos of the listings about to be written (in their payloads), and return the
        photos of stored listings to mark after the write ({item_id: indexes})."""
        others: dict[str, set[int]] = {}
        limit = max(2 * self._min_listings, 10)  # the marks of more of the others at once
        asked = [
            (p, i, row)
            for p, rows in zip(payloads, photos, strict=True)
            if rows is not None
            for i, row in enumerate(rows)
        ]
        for payload, i, row in asked:  # one small query per photo, one after another: each within the store timeout
            copies = await self._copies(row, limit, payload["item_id"])
            if len(copies) >= self._min_listings:
                mark = payload.setdefault("boilerplate", {"write_id": payload["write_id"], "photos": []})
                mark["photos"].append(i)
                for item_id, indexes in copies.items():
                    others.setdefault(item_id, set()).update(indexes)
        for payload in payloads:  # written now: their stored payloads are replaced
            others.pop(payload["item_id"], None)
        return others

    async def _copies(self, vector: np.ndarray, limit: int, item_id: str) -> dict[str, list[int]]:
        store = self._access.store
        serving = self._access.serving
        return await self._access.call(
            "photo_copies", store.photo_copies, vector, self._min_cosine, limit, item_id, serving
        )

    async def mark_others(self, others: dict[str, set[int]]) -> None:
        """Add the marks found by `find` to the stored listings (only where a mark is new)."""
        if not others:
            return
        store = self._access.store
        ids = sorted(others)
        for item_id, payload in zip(ids, await self._access.call("get", store.get_many, ids), strict=True):
            if payload is None:
                continue
            now = boilerplate_photos(payload)
            wanted = sorted(set(now) | others[item_id])
            if wanted != now:
                mark = {"write_id": payload.get("write_id"), "photos": wanted}
                await self._access.call("patch", store.patch, item_id, {"boilerplate": mark})
