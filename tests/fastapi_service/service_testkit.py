"""Helpers of the service tests: tiny bundles, a real MLflow registry, real uvicorn processes.

A real process runs exactly as the image's command does (``python -m fastapi_service`` with
``RECSYS_*`` settings in the environment) on 127.0.0.1; it binds port 0 and the kit reads the
port uvicorn bound back from its log, so no other process can take the port in between.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest

from recsys.bundle import Bundle

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "s3cret-admin-token"
START_TIMEOUT_S = 60.0

#: the tiny catalogue: items 100..119, warm users 1, 2, 3
ITEM_IDS = np.arange(100, 120, dtype=np.int64)
WARM_USERS = (1, 2, 3)
#: the most popular item, but unavailable: it must never be recommended
UNAVAILABLE_ITEM = 119
#: user 1 bought item 100, which is also their best-scoring item
BUYER, BOUGHT_ITEM = 1, 100
N_SERVABLE = len(ITEM_IDS) - 1


def write_bundle(path: Path, version: str = "v1", seed: int = 0, policy: str = "blend") -> Path:
    """Write a hand-made, valid bundle (20 items, 3 warm users, d=3) into ``path``."""
    rng = np.random.default_rng(seed)
    n_items, d = len(ITEM_IDS), 3
    item_vectors = rng.normal(size=(n_items, d + 1)).astype(np.float32)
    user_vectors = rng.normal(size=(len(WARM_USERS), d + 1)).astype(np.float32)
    user_vectors[:, -1] = 1.0
    # make the bought item user 1's best match, so the filter is what keeps it out
    item_vectors[0, :d] = 5.0 * user_vectors[0, :d]
    available = np.ones(n_items, dtype=bool)
    available[-1] = False
    bundle = Bundle(
        item_ids=ITEM_IDS,
        item_vectors=item_vectors,
        user_ids=np.array(WARM_USERS, dtype=np.int64),
        user_vectors=user_vectors,
        popular=np.arange(n_items, dtype=np.int32)[::-1],  # 119 (unavailable) first
        item_category=np.repeat(np.array([10, 11], dtype=np.int64), n_items // 2),
        item_available=available,
        history_indptr=np.array([0, 2, 3, 3], dtype=np.int64),
        history_items=np.array([2, 3, 4], dtype=np.int32),
        history_ts=np.array([3_000, 2_000, 1_000], dtype=np.int64),
        bought_indptr=np.array([0, 1, 1, 1], dtype=np.int64),
        bought_items=np.array([0], dtype=np.int32),
        metadata={
            "model_version": version,
            "policy": policy,
            "trained_at": "2024-01-01T00:00:00Z",
            "metrics": {"precision@5": 0.1, "ndcg@5": float("nan")},
        },
    )
    bundle.save(path)
    return path


def corrupt_bundle(path: Path) -> Path:
    """A bundle folder whose arrays file is garbage (loads fail, metadata still reads)."""
    write_bundle(path, version="broken")
    (path / "arrays.npz").write_bytes(b"this is not an npz file")
    return path


T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    timeout: float = 30.0,
    what: str | Callable[[], str] = "condition",
    interval: float = 0.05,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    Fails after ``timeout`` seconds, saying ``what`` was awaited (a callable is asked then,
    e.g. for the server log at the time of the failure).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            pytest.fail(f"not reached after {timeout}s (last: {value!r}): {text}")
        time.sleep(interval)


def metric(text: str, pattern: str) -> float:
    """Value of the first exposition line of ``text`` matching ``pattern`` (0 when absent)."""
    match = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def free_port() -> int:
    """A port free now (racy: for servers that cannot bind port 0 and report it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def refused_port() -> Iterator[int]:
    """A port that refuses connections while the block runs: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@dataclass
class Server:
    """A running service process."""

    url: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str]

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"service exited with {self.process.returncode}:\n{self.log()}")

    def wait(self, path: str, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until ``GET path`` answers 200 (fails with the server log otherwise)."""

        def answers() -> bool:
            self._check_alive()
            try:
                return httpx.get(self.url + path, timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, timeout, lambda: f"200 from {path}; log:\n{self.log()}")

    def metric(self, pattern: str) -> float:
        """Value of the first line of ``/metrics`` matching ``pattern`` (0 when absent)."""
        return metric(self.client().get("/metrics").text, pattern)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


#: what uvicorn logs once it listens; with port 0 it names the port the OS chose
_LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def start_server(workdir: Path, settings: dict[str, str], wait: str = "/health/ready") -> Server:
    """Start ``python -m fastapi_service`` with ``RECSYS_*`` settings on a port of its own.

    The service binds port 0 and the port is read from uvicorn's log (so ``settings`` must
    keep ``RECSYS_LOG_LEVEL`` at ``info`` or below); then waits for ``GET wait`` to answer 200.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "MLFLOW_"))}
    env |= {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "RECSYS_HOST": "127.0.0.1",
        "RECSYS_PORT": "0",
        "RECSYS_CACHE_DIR": str(workdir / "model-cache"),
        "RECSYS_DB_URL": f"sqlite:///{workdir / 'events.db'}",
        "RECSYS_POLL_INTERVAL_S": "0",
        "RECSYS_EXPOSURE_FLUSH_S": "0.2",
        "RECSYS_LOG_LEVEL": "info",
    }
    env |= settings
    log_path = workdir / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastapi_service"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server("", process, log_path, env)
    try:
        port = wait_until(
            lambda: server._check_alive() or _LISTENING.search(log_path.read_bytes()),
            START_TIMEOUT_S,
            lambda: f"uvicorn listening; log:\n{server.log()}",
        ).group(1)
        server.url = f"http://127.0.0.1:{int(port)}"
        server.wait(wait)
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class Registry:
    """A real MLflow tracking + registry store (SQLite) under a temporary folder."""

    tracking_uri: str
    client: object
    model_name: str
    root: Path

    @property
    def uri(self) -> str:
        """The champion URI of this model."""
        return f"models:/{self.model_name}@champion"

    def register(self, bundle: Path, alias: str | None = "champion") -> str:
        """Log ``bundle`` as a new registered version and point ``alias`` at it.

        The folder must be named ``bundle``: MLflow keeps the folder name inside the
        model's ``artifacts/``, where :func:`recsys.tracking.download_bundle` looks for it.
        """
        assert bundle.name == "bundle", bundle
        import mlflow

        from recsys import tracking

        with mlflow.start_run():
            version = tracking.log_bundle_model(bundle, self.model_name)
        if alias:
            self.client.set_registered_model_alias(self.model_name, alias, version)  # type: ignore[attr-defined]
        return version
