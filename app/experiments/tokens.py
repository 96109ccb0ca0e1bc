"""Attribution tokens: what GET /similar hands out and POST /events hands back, checkable on any replica.

A token is URL-safe base64 (no padding) of

    version (1) | request id (12) | issued at, unix s (4) | experiment, variant (u8 length + UTF-8 each)
    | unit id, query item (u16 length + UTF-8 each) | n shown (u8, at most 126) | n x 4-byte item commitments
    | HMAC-SHA256 tag over everything before it, first 16 bytes

The commitment of position p is a keyed hash of (request id, p, item id) truncated to 4 bytes, so "item X was
shown at position p in this answer" is checked without any state: a client guesses an unshown item's
commitment with probability 2^-32. Ten shown items make a token of about 140 characters. The secret
(LOOKALIKE_EVENTS_SECRET) signs; older secrets may still verify while a rotation is under way.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.core.errors import InvalidToken, ItemNotShown, TokenExpired

VERSION = 1
TAG_BYTES = 16
COMMIT_BYTES = 4
MAX_SHOWN = 126  # the report keeps an answer's positions in a 126-bit mask (GET /similar has k <= 100)
CLOCK_SKEW_S = 300  # a token "issued" further in the future than this is not ours


@dataclass(frozen=True)
class TokenClaims:
    request_id: str  # 24 hex characters
    experiment: str
    variant: str
    unit_id: str
    query_item: str
    issued_at: int  # unix seconds
    n_shown: int


def new_request_id() -> str:
    return os.urandom(12).hex()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not isinstance(text, str) or len(text) > 4096:
        raise InvalidToken("the attribution token is not a token")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken("the attribution token is not valid base64") from None


class AttributionTokens:
    def __init__(self, secret: str | bytes, *, max_age_s: float = 86_400, old_secrets: Sequence[str | bytes] = ()):
        keys = [s.encode() if isinstance(s, str) else s for s in (secret, *old_secrets)]
        if any(len(k) < 16 for k in keys):
            raise ValueError("the events secret must be at least 16 bytes")
        # Separate keys for the tag and the commitments, derived from each secret.
        self._keys = [
            (hmac.digest(k, b"lookalike-token-tag", "sha256"), hmac.digest(k, b"lookalike-shown", "sha256"))
            for k in keys
        ]
        self.max_age_s = max_age_s

    @staticmethod
    def _commit(key: bytes, request_id: bytes, position: int, item_id: str) -> bytes:
        msg = request_id + struct.pack(">H", position) + item_id.encode()
        return hmac.digest(key, msg, "sha256")[:COMMIT_BYTES]

    def issue(
        self,
        *,
        request_id: str,
        experiment: str,
        variant: str,
        unit_id: str,
        query_item: str,
        shown: Sequence[str],
        issued_at: float | None = None,
    ) -> str:
        """The token for one answer; `shown` lists the item ids in answer order (position 1 first)."""
        rid = bytes.fromhex(request_id)
        if len(rid) != 12:
            raise ValueError("request_id must be 24 hex characters")
        if len(shown) > MAX_SHOWN:
            raise ValueError(f"at most {MAX_SHOWN} shown items")
        tag_key, commit_key = self._keys[0]
        parts = [struct.pack(">B12sI", VERSION, rid, int(issued_at if issued_at is not None else time.time()))]
        for text, fmt in ((experiment, ">B"), (variant, ">B"), (unit_id, ">H"), (query_item, ">H")):
            raw = text.encode()
            parts.append(struct.pack(fmt, len(raw)) + raw)
        parts.append(struct.pack(">B", len(shown)))
        parts.extend(self._commit(commit_key, rid, p, item) for p, item in enumerate(shown, start=1))
        body = b"".join(parts)
        return _b64(body + hmac.digest(tag_key, body, "sha256")[:TAG_BYTES])

    def decode(self, token: str, *, now: float | None = None, check_age: bool = True) -> TokenClaims:
        """The claims of a genuine token; InvalidToken when garbled or forged, TokenExpired when too old."""
        return self._checked(token, now, check_age)[0]

    def verify(
        self, token: str, item_id: str, position: int, *, now: float | None = None, check_age: bool = True
    ) -> TokenClaims:
        """decode() and check that `item_id` was shown at `position` (1-based); ItemNotShown otherwise."""
        claims, (_, commit_key, commits) = self._checked(token, now, check_age)
        rid = bytes.fromhex(claims.request_id)
        if not (isinstance(position, int) and 1 <= position <= claims.n_shown):
            raise ItemNotShown(f"position {position} is not in the answer (it showed {claims.n_shown} items)")
        expected = commits[(position - 1) * COMMIT_BYTES : position * COMMIT_BYTES]
        if not hmac.compare_digest(expected, self._commit(commit_key, rid, position, item_id)):
            raise ItemNotShown(f"item {item_id!r} was not shown at position {position} in this answer")
        return claims

    def locate(
        self, token: str, item_id: str, *, now: float | None = None, check_age: bool = True
    ) -> tuple[TokenClaims, int]:
        """Like verify() for an event without a position: the claims and the position where `item_id` was shown."""
        claims, (_, commit_key, commits) = self._checked(token, now, check_age)
        rid = bytes.fromhex(claims.request_id)
        for position in range(1, claims.n_shown + 1):
            expected = commits[(position - 1) * COMMIT_BYTES : position * COMMIT_BYTES]
            if hmac.compare_digest(expected, self._commit(commit_key, rid, position, item_id)):
                return claims, position
        raise ItemNotShown(f"item {item_id!r} was not shown in this answer")

    def _checked(
        self, token: str, now: float | None, check_age: bool
    ) -> tuple[TokenClaims, tuple[bytes, bytes, bytes]]:
        claims, opened = self._open(token)
        now = time.time() if now is None else now
        if claims.issued_at > now + CLOCK_SKEW_S:
            raise InvalidToken("the attribution token was issued in the future")
        if check_age and now - claims.issued_at > self.max_age_s:
            raise TokenExpired(f"the attribution token is older than {self.max_age_s:g} s")
        return claims, opened

    def _open(self, token: str) -> tuple[TokenClaims, tuple[bytes, bytes, bytes]]:
        raw = _unb64(token)
        if len(raw) <= TAG_BYTES + 17:
            raise InvalidToken("the attribution token is too short")
        body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        keys = next(
            (k for k in self._keys if hmac.compare_digest(hmac.digest(k[0], body, "sha256")[:TAG_BYTES], tag)), None
        )
        if keys is None:
            raise InvalidToken("the attribution token is forged or was not issued by this service")
        try:
            version, rid, issued_at = struct.unpack_from(">B12sI", body, 0)
            at = 17
            texts = []
            for fmt in (">B", ">B", ">H", ">H"):
                (n,) = struct.unpack_from(fmt, body, at)
                at += struct.calcsize(fmt)
                texts.append(body[at : at + n].decode())
                at += n
            (n_shown,) = struct.unpack_from(">B", body, at)
            commits = body[at + 1 :]
        except (struct.error, UnicodeDecodeError):
            raise InvalidToken("the attribution token is malformed") from None
        if version != VERSION or len(commits) != n_shown * COMMIT_BYTES:
            raise InvalidToken("the attribution token is malformed")
        claims = TokenClaims(rid.hex(), *texts, issued_at=issued_at, n_shown=n_shown)
        return claims, (keys[0], keys[1], commits)
