"""The hash-pinned supply chain (issue 15), checked offline: every lock pins every package
with its hashes, the images' locks keep the repository lock's versions (``make lock`` only adds
hashes), and every install from PyPI in an image or a compose file checks them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import read_pins

REPO = Path(__file__).resolve().parents[2]
#: the repository lock (``make install``) and the locks ``make lock`` compiles from it
LOCKS = [
    "requirements.txt",
    "fastapi_service/requirements.lock",
    "airflow_ml_pipeline/requirements.lock",
    "infrastructure/mlflow/requirements.lock",
]
#: file installing from PyPI -> (how it names its lock, where the lock lands)
INSTALLS = {
    "fastapi_service/Dockerfile": ("fastapi_service/requirements.lock", "serving.lock"),
    "airflow_ml_pipeline/Dockerfile": ("airflow_ml_pipeline/requirements.lock", "airflow.lock"),
    # bind-mounted: the path is relative to the compose file
    "infrastructure/mlflow/compose.yaml": ("./requirements.lock", "/requirements.lock"),
}


@pytest.mark.parametrize("lock", LOCKS)
def test_every_package_is_pinned_with_hashes(lock: str) -> None:
    pins = read_pins(REPO / lock)
    assert pins
    bad = sorted(name for name, (version, hashes) in pins.items() if not version or not hashes)
    assert not bad, f"{lock}: no == version or no --hash for {bad}"
    assert all(h.startswith("sha256:") for _, hashes in pins.values() for h in hashes)


@pytest.mark.parametrize("lock", LOCKS[1:])
def test_image_locks_keep_the_repository_versions(lock: str) -> None:
    repo = read_pins(REPO / "requirements.txt")
    drift = {
        name: f"{version}, lock: {repo[name][0] if name in repo else 'absent'}"
        for name, (version, hashes) in read_pins(REPO / lock).items()
        if repo.get(name) != (version, hashes)
    }
    assert not drift, f"{lock} differs from requirements.txt (run make lock): {drift}"


@pytest.mark.parametrize("file", INSTALLS)
def test_installs_from_pypi_check_the_hashes_of_a_lock(file: str) -> None:
    text = (REPO / file).read_text()
    source, target = INSTALLS[file]
    installs = [args.split() for args in re.findall(r"pip install ([^&\n]*)", text)]
    assert installs
    for args in installs:
        # nothing is resolved at build time: the lock lists every package
        assert "--no-deps" in args, f"{file}: pip install {' '.join(args)}"
        if args[-1] != ".":  # the project itself, from the build context
            assert "--require-hashes" in args and args[args.index("-r") + 1] == target, args
    assert re.search(rf"{re.escape(source)}[ :]{re.escape(target)}\b", text)
    ignore = REPO / f"{file}.dockerignore"
    if ignore.exists():  # BuildKit sends only what the .dockerignore lets through
        assert f"!{source}" in ignore.read_text().splitlines()
