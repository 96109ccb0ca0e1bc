"""Request bodies of the HTTP contract (app/core/schemas.py), checked without an app."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from pydantic import ValidationError

from app.core.schemas import BATCH_MAX, MAX_ATTRIBUTES, META_FIELDS, BatchIn, ItemIn, ItemPatch, SimilarQuery
from tests.strategies import FAST, payloads


@FAST
@given(body=payloads)
def test_item_model_accepts_or_raises_validation_error_only(body: dict[str, Any]) -> None:
    try:
        item = ItemIn.model_validate(body)
    except ValidationError:
        return
    assert (item.image_url is None) != (item.image_base64 is None)
    assert item.price is None or item.price >= 0
    json.dumps(item.model_dump()).encode("utf-8")  # whatever is accepted can be stored and sent back


IMAGE = {"image_base64": "AA=="}


def item(**fields: Any) -> ItemIn:
    return ItemIn.model_validate({"item_id": "i-1", **fields})


# ---- ItemIn: exactly one image source ------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [{}, {"image_url": "http://img.example/a.jpg", "image_base64": "AA=="}, {"image_url": None, "image_base64": None}],
    ids=["none", "both", "both-null"],
)
def test_item_needs_exactly_one_image_source(source: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of image_url or image_base64"):
        item(**source)


def test_item_with_one_image_source_gets_defaults() -> None:
    by_url = item(image_url="http://img.example/a.jpg")
    by_bytes = item(**IMAGE)
    assert (by_url.image_url, by_url.image_base64) == ("http://img.example/a.jpg", None)
    assert (by_bytes.image_url, by_bytes.image_base64) == (None, "AA==")
    assert by_url.status == "on_sale"
    assert by_url.metadata() == dict.fromkeys(META_FIELDS, None) | {"status": "on_sale"}


@pytest.mark.parametrize(
    "fields",
    [
        {"item_id": "a/b"},
        {"item_id": ""},
        {"item_id": "x" * 129},
        {"item_id": 12},
        {"price": -0.01},
        {"price": float("nan")},
        {"price": float("inf")},
        {"status": "deleted"},
        {"category": ""},
        {"title": "t" * 513},
        {"unknown": 1},
    ],
    ids=str,
)
def test_item_field_rules(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ItemIn.model_validate({"item_id": "i-1", **IMAGE, **fields})


def test_item_field_limits_are_inclusive() -> None:
    accepted = item(**IMAGE, item_id="x" * 128, title="t" * 512, price=0, status="sold")
    assert (len(accepted.item_id), accepted.price, accepted.status) == (128, 0.0, "sold")


# ---- ItemPatch ------------------------------------------------------------------------------------------


def test_patch_needs_at_least_one_field() -> None:
    with pytest.raises(ValidationError, match="give at least one of"):
        ItemPatch.model_validate({})


def test_patch_status_cannot_be_null_but_other_fields_can() -> None:
    with pytest.raises(ValidationError, match="status cannot be null"):
        ItemPatch.model_validate({"status": None})
    patch = ItemPatch.model_validate({"title": None, "price": 3})
    assert patch.changes() == {"title": None, "price": 3.0}  # only the fields present; null removes


@pytest.mark.parametrize("fields", [{"item_id": "i-2"}, {"image_url": "http://img.example/a.jpg"}, {"price": -1}])
def test_patch_cannot_change_identity_or_image_and_keeps_field_rules(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ItemPatch.model_validate(fields)


# ---- attributes -------------------------------------------------------------------------------------------


def test_attributes_up_to_the_limit_of_every_scalar_kind() -> None:
    attributes: dict[str, Any] = {f"k{i}": i for i in range(MAX_ATTRIBUTES - 4)}
    attributes |= {"s": "v" * 512, "b": True, "f": 1.5, "x" * 64: "long name"}
    assert item(**IMAGE, attributes=attributes).attributes == attributes
    assert ItemPatch.model_validate({"attributes": {"size": "M"}}).changes() == {"attributes": {"size": "M"}}


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({f"k{i}": i for i in range(MAX_ATTRIBUTES + 1)}, f"at most {MAX_ATTRIBUTES} attributes"),
        ({"": 1}, "1..64 characters"),
        ({"x" * 65: 1}, "1..64 characters"),
        ({"s": "v" * 513}, "longer than 512 characters"),
        ({"f": float("inf")}, "finite number"),
        ({"f": float("nan")}, "finite number"),
        ({"l": [1, 2]}, "attributes"),
        ({"d": {"a": 1}}, "attributes"),
        ({"n": None}, "attributes"),
    ],
    ids=["too-many", "empty-name", "long-name", "long-value", "inf", "nan", "list", "dict", "null"],
)
def test_attribute_limits(attributes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        item(**IMAGE, attributes=attributes)
    with pytest.raises(ValidationError, match=message):
        ItemPatch.model_validate({"attributes": attributes})


# ---- lone surrogates --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"title": "a\ud800b"}, {"category": "\udfff"}, {"seller_id": "s\ud83d"}, {"attributes": {"k": "\ud800"}}],
    ids=["title", "category", "seller_id", "attribute-value"],
)
def test_lone_surrogates_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="no lone surrogates"):
        item(**IMAGE, **fields)
    with pytest.raises(ValidationError, match="no lone surrogates"):
        ItemPatch.model_validate(fields)


def test_lone_surrogate_in_an_attribute_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="no lone surrogates"):
        item(**IMAGE, attributes={"\ud800": 1})


def test_paired_surrogates_are_plain_unicode() -> None:
    assert item(**IMAGE, title="bag \U0001f45c").title == "bag \U0001f45c"


# ---- SimilarQuery -----------------------------------------------------------------------------------------


def test_similar_query_price_range() -> None:
    with pytest.raises(ValidationError, match="min_price must not exceed max_price"):
        SimilarQuery.model_validate({"min_price": 10, "max_price": 9.99})
    assert SimilarQuery.model_validate({"min_price": 5, "max_price": 5}).max_price == 5
    assert SimilarQuery.model_validate({"min_price": 5}).max_price is None
    assert SimilarQuery.model_validate({"max_price": 0}).min_price is None


@pytest.mark.parametrize(
    "fields", [{"k": 0}, {"k": 101}, {"min_price": -1}, {"max_price": "inf"}, {"category": ""}, {"q": "x"}], ids=str
)
def test_similar_query_rules(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SimilarQuery.model_validate(fields)


def test_similar_query_defaults_and_bounds() -> None:
    query = SimilarQuery.model_validate({})
    assert (query.k, query.include_sold, query.exclude_same_seller) == (10, False, False)
    assert [SimilarQuery.model_validate({"k": k}).k for k in (1, 100)] == [1, 100]


# ---- BatchIn ----------------------------------------------------------------------------------------------


def test_batch_size_limits() -> None:
    with pytest.raises(ValidationError):
        BatchIn.model_validate({"items": []})
    with pytest.raises(ValidationError):
        BatchIn.model_validate({"items": [{}] * (BATCH_MAX + 1)})
    assert len(BatchIn.model_validate({"items": [{}] * BATCH_MAX}).items) == BATCH_MAX


def test_batch_items_are_left_for_the_service_to_validate_one_by_one() -> None:
    # One bad item (even one that is not an object) must not fail the others, so BatchIn takes anything.
    assert BatchIn.model_validate({"items": [1, "x", None, {"item_id": "a/b"}]}).items == [
        1,
        "x",
        None,
        {"item_id": "a/b"},
    ]
    with pytest.raises(ValidationError):
        BatchIn.model_validate({"items": [{}], "extra": 1})
