"""Prometheus, Alertmanager and nginx processes on loopback, run with the repository's
configuration.

``make monitor`` (:mod:`monitoring.stack`), the pictures (:mod:`monitoring.pictures`) and the
tests start the real Debian binaries through these helpers. The committed configuration is the
compose stack's (service discovered as ``api``, Alertmanager as ``alertmanager``);
:func:`render_prometheus_config` keeps its rules, jobs and alerting and points the targets at
loopback addresses, and :func:`render_alertmanager_config` fills in the webhook URL.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus" / "prometheus.yml"
RULES = MONITORING / "prometheus" / "rules" / "recsys.yml"
RULE_TESTS = MONITORING / "prometheus" / "tests" / "recsys_test.yml"
ALERTMANAGER_YML = MONITORING / "alertmanager" / "alertmanager.yml"
INSTALL = MONITORING / "install.sh"
NGINX_TEMPLATE = REPO / "infrastructure" / "nginx" / "nginx.conf.template"
#: the placeholder of alertmanager.yml (Alertmanager 0.25 reads no environment variables)
WEBHOOK_PLACEHOLDER = "${ALERTMANAGER_WEBHOOK_URL}"
#: console libraries shipped by Debian's prometheus package (used by console templates)
CONSOLE_LIBRARIES = Path("/usr/share/doc/prometheus/examples/console_libraries")

#: program -> (its path in the Debian package, the install.sh tool that brings it)
PROGRAMS = {
    "prometheus": ("/usr/bin/prometheus", "prometheus"),
    "promtool": ("/usr/bin/promtool", "prometheus"),
    "alertmanager": ("/usr/bin/prometheus-alertmanager", "alertmanager"),
    "amtool": ("/usr/bin/amtool", "alertmanager"),
    "chromium": ("/usr/bin/chromium", "chromium"),
    "nginx": ("/usr/sbin/nginx", "nginx"),
    "kubectl": ("/usr/bin/kubectl", "kubectl"),
}


class ToolMissing(RuntimeError):
    """A program is not installed and ``monitoring/install.sh`` could not install it."""


def program(name: str) -> str:
    """Path of a Debian program (a key of :data:`PROGRAMS`), installed first when missing.

    Raises
    ------
    ToolMissing
        When ``monitoring/install.sh`` fails (e.g. not root, no package mirror).
    """
    path, tool = PROGRAMS[name]
    if not Path(path).exists():
        run = subprocess.run(["bash", str(INSTALL), tool], capture_output=True, text=True)
        if run.returncode != 0 or not Path(path).exists():
            raise ToolMissing(f"{path} missing and install.sh {tool} failed: {run.stderr.strip()}")
    return path


def free_port() -> int:
    """A loopback port free now (racy: for servers that cannot bind port 0 and report it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    """A server process started by this module, with its log file."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """The process's output so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the process (kill it after ``timeout`` seconds) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_daemon(
    name: str,
    args: list[str],
    url: str,
    probe: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Daemon:
    """Start ``args``, wait until ``GET url + probe`` answers 200, return the daemon.

    Raises
    ------
    RuntimeError
        When the process exits or does not answer in time (the message holds its log).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # a session of its own: Ctrl-C in make monitor reaches the parent only, which then
        # stops every server in order
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    daemon = Daemon(name, url, process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + probe, timeout=1).status_code == 200:
                return daemon
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            raise RuntimeError(f"{name} did not start ({' '.join(args)}):\n{daemon.log()[-3000:]}")
        time.sleep(0.1)


def render_prometheus_config(
    api_targets: Sequence[str],
    self_target: str,
    alertmanager: str | None = None,
    scrape_interval: str = "15s",
    rule_files: Sequence[Path] = (RULES,),
) -> dict[str, Any]:
    """The committed ``prometheus.yml`` with loopback targets, as a dict to write as YAML.

    Parameters
    ----------
    api_targets
        ``host:port`` of every service replica (replaces the ``api`` DNS discovery).
    self_target
        ``host:port`` of this Prometheus (its own ``prometheus`` job).
    alertmanager
        ``host:port`` of the Alertmanager; None drops alerting and its scrape job.
    scrape_interval
        Scrape and rule evaluation interval (tests use 1 s).
    rule_files
        Rule files, absolute (the committed alert rules by default).
    """
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] |= {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}
    config["rule_files"] = [str(path) for path in rule_files]
    base = PROMETHEUS_YML.parent
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name == "recsys-api":
            job = {k: v for k, v in job.items() if not k.endswith("_sd_configs")}
            job["static_configs"] = [{"targets": list(api_targets)}]
        elif name == "prometheus":
            job["static_configs"] = [{"targets": [self_target]}]
        elif name == "alertmanager":
            if alertmanager is None:
                continue
            job["static_configs"] = [{"targets": [alertmanager]}]
        for sd in job.get("file_sd_configs", []):  # relative to the committed file
            sd["files"] = [str(base / path) for path in sd["files"]]
        jobs.append(job)
    config["scrape_configs"] = jobs
    if alertmanager is None:
        config.pop("alerting", None)
    else:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def start_prometheus(
    config: dict[str, Any],
    workdir: Path,
    port: int,
    console_templates: Path | None = None,
) -> Daemon:
    """Run ``prometheus`` on ``127.0.0.1:port`` with ``config`` and storage under ``workdir``.

    ``console_templates`` serves that folder's templates at ``/consoles/`` (with Debian's
    console libraries), which is how the dashboard pictures are drawn.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    args = [
        program("prometheus"),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    if console_templates is not None:
        args += [
            f"--web.console.templates={console_templates}",
            f"--web.console.libraries={CONSOLE_LIBRARIES}",
        ]
    url = f"http://127.0.0.1:{port}"
    return start_daemon("prometheus", args, url, "/-/ready", workdir / "prometheus.log")


def render_nginx_config(upstreams: Sequence[str], listen: str, workdir: Path) -> str:
    """The committed nginx template with its placeholders filled for loopback processes:
    ``upstreams`` (``host:port`` of each replica), ``listen``, run-time files in ``workdir``."""
    import os

    user = "user root;\n" if os.geteuid() == 0 else ""  # workers may read root's folders
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    fills = {
        "{{RUNTIME}}": f"{user}pid {workdir / 'nginx.pid'};\nerror_log {workdir / 'error.log'} warn;",
        "{{HTTP_RUNTIME}}": temp,
        "{{UPSTREAMS}}": servers,
        "{{LISTEN}}": listen,
    }
    text = NGINX_TEMPLATE.read_text()
    for placeholder, value in fills.items():
        text = text.replace(placeholder, value)
    return text


def start_nginx(upstreams: Sequence[str], workdir: Path, port: int) -> Daemon:
    """Run nginx on ``127.0.0.1:port`` balancing over ``upstreams`` (see the template)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "nginx.conf"
    config.write_text(render_nginx_config(upstreams, f"127.0.0.1:{port}", workdir))
    args = [
        program("nginx"),
        "-c",
        str(config),
        "-p",
        str(workdir),
        "-e",
        str(workdir / "error.log"),
    ]
    url = f"http://127.0.0.1:{port}"
    return start_daemon("nginx", args, url, "/health/live", workdir / "nginx.log")


def render_alertmanager_config(webhook_url: str, group_wait: str | None = None) -> str:
    """The committed ``alertmanager.yml`` with the webhook URL filled in.

    ``group_wait`` replaces the wait (and the group interval) of every route: the end-to-end
    test does not sit through the production 10-30 s.
    """
    text = ALERTMANAGER_YML.read_text().replace(WEBHOOK_PLACEHOLDER, webhook_url)
    if group_wait is None:
        return text
    config = yaml.safe_load(text)
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route |= {"group_wait": group_wait, "group_interval": group_wait}
    return yaml.safe_dump(config, sort_keys=False)


def start_alertmanager(config_text: str, workdir: Path, port: int) -> Daemon:
    """Run Alertmanager on ``127.0.0.1:port`` with ``config_text``, clustering off.

    Without ``--cluster.listen-address=`` it would also bind its gossip port on every
    interface.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(config_text)
    args = [
        program("alertmanager"),
        f"--config.file={config_path}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    url = f"http://127.0.0.1:{port}"
    return start_daemon("alertmanager", args, url, "/-/ready", workdir / "alertmanager.log")


class QueryError(RuntimeError):
    """Prometheus rejected a query (e.g. a PromQL syntax error)."""


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """Result of an instant query: a list of ``{"metric": {...}, "value": [t, "v"]}``.

    Raises
    ------
    QueryError
        When Prometheus answers with an error (the message is Prometheus's).
    """
    reply = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    body = reply.json()
    if body.get("status") != "success":
        raise QueryError(f"{body.get('errorType')}: {body.get('error')} in {expr!r}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_scrapes(prometheus_url: str, job: str, samples: int, timeout: float = 60) -> None:
    """Wait until every target of ``job`` is up and scraped at least ``samples`` times."""
    expr = (
        f'min(count_over_time(up{{job="{job}"}}[10m])) >= {samples} and min(up{{job="{job}"}}) == 1'
    )
    deadline = time.monotonic() + timeout
    while not query(prometheus_url, expr):
        if time.monotonic() > deadline:
            targets = httpx.get(f"{prometheus_url}/api/v1/targets", timeout=5).text
            raise RuntimeError(f"{job} not scraped {samples} times in {timeout}s: {targets}")
        time.sleep(0.25)
