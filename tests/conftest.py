"""Shared fixtures: the tiny model exported once per session, apps on both real Qdrant engines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from app.core.settings import Settings
from app.encode.encoder import OnnxImageEncoder
from app.http.app import create_app
from app.store.base import VectorStore
from app.store.qdrant_server import ServerStore
from tests.factories import ImageServer, image_server

STORE_KINDS = ("edge", "server")


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fails the run when a process a test started (tests.live.start_process) still runs at the end."""
    yield
    from tests.live import kill_leftovers

    left = kill_leftovers()  # a leak fails the run; it does not keep running after it
    if left:
        pytest.fail("processes started by the tests are still running:\n" + "\n".join(left), pytrace=False)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SigLIP model, made once per session by the real export path (parity gate included)."""
    from models.export import export_model  # torch/transformers load only when a test needs the model

    return export_model(tmp_path_factory.mktemp("model") / "tiny.onnx", config="tiny", seed=0).path


@dataclass(frozen=True)
class TwoModels:
    v1_path: Path
    v2_path: Path
    v1: OnnxImageEncoder
    v2: OnnxImageEncoder


@pytest.fixture(scope="session")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> TwoModels:
    """Two tiny models with their own weights and versions ("v1", "v2"), exported once per session."""
    from models.export import export_model

    folder = tmp_path_factory.mktemp("two-models")
    v1 = export_model(folder / "v1.onnx", config="tiny", seed=0, model_version="v1").path
    v2 = export_model(folder / "v2.onnx", config="tiny", seed=1, model_version="v2").path
    return TwoModels(v1, v2, OnnxImageEncoder(v1, device="cpu"), OnnxImageEncoder(v2, device="cpu"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_path: Path) -> OnnxImageEncoder:
    return OnnxImageEncoder(tiny_model_path, device="cpu")


def make_settings(tmp_path: Path, model_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_path": model_path,
        "qdrant_path": tmp_path / "qdrant",
        "fetch_allow_private": True,  # the test image server listens on loopback
        "batch_max_wait_ms": 2.0,
        "device": "cpu",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_store(kind: str, settings: Settings) -> VectorStore:
    if kind == "server":
        return ServerStore(QdrantClient(":memory:"), settings.collection)
    from app.store.qdrant_edge import EdgeStore

    return EdgeStore(settings.qdrant_path, settings.collection, hot_max=settings.edge_hot_max)


class Catalog:
    """One store of the parametrised kind that outlives app restarts, as a deployment's collection does."""

    def __init__(self, tmp_path: Path, models: TwoModels, kind: str, store: VectorStore | None = None) -> None:
        self.tmp_path, self.models, self.kind = tmp_path, models, kind
        self.settings = make_settings(tmp_path, models.v1_path)
        self.store: VectorStore = store or make_store(kind, self.settings)

    @contextmanager
    def app(self, *encoders: OnnxImageEncoder, **overrides: object) -> Iterator[TestClient]:
        settings = make_settings(self.tmp_path, self.models.v1_path, **overrides)
        if self.kind == "edge":  # a restart reopens the embedded store from its folder
            self.store.close()
            self.store = make_store(self.kind, settings)
        with TestClient(create_app(settings, encoder=list(encoders), store=self.store)) as client:
            yield client

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def catalog(tmp_path: Path, two_models: TwoModels, store_kind: str) -> Iterator[Catalog]:
    c = Catalog(tmp_path, two_models, store_kind)
    try:
        yield c
    finally:
        c.close()


ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def client_factory(
    tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder, store_kind: str
) -> ClientFactory:
    """Opens an app (lifespan running) on a fresh store of the parametrised kind, with settings overrides."""

    @contextmanager
    def open_client(**overrides: object) -> Iterator[TestClient]:
        settings = make_settings(tmp_path, tiny_model_path, **overrides)
        store = make_store(store_kind, settings)
        try:
            with TestClient(create_app(settings, encoder=tiny_encoder, store=store)) as client:
                yield client
        finally:
            store.close()

    return open_client


@pytest.fixture
def client(client_factory: ClientFactory) -> Iterator[TestClient]:
    with client_factory() as c:
        yield c


@pytest.fixture
def images() -> Iterator[ImageServer]:
    with image_server() as server:
        yield server


@pytest.fixture(scope="session")
def live_metrics_text(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a real `python -m app` after one write and one read, so every series has samples."""
    import base64

    import httpx

    from tests.factories import photo
    from tests.live import live_server

    env = {
        "LOOKALIKE_MODEL_PATH": str(tiny_model_path),
        "LOOKALIKE_QDRANT_PATH": str(tmp_path_factory.mktemp("live-metrics")),
    }
    with live_server(env) as server:
        for i in range(2):
            body = {"item_id": f"m{i}", "image_base64": base64.b64encode(photo(i)).decode()}
            assert httpx.post(server.url + "/items", json=body, timeout=30).status_code == 201
        assert httpx.get(server.url + "/similar/m0", timeout=30).status_code == 200
        return httpx.get(server.url + "/metrics", timeout=30).text
