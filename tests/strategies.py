"""Hypothesis settings and strategies shared by the unit and integration property tests."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.factories import photo


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PHOTO = b64(photo(3, size=64))


# No deadline and no health checks on speed: this runs on 2 shared cores; a slow example is not a bug.
RELAXED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=RELAXED)


text_values = st.one_of(st.text(max_size=600), st.integers(), st.floats(), st.booleans(), st.none())
attribute_values = st.one_of(
    text_values, st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
payloads = st.fixed_dictionaries(
    {"item_id": st.one_of(st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True), st.text(max_size=130))},
    optional={
        "image_base64": st.sampled_from([PHOTO, "AA==", "not base64!", b64(b"GIF89a junk"), ""]),
        "image_url": st.sampled_from(["ftp://x/y", "http://127.0.0.1:9/a.jpg", "", "not a url"]),
        "title": text_values,
        "category": text_values,
        "price": st.one_of(st.floats(), st.integers(), st.text(max_size=5), st.none()),
        "seller_id": text_values,
        "status": st.one_of(st.sampled_from(["on_sale", "sold"]), st.text(max_size=6)),
        "attributes": st.one_of(st.none(), st.dictionaries(st.text(max_size=70), attribute_values, max_size=4)),
        "extra": st.integers(),
    },
)  # fmt: skip
