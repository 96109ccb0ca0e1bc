"""ImageStore: the kept bytes of items written from an upload or base64 (URL items keep their URL instead).

One file per image write, named by `image_key(item_id, write_id)`: a replaced item gets a new file, so a reader of
the old payload never sees the new bytes under the old key. `put` is durable before it returns (temporary file,
fsync, rename, fsync of the folder), so a 2xx write never loses its image on a crash.

Order of a write: put the new file, write the store, then delete the replaced item's file. A crash between the two
last steps (or a store write that fails after the put) leaves an orphan file that no payload names: harmless
except for its disk space; `orphans(known_keys)` lists them, given every payload's `image_key`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_TMP_SUFFIX = ".tmp"


def image_key(item_id: str, write_id: str) -> str:
    """A file name safe on every file system (item ids may hold any character), two-level fan-out prefix."""
    digest = hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:32]
    return f"{digest[:2]}/{digest}-{write_id}"


def payload_image_keys(payload: dict[str, Any]) -> list[str]:
    """Every kept-image key a payload names: the cover's `image_key` and each photo's (`photos[i].image_key`)."""
    keys = [payload.get("image_key")]
    photos = payload.get("photos")
    if isinstance(photos, list):
        keys += [p.get("image_key") for p in photos if isinstance(p, dict)]
    return list(dict.fromkeys(k for k in keys if isinstance(k, str)))


def photo_payloads(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One payload per photo of the listing, that photo's source as its image_url / image_key (a listing from
    before several photos: its own payload), so an image loader reads any photo as it reads a cover."""
    photos = payload.get("photos")
    if not isinstance(photos, list) or not photos:
        return [payload]
    base = {k: v for k, v in payload.items() if k not in ("image_url", "image_key")}
    return [{**base, **{k: p[k] for k in ("image_url", "image_key") if k in p}} for p in photos if isinstance(p, dict)]


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        folder, _, name = key.partition("/")
        if not folder or not name or "/" in name or name.startswith(".") or ".." in key:
            raise ValueError(f"not an image key: {key!r}")
        return self.root / folder / name

    def put(self, key: str, data: bytes) -> None:
        """Write `data` under `key`, durably, replacing nothing visible until it is complete."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def keys(self) -> Iterator[str]:
        """Every kept image's key (temporary files of interrupted puts excluded)."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir():
                for file in sorted(folder.iterdir()):
                    if not file.name.startswith("."):
                        yield f"{folder.name}/{file.name}"

    def orphans(self, known_keys: Iterable[str]) -> list[str]:
        """Keys of files no payload names (`known_keys`: every payload's image_key): crash leftovers."""
        known = set(known_keys)
        return [key for key in self.keys() if key not in known]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
