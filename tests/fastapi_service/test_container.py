"""The image definition: Dockerfile lint, compose validation, serving-only dependencies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from service_testkit import REPO

from tests.helpers import read_pins

pytestmark = pytest.mark.service

SERVICE = REPO / "fastapi_service"
VENV_BIN = Path(sys.executable).parent
SITE = Path(__import__("compose").__file__).parent
COMPOSE = SITE / "docker-compose"  # the real binary, not the pip wrapper (always exits 0)


def test_hadolint_passes() -> None:
    run = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--failure-threshold", "warning", str(SERVICE / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    text = (SERVICE / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) == 2 and all("slim" in f for f in froms)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*fastapi_service\.healthcheck", text, re.M)
    assert 'CMD ["python", "-m", "fastapi_service"]' in text


def _requirements(path: Path) -> dict[str, str]:
    return {name: version for name, (version, _) in read_pins(path).items()}


def test_image_installs_only_serving_dependencies_pinned_like_the_lock() -> None:
    serving = _requirements(SERVICE / "requirements.txt")
    lock = _requirements(REPO / "requirements.txt")
    for forbidden in ("lightfm", "lightfm-next", "apache-airflow", "mlflow", "optuna"):
        assert forbidden not in serving
    assert "mlflow-skinny" in serving
    for name, version in serving.items():
        assert lock.get(name) == version, f"{name}=={version} differs from the lock"
    # the image's lock (what the Dockerfile installs) is compiled from these
    image = _requirements(SERVICE / "requirements.lock")
    assert serving.items() <= image.items()
    assert not {"lightfm-next", "apache-airflow", "mlflow", "optuna"} & set(image)


#: Runs in a fresh interpreter of the dev venv, but makes every module whose distribution is
#: outside the serving requirements' dependency closure unimportable, as in the image; then
#: imports and exercises the service's code paths.
IMPORT_PROBE = r"""
import importlib.abc, importlib.metadata as md, json, re, sys, tempfile
from pathlib import Path
from packaging.requirements import Requirement

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

def closure(roots):
    seen, todo = set(), [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        key = (norm(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        for text in map(Requirement, requires):
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if text.marker is None or any(text.marker.evaluate(env) for env in envs):
                todo.append(text)
    return {name for name, _ in seen}

allowed = closure(json.loads(sys.argv[1])) | {"recsys", "pip", "setuptools"}
owners = md.packages_distributions()
blocked = set()

class NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {norm(d) for d in owners.get(top, [])}
        if dists and not dists & allowed:
            blocked.add(top)
            raise ModuleNotFoundError(f"No module named {name!r} (not in the serving image)")

sys.path.insert(0, sys.argv[2])
from service_testkit import write_bundle  # test helper: imported before the image rules apply

sys.meta_path.insert(0, NotInImage())
import fastapi_service.app, fastapi_service.__main__, fastapi_service.healthcheck
import uvicorn.loops.uvloop, uvicorn.protocols.http.httptools_impl
import mlflow.artifacts, mlflow.pyfunc
from recsys import tracking
from recsys.bundle import Bundle
from recsys.data.store import EventStore
from recsys.serving import Recommender
from fastapi_service.schemas import Event
with tempfile.TemporaryDirectory() as tmp:
    path, version = tracking.download_bundle(str(write_bundle(Path(tmp) / "b")), Path(tmp))
    rec = Recommender(Bundle.load(path)).recommend(1, 5)
    store = EventStore(f"sqlite:///{tmp}/events.db")
    store.create_schema()
    event = Event(visitorid=1, event="view", itemid=100)
    row = (1_700_000_000_000, event.visitorid, event.event, event.itemid, None, None)
    [stored] = store.append_event_batches([row], [1])
print(json.dumps({"blocked": sorted(blocked), "items": len(rec.item_ids), "stored": stored}))
"""


@pytest.mark.slow
def test_service_runs_with_only_the_serving_dependencies(tmp_path: Path) -> None:
    roots = [
        line.split("#")[0].strip()
        for line in (SERVICE / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, json.dumps(roots), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["items"] == 5
    assert result["stored"] == 1
    assert list(tmp_path.iterdir()) == []  # importing the app creates no folder or file


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    return subprocess.run(
        [str(COMPOSE), "-f", str(SERVICE / "compose.yaml"), *args],
        capture_output=True,
        text=True,
        env=base | (env or {}),
    )


def test_compose_file_is_valid() -> None:
    run = _compose("config", "--quiet")
    assert run.returncode == 0, run.stderr
    run = _compose("config", "--format", "json", env={"RECSYS_ADMIN_TOKEN": "t0k"})
    assert run.returncode == 0, run.stderr
    api = json.loads(run.stdout)["services"]["api"]
    assert (Path(api["build"]["context"]) / api["build"]["dockerfile"]).is_file()
    assert api["environment"]["RECSYS_ADMIN_TOKEN"] == "t0k"
    assert api["healthcheck"]["test"][-1] == "fastapi_service.healthcheck"
    assert api["ports"][0]["host_ip"] == "127.0.0.1"


def test_compose_validation_catches_errors(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text((SERVICE / "compose.yaml").read_text().replace("services:", "servics:"))
    run = subprocess.run(
        [str(COMPOSE), "-f", str(broken), "config", "--quiet"], capture_output=True
    )
    assert run.returncode != 0
