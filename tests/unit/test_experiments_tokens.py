"""Attribution tokens: genuine ones verify on any instance with the secret; forged, garbled, expired ones and
items that were not shown are refused with their error codes."""

from __future__ import annotations

import base64

import pytest

from app.core.errors import InvalidToken, ItemNotShown, TokenExpired
from app.experiments.tokens import AttributionTokens, new_request_id

SECRET = "a-secret-of-at-least-16-bytes"
NOW = 1_790_000_000
SHOWN = [f"item-{i}" for i in range(10)]


def issue(tokens: AttributionTokens, **overrides) -> tuple[str, str]:
    rid = new_request_id()
    fields = dict(
        request_id=rid, experiment="exp", variant="treatment", unit_id="user-ü-1", query_item="q-1", shown=SHOWN,
        issued_at=NOW,
    )  # fmt: skip
    return tokens.issue(**(fields | overrides)), rid


def test_a_token_carries_its_claims_and_is_compact() -> None:
    tokens = AttributionTokens(SECRET, max_age_s=3600)
    token, rid = issue(tokens)
    assert len(token) < 160 and token.isascii() and "=" not in token and "+" not in token and "/" not in token
    claims = AttributionTokens(SECRET).verify(token, "item-3", 4, now=NOW + 10)  # another replica
    assert (claims.request_id, claims.experiment, claims.variant) == (rid, "exp", "treatment")
    assert (claims.unit_id, claims.query_item, claims.issued_at, claims.n_shown) == ("user-ü-1", "q-1", NOW, 10)
    assert tokens.locate(token, "item-9", now=NOW)[1] == 10


@pytest.mark.parametrize(("item", "position"), [("item-3", 3), ("item-99", 1), ("item-0", 11), ("item-0", 0)])
def test_an_item_not_shown_at_that_position_is_refused(item: str, position: int) -> None:
    tokens = AttributionTokens(SECRET)
    token, _ = issue(tokens)
    with pytest.raises(ItemNotShown) as err:
        tokens.verify(token, item, position, now=NOW)
    assert err.value.code == "item_not_shown" and err.value.status == 422
    with pytest.raises(ItemNotShown):
        tokens.locate(token, "item-99", now=NOW)


def test_an_old_token_is_expired_unless_age_is_not_checked() -> None:
    tokens = AttributionTokens(SECRET, max_age_s=3600)
    token, _ = issue(tokens)
    tokens.verify(token, "item-0", 1, now=NOW + 3600)
    with pytest.raises(TokenExpired) as err:
        tokens.verify(token, "item-0", 1, now=NOW + 3601)
    assert err.value.code == "token_expired" and err.value.status == 422
    assert tokens.verify(token, "item-0", 1, now=NOW + 10**6, check_age=False).n_shown == 10


def flip(token: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[at] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_every_single_bit_change_is_refused_as_forged() -> None:
    tokens = AttributionTokens(SECRET)
    token, _ = issue(tokens)
    size = len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for at in range(size):
        with pytest.raises(InvalidToken):
            tokens.verify(flip(token, at), "item-0", 1, now=NOW)


@pytest.mark.parametrize("garbage", ["", "x", "!!!!", "a" * 5000, "AAAA" * 10, "é", "A" * 61])
def test_garbled_tokens_are_invalid(garbage: str) -> None:
    with pytest.raises(InvalidToken) as err:
        AttributionTokens(SECRET).verify(garbage, "item-0", 1, now=NOW)
    assert err.value.code == "invalid_token" and err.value.status == 422


def test_another_secret_or_a_future_token_is_invalid_and_old_secrets_still_verify() -> None:
    old = AttributionTokens("the-old-secret-0123456789")
    token, _ = issue(old)
    with pytest.raises(InvalidToken):
        AttributionTokens(SECRET).verify(token, "item-0", 1, now=NOW)
    rotated = AttributionTokens(SECRET, old_secrets=["the-old-secret-0123456789"])
    assert rotated.verify(token, "item-0", 1, now=NOW).experiment == "exp"
    future, _ = issue(old, issued_at=NOW + 3600)
    with pytest.raises(InvalidToken, match="future"):
        old.verify(future, "item-0", 1, now=NOW)


def test_bad_arguments_to_issue_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        AttributionTokens("short")
    tokens = AttributionTokens(SECRET)
    with pytest.raises(ValueError):
        issue(tokens, request_id="abc")
    with pytest.raises(ValueError):
        issue(tokens, shown=["x"] * 127)
