"""Fixtures of the service tests (helpers live in ``service_testkit``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from service_testkit import ADMIN_TOKEN, Registry, Server, start_server, write_bundle

from recsys.config import MODEL_NAME

_model_numbers = itertools.count(1)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start services for one test; all are stopped at teardown."""
    started: list[Server] = []

    def start(settings: dict[str, str], wait: str = "/health/ready", name: str = "svc") -> Server:
        server = start_server(tmp_path / name, settings, wait)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[Server]:
    """One service over the tiny local bundle, shared by a test module."""
    server = start_server(
        tmp_path_factory.mktemp("api"),
        {
            "RECSYS_MODEL_URI": str(bundle_dir),
            "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
            "RECSYS_MAX_BATCH": "50",
        },
    )
    yield server
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
