"""The team MLflow server (infrastructure/mlflow) against the real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import psycopg
import pytest

from recsys.data import load_dataset
from recsys.interactions import prepare_training_data
from recsys.models.baselines import PopularityModel
from recsys.tracking import download_bundle, log_bundle_model

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).parent.parent / "lib/python3.11/site-packages/compose/docker-compose"
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path, pg_admin_dsn: str) -> Iterator[str]:
    db = f"mlflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    port = _free_port()
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
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("MLflow server did not become healthy in 90 s")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_log_register_and_load_through_the_server(
    mlflow_server: str, tiny_raw: Path, tmp_path: Path
) -> None:
    ds = load_dataset(tiny_raw)
    cutoff = int(ds.events["timestamp"].max()) - 7 * 86_400_000
    data = prepare_training_data(ds.events, ds.item_properties, ds.category_tree, cutoff)
    bundle = PopularityModel().fit(data).to_bundle(data)
    bundle.save(tmp_path / "bundle")

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
