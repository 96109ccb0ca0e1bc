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
        ("LOOKALIKE_EVENTS_SECRET", "too-short"),
        ("LOOKALIKE_EVENTS_MAX_AGE_S", "0"),
        ("LOOKALIKE_REPLICA", "a/b"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name if name != "LOOKALIKE_QDRANT_URL" else "qdrant_url"):
        load_settings()


def test_limits_are_settings_and_the_shutdown_budget_is_their_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    # the defaults: HTTP drain 20 + encoder drain 5 + store calls in progress 5 + store close 5
    assert settings.shutdown_budget_s() == 35.0
    monkeypatch.setenv("LOOKALIKE_SHUTDOWN_HTTP_DRAIN_S", "10")
    monkeypatch.setenv("LOOKALIKE_SHUTDOWN_ENCODER_DRAIN_S", "2")
    monkeypatch.setenv("LOOKALIKE_QDRANT_TIMEOUT_S", "3")
    monkeypatch.setenv("LOOKALIKE_STORE_CLOSE_WAIT_S", "1.5")
    assert load_settings().shutdown_budget_s() == 16.5


def test_auto_admission_and_decode_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.admission_images is None and settings.decode_slots is None  # auto
    assert 1 <= settings.decode_concurrency() <= 8
    assert settings.admitted_images(batch_size=16) == settings.queue_max + 16 + settings.decode_concurrency()
    monkeypatch.setenv("LOOKALIKE_ADMISSION_IMAGES", "40")
    monkeypatch.setenv("LOOKALIKE_DECODE_SLOTS", "3")
    settings = load_settings()
    assert settings.admitted_images(batch_size=16) == 40
    assert settings.decode_concurrency() == 3


def test_a_body_budget_smaller_than_one_body_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_REQUEST_MAX_BYTES", str(8 * 1024 * 1024))
    monkeypatch.setenv("LOOKALIKE_ADMISSION_BODY_BYTES", str(4 * 1024 * 1024))
    with pytest.raises(SettingsError, match="admission_body_bytes"):
        load_settings()


def test_experiment_settings_and_their_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("LOOKALIKE_QDRANT_PATH", str(tmp_path / "data" / "qdrant"))
    settings = load_settings()
    assert settings.events_root() == tmp_path / "data" / "events"  # beside the embedded store
    assert settings.events_secret is None and settings.events_max_age_s == 86_400
    assert settings.replica  # the host name
    monkeypatch.setenv("LOOKALIKE_EVENTS_PATH", str(tmp_path / "shared"))
    monkeypatch.setenv("LOOKALIKE_EVENTS_SECRET", "s" * 32)
    monkeypatch.setenv("LOOKALIKE_REPLICA", "pod-0")
    settings = load_settings()
    assert (settings.events_root(), settings.replica) == (tmp_path / "shared", "pod-0")
    assert "s" * 32 not in repr(settings)  # a secret never shows in logs
