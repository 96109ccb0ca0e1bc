"""Schemathesis over /openapi.json of a real `python -m app`: generated requests, valid
(positive) and invalid (negative), for every operation. No answer may be a server error, and every
answer must be one the schema documents (status code, content type, body shape)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import photo
from tests.hardening import SCALE
from tests.live import LiveServer, live_server

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Operations with nothing to make invalid: no input, or only a free-form path string.
TAKES_NO_INPUT = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /info",
    "GET /models",
    "GET /experiments",
    "GET /models/{version}/backfill",
}
EXAMPLES_PER_OPERATION_AND_MODE = 25 * SCALE  # 9 operations, 2 modes: well under a minute on 2 cores


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "LOOKALIKE_MODEL_PATH": str(tiny_model_path),
        "LOOKALIKE_QDRANT_PATH": str(tmp_path_factory.mktemp("schemathesis")),
        "LOOKALIKE_FETCH_TIMEOUT_S": "1",  # generated URLs resolve nowhere here; keep each try short
        "LOOKALIKE_REQUEST_MAX_BYTES": "2000000",
        "LOOKALIKE_LOG_LEVEL": "warning",
    }
    with live_server(env) as live:
        # a few real items, so that generated ids sometimes hit one (200 paths, not only 404s)
        for item_id in ("0", "a", "item-1"):
            body = {"item_id": item_id, "image_base64": base64.b64encode(photo(len(item_id))).decode()}
            assert httpx.post(live.url + "/items", json=body, timeout=30).status_code in (200, 201)
        yield live


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_schema_holds_for_generated_requests(server: LiveServer, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    tried: dict[str, int] = {}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.label in TAKES_NO_INPUT:
            continue  # nothing to make invalid

        @settings(
            max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            tried[case.operation.label] = tried.get(case.operation.label, 0) + 1
            response = case.call(base_url=server.url, timeout=30)
            case.validate_response(response, checks=CHECKS)

        check()
    print(f"schemathesis {mode.value}: {sum(tried.values())} requests over {len(tried)} operations: {tried}")
    assert server.process.poll() is None  # the server is still up
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
