"""Pictures of the dashboards without a Grafana server: ``make monitoring-pictures``.

No Grafana can be installed on the development machines, so each dashboard is drawn by
Prometheus itself: its panels (the same JSON Grafana provisions, the same queries) become a
Prometheus console template of ``PromConsole.Graph`` charts, Prometheus renders it from the data
it scraped off a real service under bounded traffic, and headless Chromium (Debian's) takes the
screenshot. The business dashboard reads the A/B metric contract from the stand-in exporter
(:mod:`monitoring.abcontract`) until the service exports it.

Writes ``monitoring/pictures/<dashboard>.png``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from monitoring import abcontract, traffic
from monitoring.bundle import ensure_bundle
from monitoring.livecheck import load_dashboards, substitute
from monitoring.servers import (
    free_port,
    program,
    render_prometheus_config,
    start_prometheus,
    wait_for_scrapes,
)
from monitoring.stack import start_service

PICTURES = Path(__file__).resolve().parent / "pictures"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: scrape interval and rate window of the picture run (short: the run lasts a few minutes)
SCRAPE, RATE = "2s", "20s"
#: Grafana unit -> (PromConsole formatter, axis label)
UNITS = {
    "s": ("humanize", "seconds"),
    "reqps": ("humanize", "per second"),
    "ops": ("humanize", "per second"),
    "percentunit": ("humanize", "ratio (1 = 100%)"),
    "bytes": ("humanize1024", "bytes"),
}
PAGE = """<!doctype html>
<html lang="en"><head>
{{{{ template "prom_console_head" }}}}
<style>
body {{ font-family: sans-serif; background: #fff; padding: 12px 18px; }}
h1 {{ font-size: 22px; margin: 0 0 2px 0; }}
.sub {{ color: #555; font-size: 13px; margin-bottom: 10px; }}
.grid {{ display: flex; flex-wrap: wrap; }}
.panel {{ box-sizing: border-box; padding: 6px 10px 10px 0; }}
.panel h2 {{ font-size: 14px; margin: 4px 0 0 0; }}
.panel .unit {{ color: #777; font-size: 11px; }}
.legend {{ font-size: 11px; }}
</style></head><body>
<h1>{title}</h1>
<div class="sub">{description} Drawn by Prometheus from the dashboard's own queries
(rate window {rate}, last {minutes} minutes).</div>
<div class="grid">
{panels}
</div>
</body></html>
"""
PANEL = """<div class="panel" style="width:{width}%">
<h2>{title}</h2><div class="unit">{unit}</div>
<div id="p{id}"></div>
<script>
new PromConsole.Graph({{
  node: document.querySelector("#p{id}"),
  expr: {exprs},
  name: {names},
  duration: {duration},
  height: 170,
  width: {pixels},
  yAxisFormatter: PromConsole.NumberFormatter.{formatter},
  yHoverFormatter: PromConsole.NumberFormatter.{formatter},
  renderer: "line"
}});
</script></div>"""


def console_page(board: dict[str, Any], duration_s: int, page_width: int) -> str:
    """The console template drawing every panel of ``board`` over the last ``duration_s``."""
    panels = []
    for panel in board["panels"]:
        unit = panel["fieldConfig"]["defaults"]["unit"]
        formatter, label = UNITS.get(unit, ("humanize", unit))
        exprs = [substitute(t["expr"], board, RATE) for t in panel["targets"]]
        # Grafana's {{label}} legends are PromConsole's [[label]]
        names = [
            re.sub(r"\{\{\s*(\w+)\s*\}\}", r"[[ \1 ]]", t["legendFormat"]) for t in panel["targets"]
        ]
        width = round(100 * panel["gridPos"]["w"] / 24)
        panels.append(
            PANEL.format(
                id=panel["id"],
                title=panel["title"],
                unit=label,
                exprs=json.dumps(exprs),
                names=json.dumps(names),
                duration=duration_s,
                width=width,
                pixels=int(page_width * width / 100) - 90,
                formatter=formatter,
            )
        )
    return PAGE.format(
        title=board["title"],
        description=board["description"],
        rate=RATE,
        minutes=round(duration_s / 60, 1),
        panels="\n".join(panels),
    )


def screenshot(url: str, out: Path, width: int) -> None:
    """Open ``url`` in headless Chromium, wait for every chart, save a full-page PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=program("chromium"), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(url)
            charts = page.locator("div[id^=p]").count()
            page.wait_for_function(
                f"document.querySelectorAll('svg').length >= {charts}", timeout=30_000
            )
            page.wait_for_timeout(1_500)  # axes and legends are drawn after the data arrives
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    """Serve, scrape under traffic, render and screenshot every dashboard into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PICTURES)
    parser.add_argument("--seconds", type=float, default=150, help="traffic duration")
    parser.add_argument("--width", type=int, default=1500)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    boards = load_dashboards()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recsys-pictures-")))
        bundle = ensure_bundle(Path("var/monitor/bundle"))
        settings = {
            "RECSYS_MODEL_URI": str(bundle.resolve()),
            "RECSYS_DB_URL": f"sqlite:///{work / 'events.db'}",
            "RECSYS_CACHE_DIR": str(work / "cache"),
        }
        service = start_service(settings, free_port(), work)
        stack.callback(service.stop)
        contract = abcontract.serve()
        stack.callback(contract.server_close)
        stack.callback(contract.shutdown)
        consoles = work / "consoles"
        consoles.mkdir()
        port = free_port()
        config = render_prometheus_config(
            [service.url.removeprefix("http://")], f"127.0.0.1:{port}", scrape_interval=SCRAPE
        )
        config["scrape_configs"].append(
            {
                "job_name": "ab-contract",
                "static_configs": [{"targets": [f"127.0.0.1:{contract.server_port}"]}],
            }
        )
        prometheus = start_prometheus(config, work / "prometheus", port, console_templates=consoles)
        stack.callback(prometheus.stop)
        wait_for_scrapes(prometheus.url, "recsys-api", samples=2)
        from recsys.bundle import Bundle

        served = Bundle.load(bundle)
        started = time.monotonic()
        statuses = traffic.run(
            service.url,
            served.user_ids[:2000].tolist(),
            served.item_ids[:500].tolist(),
            duration_s=args.seconds,
            rate=40,
            max_requests=int(args.seconds * 40) + 100,
        )
        print(f"traffic: {dict(statuses)}", flush=True)
        time.sleep(4)  # two more scrapes after the last request
        duration = int(time.monotonic() - started) + 30
        for name, board in boards.items():
            (consoles / f"{name}.html").write_text(console_page(board, duration, args.width))
            out = args.out / f"{name}.png"
            screenshot(f"{prometheus.url}/consoles/{name}.html", out, args.width)
            print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
