"""Property-based API tests: schemathesis against the live server's own OpenAPI schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from service_testkit import ADMIN_TOKEN

pytestmark = [pytest.mark.service, pytest.mark.slow]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_no_input_produces_a_server_error(server_factory, bundle_dir: Path, tmp_path: Path) -> None:
    server = server_factory(
        {
            "RECSYS_MODEL_URI": str(bundle_dir),
            "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
            "RECSYS_MAX_BATCH": "20",
        }
    )
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "40",
        "--seed",
        "42",
        # one worker: concurrent hypothesis workers can trip CPython 3.11's ast module
        # ("AST constructor recursion depth mismatch") inside schemathesis itself
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    server_errors = re.compile(r'recsys_http_requests_total\{[^}]*status="5\d\d"\} \S+')
    # the readiness probes of the start may have been answered 503 (not ready yet)
    before = server_errors.findall(server.client().get("/metrics").text)
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    # the server agrees: not a single 5xx was answered to schemathesis
    metrics = server.client().get("/metrics").text
    assert re.search(r'recsys_http_requests_total\{[^}]*status="4\d\d"', metrics)
    assert server_errors.findall(metrics) == before, metrics
    assert "unexpected error" not in server.log()
