"""The stack's own files: ``make monitor`` (native) runs and stops cleanly; the compose file and
the Prometheus/Alertmanager Dockerfiles are valid without an engine."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from monitoring.servers import MONITORING, REPO, free_port

pytestmark = [pytest.mark.monitoring, pytest.mark.usefixtures("tools")]

VENV_BIN = Path(sys.executable).parent
COMPOSE = Path(__import__("compose").__file__).parent / "docker-compose"


@pytest.mark.slow
def test_make_monitor_starts_prints_urls_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "ALERTMANAGER_"))}
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "monitoring.stack", "--var", str(tmp_path)),
            *("--port", str(ports[0]), "--prometheus-port", str(ports[1])),
            *("--alertmanager-port", str(ports[2]), "--traffic", "3"),
        ],
        cwd=REPO,
        env=env | {"PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a failed test kills the stack's servers with it
    )
    try:
        lines = []
        assert process.stdout is not None
        while not lines or "Ctrl-C" not in lines[-1]:
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        urls = dict(re.findall(r"^(\w+)\s+(http://\S+)", "".join(lines), re.M))
        assert urls["service"] == f"http://127.0.0.1:{ports[0]}"
        assert urls["prometheus"] == f"http://127.0.0.1:{ports[1]}"
        assert urls["alertmanager"] == f"http://127.0.0.1:{ports[2]}"
        assert httpx.get(urls["service"] + "/health/ready", timeout=5).status_code == 200
        rules = httpx.get(urls["prometheus"] + "/api/v1/rules", timeout=5).json()["data"]
        assert len(rules["groups"]) == 4
        status = httpx.get(urls["alertmanager"] + "/api/v2/status", timeout=5).json()
        assert "/alerts" in status["config"]["original"]  # the printing receiver
        time.sleep(4)  # the generated traffic ends by itself
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the stack and the servers it started
            out, _ = process.communicate()
            logs = "\n".join(
                f"--- {log}:\n{log.read_text(errors='replace')[-2000:]}"
                for log in sorted(tmp_path.rglob("*.log"))
            )
            pytest.fail(f"the stack did not stop within 60 s of Ctrl-C:\n{out}\n{logs}")
        assert process.returncode == 0, out
        assert "stopping" in out
    finally:
        if process.poll() is None:  # a failed assertion above: end the stack and its servers
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    for url in urls.values():  # nothing left listening
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)


def test_stack_compose_file_is_valid() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    run = subprocess.run(
        [str(COMPOSE), "-f", str(MONITORING / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env | {"RECSYS_BUNDLE_DIR": "/srv/bundle"},
    )
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)["services"]
    assert set(services) == {"api", "prometheus", "alertmanager"}  # grafana: profile only
    api = services["api"]
    assert api["read_only"] and api["environment"]["RECSYS_MODEL_URI"] == "/bundle"
    assert any(v["source"] == "/srv/bundle" and v["read_only"] for v in api["volumes"])
    assert api["healthcheck"]["test"][-1] == "fastapi_service.healthcheck"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", name
    grafana = subprocess.run(
        [str(COMPOSE), "-f", str(MONITORING / "compose.yaml"), "--profile", "grafana", "config",
         "--services"], capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert "grafana" in grafana.stdout.split()


@pytest.mark.parametrize("dockerfile", ["prometheus/Dockerfile", "alertmanager/Dockerfile"])
def test_monitoring_dockerfiles_pass_hadolint(dockerfile: str) -> None:
    run = subprocess.run(
        [
            str(VENV_BIN / "hadolint"),
            "--failure-threshold",
            "warning",
            str(MONITORING / dockerfile),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
