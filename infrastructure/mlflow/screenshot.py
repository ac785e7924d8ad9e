"""Screenshots of the MLflow UI's run comparison, as a new user would see it.

``python infrastructure/mlflow/screenshot.py --store var/notebooks --out docs``

Starts the real ``mlflow server`` on 127.0.0.1 over ``STORE/mlflow.db`` (the store
``make notebooks`` fills with two runs), opens the experiment in headless Chromium (Debian's
``/usr/bin/chromium`` driven by Playwright) at :func:`recsys.tracking.experiment_url` (the UI's
machine-learning mode, the saved view "Headline" sorted by the headline metric), and writes:

* ``OUT/mlflow-runs.png``: the runs table (names, datasets, headline metrics, parameters);
* ``OUT/mlflow-compare.png``: the "Compare" page of the training runs (run details, parameters
  and metrics side by side).

The server is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.tracking import experiment_url

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mlflow_server(store: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` over ``store/mlflow.db`` on a free loopback port; yields its URL."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "mlflow"), "server"),
                *("--backend-store-uri", f"sqlite:///{(store / 'mlflow.db').resolve()}"),
                *("--artifacts-destination", str((store / "mlartifacts").resolve())),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _experiment_id(url: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}") as r:
        return str(json.load(r)["experiment"]["experiment_id"])


def take(url: str, experiment: str, out: Path, width: int = 1800) -> list[Path]:
    """Open the runs table and the compare page and save both screenshots under ``out``."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    runs_png, compare_png = out / "mlflow-runs.png", out / "mlflow-compare.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 640})
            # a new user's first click: the sidebar switch from "GenAI" to "Model training"
            # (kept in the browser, so the compare page below stays in that mode too)
            page.goto(url + "/#/experiments")
            page.get_by_text("Model training", exact=True).first.click()
            page.goto(experiment_url(url, _experiment_id(url, experiment)))
            page.wait_for_selector("text=lightfm", timeout=60_000)
            # what a user dismisses first: the assistant side panel, the shared-view banner
            for label in ("Close", "Hide banner"):
                button = page.get_by_role("button", name=label, exact=True)
                if button.count():
                    button.first.click()
            page.wait_for_timeout(1_000)
            page.screenshot(path=str(runs_png))
            # the comparison: tick every run of the view, then "Compare"
            boxes = page.locator(".ag-row .ag-selection-checkbox .ag-checkbox-input-wrapper")
            for i in range(boxes.count()):
                boxes.nth(i).click()
            page.get_by_role("button", name="Compare", exact=True).click()
            page.wait_for_selector("text=Run details", timeout=60_000)
            # run details, then only what differs between the runs: parameters and metrics
            page.get_by_text("Visualizations", exact=True).first.click()
            switches = page.get_by_role("switch")
            for i in range(switches.count()):
                switches.nth(i).click()
            # the page scrolls inside a container: make the window as tall as its content
            height = page.evaluate(
                "Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))"
            )
            page.set_viewport_size({"width": width, "height": min(int(height) + 40, 4_000)})
            page.get_by_text("Comparing", exact=False).first.scroll_into_view_if_needed()
            page.wait_for_timeout(2_000)
            # down to the artifacts section (an empty file previewer)
            box = page.get_by_text("Artifacts", exact=True).first.bounding_box()
            bottom = int(box["y"]) - 10 if box else min(int(height) + 40, 4_000)
            page.screenshot(
                path=str(compare_png), clip={"x": 0, "y": 0, "width": width, "height": bottom}
            )
        finally:
            browser.close()
    return [runs_png, compare_png]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("var/notebooks"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--experiment", default="recsys")
    args = parser.parse_args(argv)
    if not (args.store / "mlflow.db").is_file():
        parser.error(f"no MLflow store at {args.store}/mlflow.db: run `make notebooks` first")
    with mlflow_server(args.store, args.store / "mlflow-server.log") as url:
        for path in take(url, args.experiment, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
