"""One image to its vectors: admission permit, download, size checks, one decode, every asked version's batcher.

Writes (POST /items), search by photo (POST /similar) and backfills all reach the encoders through here, so a
photo is refused (429, 413, 415, 422...) the same way whichever route brought it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.errors import ImageTooLarge, LookalikeError, NotReady, Overloaded, TooManyPhotos, ValidationError
from app.core.settings import Settings
from app.encode.encoder import OnnxImageEncoder
from app.encode.model_set import ModelSet
from app.ingest.decode import load_pixels_for
from app.ingest.fetch import ImageFetcher
from app.service.admission import Budget


@dataclass(frozen=True)
class Pending:
    item_id: str
    metadata: dict[str, Any]
    image: bytes | str  # raw bytes, or an image URL still to fetch


@dataclass(frozen=True)
class Embedded:
    data: bytes  # the image bytes (kept in the ImageStore when the item was not written from a URL)
    vectors: dict[str, np.ndarray]  # one per asked model version


@dataclass(frozen=True)
class Listing:
    """A listing to write: its photos in order (photo 0 is the cover), each bytes or a URL still to fetch."""

    item_id: str
    metadata: dict[str, Any]
    photos: list[bytes | str]
    numbered: bool = False  # written with `images` (or several uploads): its photo errors name the photo


@dataclass(frozen=True)
class EmbeddedListing:
    photos: list[bytes]  # each photo's bytes, in order
    vectors: dict[str, np.ndarray]  # [photos, dim] per asked model version


def decode_base64(text: str, max_bytes: int) -> bytes:
    """image_base64 (or a data URL) to bytes: 413 over `max_bytes` (FETCH_MAX_BYTES), 422 when it is not base64."""
    if text.startswith("data:") and "," in text:  # accept data URLs as browsers produce them
        text = text.split(",", 1)[1]
    if len(text) > (max_bytes * 4) // 3 + 4:
        raise ImageTooLarge(f"the image is over the limit of {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("image_base64 is not valid base64") from None


class Embedder:
    def __init__(self, settings: Settings, models: ModelSet, fetcher: ImageFetcher, image_permits: Budget) -> None:
        self.settings = settings
        self.models = models
        self.fetcher = fetcher
        self.image_permits = image_permits  # admission: one permit per image (whatever the number of models)
        # Decodes at once: each may take IMAGE_MAX_PIXELS x 4 bytes (and a copy) while it converts; admitted
        # images beyond these wait here holding only their (budgeted) bytes.
        self._decode_slots = asyncio.Semaphore(settings.decode_concurrency())

    def decode_base64(self, text: str) -> bytes:
        return decode_base64(text, self.settings.fetch_max_bytes)

    async def admitted_listing(self, listing: Listing, versions: list[str]) -> EmbeddedListing:
        """Every photo of a listing through `admitted` (one permit per photo), all or nothing: the first photo
        that fails (in the listing's order) is the answer, naming its index when the listing is numbered."""
        if len(listing.photos) > self.settings.max_photos:
            raise TooManyPhotos(
                f"{len(listing.photos)} photos given; a listing has at most {self.settings.max_photos} "
                "(LOOKALIKE_MAX_PHOTOS)"
            )
        outcomes = await asyncio.gather(
            *(self.admitted(Pending(listing.item_id, {}, photo), versions) for photo in listing.photos),
            return_exceptions=True,
        )
        done: list[Embedded] = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, LookalikeError):
                raise outcome.at_photo(i) if listing.numbered else outcome
            if isinstance(outcome, BaseException):
                raise outcome
            done.append(outcome)
        vectors = {v: np.stack([e.vectors[v] for e in done]) for v in versions}
        return EmbeddedListing([e.data for e in done], vectors)

    async def admitted(self, pending: Pending, versions: list[str]) -> Embedded:
        """`embed` under one image permit: 429 at once when none is free; given back however it ends."""
        with self.image_permits.hold():
            return await self.embed(pending, versions)

    async def embed(self, pending: Pending, versions: list[str]) -> Embedded:
        """Download, decode and encode one image with each of `versions` (the caller paces itself or holds a permit).

        The batchers' queues still bound a caller without a permit (a backfill): 429 overloaded when full.
        """
        # Shed before the costly part: a full queue answers 429 before any download or decode.
        for version in versions:
            batcher = self.models.batchers[version]
            if batcher.saturated():
                raise Overloaded(f"the {version} encoder queue is full ({batcher.queue_max} images); retry shortly")
        data = pending.image
        if isinstance(data, str):
            data = await self.fetcher.fetch(data)
        if len(data) > self.settings.fetch_max_bytes:
            raise ImageTooLarge(f"the image is over the limit of {self.settings.fetch_max_bytes} bytes")
        # From here the image reaches the encoders within one decode: announce it to each version's batcher, so
        # that a batch opening meanwhile waits for it (a failed decode or a cancelled request withdraws it).
        encoders = [self.encoder(v) for v in versions]
        inputs = [(e.meta.image_size, e.meta.resample) for e in encoders]
        with contextlib.ExitStack() as stack:
            slots = [stack.enter_context(self.models.batchers[v].reserve()) for v in versions]
            async with self._decode_slots:
                pixels = await asyncio.to_thread(
                    load_pixels_for, data, inputs, self.settings.image_max_pixels, self.settings.decode_draft
                )
            timeout = self.settings.request_timeout_s
            vectors = await asyncio.gather(
                *(slot.submit(pixels[key], timeout) for slot, key in zip(slots, inputs, strict=True))
            )
        return Embedded(data, dict(zip(versions, vectors, strict=True)))

    def encoder(self, version: str) -> OnnxImageEncoder:
        encoder = self.models.get(version)
        if encoder is None:  # another replica added a version this one has no file for
            raise NotReady(f"model version {version!r} is active but no file of it is loaded here")
        return encoder
