"""Fixtures of the service tests (helpers live in ``service_testkit``).

``client`` / ``client_factory``: the app in process (``TestClient``, lifespan included) over the
tiny bundle and a SQLite store in the test's folder. ``server_factory``: real uvicorn processes.
``registry``: a real MLflow registry.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_testkit import ADMIN_TOKEN, Registry, Server, start_server, wait_until, write_bundle

from fastapi_service.app import create_app
from fastapi_service.settings import ServiceSettings
from recsys.config import MODEL_NAME

_model_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture
def client_factory(tmp_path: Path, bundle_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Start apps in process; each is ready (or, ``ready=False``, just started) and shut at teardown.

    Keyword arguments override the :class:`ServiceSettings` of the tiny local bundle.
    """
    with ExitStack() as stack:

        def start(ready: bool = True, **overrides: Any) -> TestClient:
            settings = ServiceSettings(
                **{
                    "model_uri": str(bundle_dir),
                    "tracking_uri": None,
                    "cache_dir": tmp_path / "model-cache",
                    "db_url": f"sqlite:///{tmp_path / 'events.db'}",
                    "policy": None,
                    "admin_token": ADMIN_TOKEN,
                    "max_batch": 50,
                    "poll_interval_s": 0,
                    "exposure_flush_s": 3600,  # tests flush explicitly
                }
                | overrides
            )
            client = stack.enter_context(TestClient(create_app(settings)))
            if ready:
                wait_until(
                    lambda: client.get("/health/ready").status_code == 200,
                    10,
                    lambda: f"ready: {client.get('/health/ready').json()}",
                    interval=0.01,
                )
            return client

        yield start


@pytest.fixture
def client(client_factory: Callable[..., TestClient]) -> TestClient:
    """The app in process, serving the tiny local bundle."""
    return client_factory()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real service processes for one test; all are stopped at teardown."""
    started: list[Server] = []

    def start(settings: dict[str, str], wait: str = "/health/ready", name: str = "svc") -> Server:
        server = start_server(tmp_path / name, settings, wait)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def registry_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object, Path]]:
    """A real MLflow tracking + registry store (SQLite), shared by a test module."""
    import mlflow

    from recsys import tracking
    from recsys.config import Settings

    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    settings = Settings(
        var_dir=root,
        mlflow_tracking_uri=uri,
        mlflow_artifact_root=(root / "mlartifacts").as_uri(),
        experiment_name="service-tests",
    )
    client = tracking.configure(settings)
    yield uri, client, root
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(previous)


@pytest.fixture
def registry(registry_store: tuple[str, object, Path]) -> Registry:
    """The shared store with a registered model name of this test's own."""
    uri, client, root = registry_store
    return Registry(uri, client, f"{MODEL_NAME}-t{next(_model_numbers)}", root)
