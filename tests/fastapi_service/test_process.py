"""The service as a process: the image command on port 0, health check, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from service_testkit import REPO

import fastapi_service.__main__
from recsys import columns as C
from recsys.data.store import EventStore

pytestmark = pytest.mark.service


def test_console_script_is_the_image_command() -> None:
    (script,) = entry_points(group="console_scripts", name="recsys-api")
    assert script.load() is fastapi_service.__main__.main


@pytest.mark.slow
def test_runs_on_port_zero_answers_the_healthcheck_and_stops_gracefully(
    server_factory, bundle_dir: Path
) -> None:
    # exposures are written on the way out only: the graceful stop must flush them
    server = server_factory(
        {"RECSYS_MODEL_URI": str(bundle_dir), "RECSYS_EXPOSURE_FLUSH_S": "3600"}
    )
    port = server.url.rsplit(":", 1)[1]
    assert f"Uvicorn running on http://127.0.0.1:{port}" in server.log()
    request_id = server.client().get("/recommendations/2").json()["request_id"]

    probe = [sys.executable, "-m", "fastapi_service.healthcheck"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env |= {"PYTHONPATH": str(REPO), "RECSYS_PORT": port}
    assert subprocess.run(probe, env=env).returncode == 0

    server.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it
    assert server.process.wait(15) == -signal.SIGTERM
    assert "Application shutdown complete" in server.log()
    exposures = EventStore(server.env["RECSYS_DB_URL"]).read_exposures()
    assert exposures[C.REQUEST_ID].tolist() == [request_id]
    assert subprocess.run(probe, env=env).returncode == 1
