"""Service settings: defaults, RECSYS_ environment, secrets without defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastapi_service.settings import DEFAULT_MODEL_URI, ServiceSettings
from recsys.bundle import HISTORY_CAP
from recsys.names import Policy

pytestmark = pytest.mark.service


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("RECSYS_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = ServiceSettings()
    assert settings.model_uri == DEFAULT_MODEL_URI == "models:/recsys-lightfm@champion"
    assert settings.cache_dir == Path("var/model-cache")
    assert settings.db_url == "sqlite:///var/events.db"
    assert settings.admin_token is None
    assert settings.tracking_uri == "sqlite:///var/mlflow.db"  # the library's default store
    assert settings.max_batch == 1000
    assert settings.host == "127.0.0.1"
    assert settings.workers == 1
    assert settings.history_items == HISTORY_CAP  # as many recent items as a bundle keeps


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_MODEL_URI", "models:/other/3")
    monkeypatch.setenv("RECSYS_MAX_BATCH", "7")
    monkeypatch.setenv("RECSYS_POLL_INTERVAL_S", "2.5")
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "abc")
    monkeypatch.setenv("RECSYS_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("RECSYS_POLICY", "model")
    monkeypatch.setenv("RECSYS_PORT", "0")  # any free port
    settings = ServiceSettings()
    assert settings.model_uri == "models:/other/3"
    assert settings.max_batch == 7
    assert settings.poll_interval_s == 2.5
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "abc"
    assert "abc" not in repr(settings)
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.policy is Policy.MODEL
    assert settings.port == 0


def test_empty_token_disables_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "")
    assert ServiceSettings().admin_token is None


@pytest.mark.parametrize(
    ("name", "value"), [("max_batch", "0"), ("port", "-1"), ("port", "65536"), ("policy", "best")]
)
def test_invalid_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"RECSYS_{name.upper()}", value)
    with pytest.raises(ValueError, match=name):
        ServiceSettings()


def test_create_app_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi_service.app import create_app

    monkeypatch.chdir(tmp_path)
    app = create_app(ServiceSettings())
    assert app.title
    assert list(tmp_path.iterdir()) == []
