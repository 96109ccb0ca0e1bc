"""Settings: unknown or invalid LOOKALIKE_* values stop start-up with a message naming the variable."""

from __future__ import annotations

import os

import pytest

from app.core.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("LOOKALIKE_")]:
        monkeypatch.delenv(name)


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.qdrant_url is None  # embedded Qdrant Edge is the default
    assert settings.collection == "items"
    assert settings.fetch_allow_private is False
    assert settings.device == "auto"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_BATCH_MAX_SIZE", "8")
    monkeypatch.setenv("LOOKALIKE_DEVICE", "cpu")
    settings = load_settings()
    assert settings.batch_max_size == 8
    assert settings.device == "cpu"


def test_unknown_variable_names_a_close_match(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_BATCH_MAX_SIZ", "8")
    with pytest.raises(SettingsError, match=r"LOOKALIKE_BATCH_MAX_SIZ.*did you mean LOOKALIKE_BATCH_MAX_SIZE"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOOKALIKE_DEVICE", "tpu"),
        ("LOOKALIKE_BATCH_MAX_SIZE", "0"),
        ("LOOKALIKE_PORT", "http"),
        ("LOOKALIKE_QDRANT_URL", "qdrant:6333"),
        ("LOOKALIKE_COLLECTION", "bad name/"),
        ("LOOKALIKE_FETCH_ALLOW_PRIVATE", "maybe"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name if name != "LOOKALIKE_QDRANT_URL" else "qdrant_url"):
        load_settings()
