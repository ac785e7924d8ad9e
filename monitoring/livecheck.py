"""Run every panel query of the dashboards against a live Prometheus.

``python -m monitoring.livecheck --prometheus http://127.0.0.1:9090`` prints one line per
query (dashboard, panel, ref, series returned) and exits 1 when a query fails to parse or
returns nothing: an empty answer is how a misspelled metric or label shows up.

Grafana's variables are substituted as Grafana would: ``$__rate_interval`` by the rate window
(Grafana: four scrape intervals, 1 minute with the provisioned 15 s), a dashboard variable by
its "All" value (``.*``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitoring.dashboards import DASHBOARDS_DIR
from monitoring.servers import QueryError, query

#: a metric name in PromQL: recsys_*, the process/GC collectors, up, and recording rules
METRIC = re.compile(r"\b((?:recsys_|process_|python_|experiment_variant:)[a-zA-Z0-9_:]+|up)\b")


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel, as provisioned."""

    dashboard: str
    panel_id: int
    title: str
    ref: str
    expr: str


@dataclass(frozen=True)
class Result:
    """What Prometheus answered to a query (``series`` = -1 with ``error`` when it failed)."""

    query: PanelQuery
    promql: str
    series: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The query parsed and returned at least one series."""
        return self.error is None and self.series > 0


def load_dashboards(folder: Path = DASHBOARDS_DIR) -> dict[str, dict[str, Any]]:
    """Dashboard JSON by file stem, as Grafana provisions them from ``folder``."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def panel_queries(name: str, board: Mapping[str, Any]) -> list[PanelQuery]:
    """Every target of every panel of ``board``."""
    return [
        PanelQuery(name, panel["id"], panel["title"], target["refId"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, board: Mapping[str, Any], rate_interval: str) -> str:
    """``expr`` with Grafana's variables replaced as Grafana would for "All" and the range.

    >>> board = {"templating": {"list": [{"name": "instance", "allValue": ".*"}]}}
    >>> substitute('rate(x{instance=~"$instance"}[$__rate_interval])', board, "1m")
    'rate(x{instance=~".*"}[1m])'
    """
    text = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    for variable in board.get("templating", {}).get("list", []):
        value = variable.get("allValue") or ".*"
        text = text.replace("${" + variable["name"] + "}", value)
        text = re.sub(rf"\${variable['name']}\b", value, text)
    return text


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads.

    >>> sorted(metric_names('sum(rate(recsys_fallback_total[5m])) / up{job="a"}'))
    ['recsys_fallback_total', 'up']
    """
    return set(METRIC.findall(expr))


def check(
    prometheus_url: str,
    boards: Mapping[str, Mapping[str, Any]],
    rate_interval: str = "1m",
) -> list[Result]:
    """Run every panel query of ``boards`` as an instant query now."""
    results = []
    for name, board in boards.items():
        for panel_query in panel_queries(name, board):
            promql = substitute(panel_query.expr, board, rate_interval)
            try:
                series = len(query(prometheus_url, promql))
            except QueryError as exc:
                results.append(Result(panel_query, promql, -1, str(exc)))
            else:
                results.append(Result(panel_query, promql, series))
    return results


def report(results: Iterable[Result]) -> str:
    """A plain-text table of results, one query per line, failures marked."""
    lines = [f"{'':4} {'dashboard':<17} {'id':>2} {'ref':3} {'series':>6}  panel"]
    for result in results:
        q = result.query
        mark = "ok" if result.ok else "FAIL"
        series = result.error or str(result.series)
        lines.append(f"{mark:4} {q.dashboard:<17} {q.panel_id:>2} {q.ref:3} {series:>6}  {q.title}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Check the committed dashboards against ``--prometheus``; 1 when any query fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--rate-interval", default="1m")
    parser.add_argument("--folder", type=Path, default=DASHBOARDS_DIR)
    args = parser.parse_args(argv)
    results = check(args.prometheus, load_dashboards(args.folder), args.rate_interval)
    print(report(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
