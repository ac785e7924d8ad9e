"""The team MLflow server (infrastructure/mlflow/run-server.sh) with an S3-compatible artifact
store: moto's S3 server on loopback stands in for S3/MinIO (no MinIO server is installable
here). The server proxies artifacts, so neither the trainer nor the service holds storage
credentials.

A model registered through the library's tracking helpers (``configure`` as ``recsys train``
and the DAG call it, then ``log_bundle_model``) lands as objects in the bucket, and a real
service process loads the champion back from the server; so does ``download_bundle``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from recsys.config import MODEL_NAME
from recsys.data import load_dataset
from recsys.interactions import prepare_training_data
from recsys.models.baselines import PopularityModel
from recsys.tracking import download_bundle
from tests.fastapi_service.service_testkit import Server, free_port, start_server, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUCKET = "recsys-artifacts"
PREFIX = "mlflow"
#: moto accepts any credentials; only the server side holds them
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "recsys-test",
    "AWS_SECRET_ACCESS_KEY": "recsys-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
pytestmark = [pytest.mark.slow]


def _clean_env() -> dict[str, str]:
    """The environment without any MLflow, AWS or recsys setting of the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "MLFLOW_", "AWS_"))}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``moto_server`` on a free loopback port with an empty bucket; its endpoint and client."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(endpoint, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, 60, lambda: f"moto_server on {endpoint}: {log.read_text()}", 0.2)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=BUCKET)
        yield {"endpoint": endpoint, "client": client}
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def mlflow_s3(tmp_path_factory: pytest.TempPathFactory, s3: dict[str, Any]) -> Iterator[str]:
    """The team server script: SQLite backend store, artifacts proxied to the bucket."""
    root = tmp_path_factory.mktemp("mlflow-s3")
    port = free_port()
    env = _clean_env() | S3_CREDENTIALS
    env |= {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/{PREFIX}",
        "MLFLOW_S3_ENDPOINT_URL": s3["endpoint"],
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    log = root / "server.log"
    proc = subprocess.Popen(
        ["bash", str(ROOT / "infrastructure/mlflow/run-server.sh")],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=root,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log, env)
    try:
        server.wait("/health", timeout=120)
        yield server.url
    finally:
        _stop(proc)


#: what ``recsys train`` / the DAG's register and promote stages do with the tracking store,
#: run in a child so the test process's MLflow client state stays untouched
REGISTER = """
import json, sys
from pathlib import Path
import mlflow
from recsys.config import CHAMPION_ALIAS, Settings
from recsys.tracking import configure, log_bundle_model

settings = Settings()
client = configure(settings)
with mlflow.start_run() as run:
    version = log_bundle_model(Path(sys.argv[1]), settings.model_name)
client.set_registered_model_alias(settings.model_name, CHAMPION_ALIAS, version)
experiment = client.get_experiment(run.info.experiment_id)
print("RESULT " + json.dumps({"version": version, "run_id": run.info.run_id,
                              "artifact_location": experiment.artifact_location}))
"""


@pytest.fixture(scope="module")
def registered(
    mlflow_s3: str, tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A popularity bundle of the tiny data registered as champion through the server."""
    root = tmp_path_factory.mktemp("trainer")
    ds = load_dataset(tiny_raw)
    cutoff = int(ds.events["timestamp"].max()) - 7 * 86_400_000
    data = prepare_training_data(ds.events, ds.item_properties, ds.category_tree, cutoff)
    PopularityModel().fit(data).to_bundle(data).save(root / "bundle")
    # the trainer knows the server's URL and nothing of S3
    env = _clean_env() | {
        "RECSYS_VAR_DIR": str(root / "var"),
        "RECSYS_MLFLOW_TRACKING_URI": mlflow_s3,
    }
    done = subprocess.run(
        [sys.executable, "-c", REGISTER, str(root / "bundle")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.split("RESULT ")[-1])
    # nothing was written beside the trainer: the artifacts went through the server
    assert not (root / "var" / "mlartifacts").exists()
    return result | {"bundle": root / "bundle", "trainer_var": root / "var"}


def test_the_registered_model_lands_in_the_bucket(
    registered: dict[str, Any], s3: dict[str, Any]
) -> None:
    # the experiment's root is the server's proxy, not a folder of the trainer
    assert registered["artifact_location"].startswith("mlflow-artifacts:"), registered
    listing = s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    keys = [obj["Key"] for obj in listing.get("Contents", [])]
    ours = [key for key in keys if f"/{registered['run_id']}/" in key or "/models/" in key]
    assert any(key.endswith("/MLmodel") for key in ours), keys
    bundle_keys = {key.rsplit("/artifacts/bundle/", 1)[-1] for key in ours if "/bundle/" in key}
    assert {path.name for path in registered["bundle"].iterdir()} <= bundle_keys, keys
    metadata_key = next(k for k in ours if k.endswith("/artifacts/bundle/metadata.json"))
    stored = s3["client"].get_object(Bucket=BUCKET, Key=metadata_key)["Body"].read()
    assert stored == (registered["bundle"] / "metadata.json").read_bytes()


def test_download_bundle_reads_the_champion_back_from_s3(
    registered: dict[str, Any], mlflow_s3: str, tmp_path: Path
) -> None:
    path, version = download_bundle(f"models:/{MODEL_NAME}@champion", tmp_path, mlflow_s3)
    assert version == registered["version"]
    for file in registered["bundle"].iterdir():
        assert (path / file.name).read_bytes() == file.read_bytes(), file.name


def test_the_service_loads_the_champion_from_the_s3_backed_server(
    registered: dict[str, Any], mlflow_s3: str, tmp_path: Path
) -> None:
    # the service's environment names the tracking server only: no S3 endpoint, no keys
    server = start_server(
        tmp_path / "service",
        {
            "RECSYS_MODEL_URI": f"models:/{MODEL_NAME}@champion",
            "RECSYS_TRACKING_URI": mlflow_s3,
        },
    )
    try:
        assert not {*S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL"} & set(server.env)
        with server.client() as http:
            model = http.get("/model").json()
            assert model["version"] == registered["version"]
            assert model["uri"] == f"models:/{MODEL_NAME}@champion"
            answer = http.get("/recommendations", params={"user_id": 1, "k": 5})
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["recommendations"]) == 5
            assert answer.json()["model_version"] == registered["version"]
    finally:
        server.stop()
