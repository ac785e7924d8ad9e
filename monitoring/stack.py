"""``make monitor``: the service, Prometheus and Alertmanager on loopback with this repository's
configuration, for people without Docker. Prints the URLs; Ctrl-C (or SIGTERM) stops all three.

The service serves the champion that ``make demo`` registered (``var/mlflow.db``) when there is
one, else a small LightFM bundle trained on synthetic data into ``var/monitor/bundle``. Alerts go
to ``ALERTMANAGER_WEBHOOK_URL`` when set, else to a receiver in this process that prints them.
``--traffic`` seconds of bounded mixed traffic give the dashboards something to show.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from monitoring import traffic
from monitoring.bundle import ensure_bundle
from monitoring.servers import (
    Daemon,
    render_alertmanager_config,
    render_prometheus_config,
    start_alertmanager,
    start_daemon,
    start_prometheus,
)
from recsys.config import CHAMPION_ALIAS, MODEL_NAME


@contextmanager
def printing_receiver() -> Iterator[str]:
    """A webhook receiver on loopback that prints each notification; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            for alert in body.get("alerts", []):
                labels = alert["labels"]
                print(
                    f"[alert {alert['status']}] {labels.get('alertname')} "
                    f"({labels.get('severity')}): {alert['annotations'].get('summary')}",
                    flush=True,
                )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts"
    finally:
        server.shutdown()
        server.server_close()


def service_settings(var: Path, workdir: Path) -> dict[str, str]:
    """``RECSYS_*`` settings of the served model: the demo's champion, else the small bundle."""
    if (var / "mlflow.db").is_file():
        return {"RECSYS_MODEL_URI": f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"}
    print("no champion from `make demo` in var/: training a small bundle", flush=True)
    return {
        "RECSYS_MODEL_URI": str(ensure_bundle(workdir / "bundle").resolve()),
        "RECSYS_DB_URL": f"sqlite:///{(workdir / 'events.db').resolve()}",
        "RECSYS_CACHE_DIR": str((workdir / "model-cache").resolve()),
    }


def start_service(settings: dict[str, str], port: int, workdir: Path) -> Daemon:
    """``python -m fastapi_service`` on ``127.0.0.1:port``, ready (a model loaded) or failing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env |= {"RECSYS_HOST": "127.0.0.1", "RECSYS_PORT": str(port)} | settings
    return start_daemon(
        "service",
        [sys.executable, "-m", "fastapi_service"],
        f"http://127.0.0.1:{port}",
        "/health/ready",
        workdir / "service.log",
        env=env,
        timeout=180,
    )


def main(argv: list[str] | None = None) -> int:
    """Start the stack, print its URLs, wait for Ctrl-C, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="service port")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--alertmanager-port", type=int, default=9093)
    parser.add_argument("--var", type=Path, default=Path("var"), help="the demo's state folder")
    parser.add_argument("--traffic", type=float, default=0, help="seconds of generated traffic")
    parser.add_argument(
        "--exit-after", type=float, default=0, help="stop after this many seconds (0: Ctrl-C)"
    )
    args = parser.parse_args(argv)
    # Ctrl-C and a plain `kill` both stop everything, even when the shell that started us
    # ignores SIGINT (a background job of a non-interactive shell inherits SIG_IGN)
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
    workdir = args.var / "monitor"
    with ExitStack() as stack:
        try:
            webhook = os.environ.get("ALERTMANAGER_WEBHOOK_URL") or stack.enter_context(
                printing_receiver()
            )
            settings = service_settings(args.var, workdir)
            service = start_service(settings, args.port, workdir)
            stack.callback(service.stop)
            alertmanager = start_alertmanager(
                render_alertmanager_config(webhook),
                workdir / "alertmanager",
                args.alertmanager_port,
            )
            stack.callback(alertmanager.stop)
            target = f"127.0.0.1:{args.port}"
            config = render_prometheus_config(
                [target],
                f"127.0.0.1:{args.prometheus_port}",
                alertmanager=f"127.0.0.1:{args.alertmanager_port}",
            )
            prometheus = start_prometheus(config, workdir / "prometheus", args.prometheus_port)
            stack.callback(prometheus.stop)
            print(
                f"service       {service.url}  (docs {service.url}/docs, metrics {service.url}/metrics)\n"
                f"prometheus    {prometheus.url}  (alerts {prometheus.url}/alerts)\n"
                f"alertmanager  {alertmanager.url}\n"
                f"alerts to     {webhook}\n"
                f"logs in       {workdir}/\n"
                "Ctrl-C stops all three.",
                flush=True,
            )
            if args.traffic > 0:
                _traffic_in_background(
                    service.url, args.traffic, _served_bundle(settings, args.var)
                )
            deadline = time.monotonic() + args.exit_after if args.exit_after > 0 else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
                for daemon in (service, prometheus, alertmanager):
                    if daemon.process.poll() is not None:
                        print(f"{daemon.name} exited:\n{daemon.log()[-2000:]}", file=sys.stderr)
                        return 1
        except KeyboardInterrupt:
            pass
        finally:
            print("stopping service, Prometheus and Alertmanager", flush=True)
    return 0


def _served_bundle(settings: dict[str, str], var: Path) -> Path:
    """The served bundle's folder: the local one, else the service's cache of the registry's
    (``/model`` shows clients no path)."""
    uri = settings["RECSYS_MODEL_URI"]
    if not uri.startswith("models:/"):
        return Path(uri)
    from recsys.tracking import latest_cached

    cached = latest_cached(Path(settings.get("RECSYS_CACHE_DIR", var / "model-cache")))
    if cached is None:
        raise RuntimeError("the service cached no bundle: no traffic")
    return cached[0]


def _traffic_in_background(url: str, seconds: float, bundle_path: Path) -> None:
    """Bounded traffic from a daemon thread, with the served model's own visitors and items."""

    from recsys.bundle import Bundle

    bundle = Bundle.load(bundle_path)
    users, items = bundle.user_ids[:2000].tolist(), bundle.item_ids[:500].tolist()
    thread = threading.Thread(
        target=traffic.run,
        args=(url, users, items),
        kwargs={"duration_s": seconds, "rate": 20},
        daemon=True,
    )
    thread.start()


if __name__ == "__main__":
    raise SystemExit(main())
