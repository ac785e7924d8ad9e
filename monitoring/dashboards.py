"""Grafana dashboards as code: Service, Model and Business (A/B), built with Grafana's own
``grafana-foundation-sdk`` (Grafana 11 schema).

``python -m monitoring.dashboards`` writes ``monitoring/grafana/dashboards/*.json``, the files
Grafana provisions (``monitoring/grafana/provisioning/``); a test fails when the committed JSON
differs from what this module builds. Every panel and query names the Prometheus datasource by
its fixed uid, every panel sets a unit, and every query can run against Prometheus once
Grafana's variables are substituted (:mod:`monitoring.livecheck`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm

DASHBOARDS_DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
#: the uid the provisioned datasource has (grafana/provisioning/datasources/prometheus.yml)
DATASOURCE_UID = "recsys-prometheus"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
#: service replicas, as a Grafana regex matcher (the ``instance`` variable, "All" = ``.*``)
SVC = 'job="recsys-api",instance=~"$instance"'
RATE = "$__rate_interval"
#: GET /recommendations in both URL forms
RECS = 'route=~"/recommendations.*"'


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel and its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """What a panel shows: title, kind (``timeseries`` or ``stat``), unit and queries."""

    title: str
    unit: str
    queries: Sequence[Query]
    description: str
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    #: (value, color) steps after the base green; drawn as lines on time series
    thresholds: Sequence[tuple[float, str]] = ()
    stacked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _thresholds(steps: Sequence[tuple[float, str]]) -> gd.ThresholdsConfig:
    return (
        gd.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(None, "green"), *(dm.Threshold(v, c) for v, c in steps)])
    )


def _build_panel(spec: Panel, panel_id: int) -> Any:
    builder: Any
    if spec.kind == "stat":
        builder = (
            stat.Panel()
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .graph_mode(common.BigValueGraphMode.AREA)
        )
    else:
        builder = timeseries.Panel().fill_opacity(10 if not spec.stacked else 60).line_width(1)
        if spec.stacked:
            builder = builder.stacking(StackingConfig().mode(common.StackingMode.NORMAL))
        if spec.thresholds:
            builder = builder.thresholds_style(
                GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
            )
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .unit(spec.unit)
        .datasource(DATASOURCE)
        .span(spec.width)
        .height(spec.height)
        .thresholds(_thresholds(spec.thresholds))
    )
    for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
        builder = builder.with_target(
            prometheus.Dataquery()
            .ref_id(ref)
            .expr(query.expr)
            .legend_format(query.legend or "__auto")
            .datasource(DATASOURCE)
        )
    return builder


def _variable(name: str, label: str, query: str) -> gd.QueryVariable:
    return (
        gd.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def build(
    uid: str, title: str, description: str, panels: Sequence[Panel], variables: Sequence[Any]
) -> dict[str, Any]:
    """A dashboard as the JSON dict Grafana provisions (panel ids 1..n in order)."""
    board = (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["recsys"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .readonly()
    )
    for variable in variables:
        board = board.with_variable(variable)
    for panel_id, spec in enumerate(panels, start=1):
        board = board.with_panel(_build_panel(spec, panel_id))
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


INSTANCE = _variable("instance", "Replica", 'label_values(up{job="recsys-api"}, instance)')

SERVICE_PANELS = (
    Panel(
        "Requests per second by route and status",
        "reqps",
        [
            Query(
                f"sum by (route, status) (rate(recsys_http_requests_total{{{SVC}}}[{RATE}]))",
                "{{route}} {{status}}",
            )
        ],
        "Every HTTP request, labelled by route template (never by id) and status code.",
        stacked=True,
    ),
    Panel(
        "Recommendation latency p50 / p95 / p99",
        "s",
        [
            Query(
                f"histogram_quantile({q}, sum by (le) (rate(recsys_http_request_duration_seconds_bucket{{{SVC},{RECS}}}[{RATE}])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        "GET /recommendations (both URL forms). SLO: 99.9% under 50 ms (the red line).",
        thresholds=[(0.05, "red")],
    ),
    Panel(
        "Error ratio (5xx) and client errors (4xx)",
        "percentunit",
        [
            Query(
                f'1 - sum(rate(recsys_http_requests_total{{{SVC},status!~"5.."}}[{RATE}])) / sum(rate(recsys_http_requests_total{{{SVC}}}[{RATE}]))',
                "5xx",
            ),
            Query(
                f'sum(rate(recsys_http_requests_total{{{SVC},status=~"4.."}}[{RATE}])) / sum(rate(recsys_http_requests_total{{{SVC}}}[{RATE}]))',
                "4xx",
            ),
        ],
        "Share of requests answered 5xx (alert over 1%) and 4xx (bad input: a client problem).",
        thresholds=[(0.01, "red")],
    ),
    Panel(
        "p99 latency by route",
        "s",
        [
            Query(
                f"histogram_quantile(0.99, sum by (route, le) (rate(recsys_http_request_duration_seconds_bucket{{{SVC}}}[{RATE}])))",
                "{{route}}",
            )
        ],
        "Slow routes other than recommendations (events, health, metrics).",
    ),
    Panel(
        "Requests in flight",
        "short",
        [Query(f"sum by (instance) (recsys_http_requests_in_flight{{{SVC}}})", "{{instance}}")],
        "Requests being answered at scrape time (the scrape itself counts 1).",
        width=8,
    ),
    Panel(
        "Process CPU",
        "percentunit",
        [Query(f"rate(process_cpu_seconds_total{{{SVC}}}[{RATE}])", "{{instance}}")],
        "CPU seconds per second of each replica (1 = one core busy).",
        width=8,
    ),
    Panel(
        "Process memory (RSS)",
        "bytes",
        [Query(f"process_resident_memory_bytes{{{SVC}}}", "{{instance}}")],
        "Resident memory of each replica: the loaded model dominates it.",
        width=8,
    ),
    Panel(
        "Python GC collections per second",
        "ops",
        [
            Query(
                f"sum by (generation) (rate(python_gc_collections_total{{{SVC}}}[{RATE}]))",
                "gen {{generation}}",
            )
        ],
        "Garbage collections by generation; the model is frozen out of the scans.",
        width=12,
    ),
    Panel(
        "Replicas up",
        "short",
        [Query(f"sum(up{{{SVC}}})", "up"), Query(f"count(up{{{SVC}}})", "scraped")],
        "Targets Prometheus scrapes successfully, of all it scrapes.",
        kind="stat",
        width=12,
    ),
)

MODEL_PANELS = (
    Panel(
        "Served model version",
        "none",
        [Query(f"recsys_model_info{{{SVC}}}", "{{version}} ({{model_source}}) on {{instance}}")],
        "Version and origin (registry, cache, local folder) each replica serves.",
        kind="stat",
        width=8,
        height=5,
    ),
    Panel(
        "Model age",
        "s",
        [Query(f"recsys_model_age_seconds{{{SVC}}}", "{{instance}}")],
        "Time since the served model was trained; alert after one retraining period + 2 h.",
        kind="stat",
        width=8,
        height=5,
        thresholds=[(86400, "orange"), (93600, "red")],
    ),
    Panel(
        "Ready replicas",
        "short",
        [Query(f"sum(recsys_model_ready{{{SVC}}})", "ready")],
        "Replicas with a model loaded (readiness).",
        kind="stat",
        width=8,
        height=5,
    ),
    Panel(
        "Model reloads by trigger and outcome",
        "short",
        [
            Query(
                f"sum by (trigger, outcome) (recsys_model_reloads_total{{{SVC}}})",
                "{{trigger}} {{outcome}}",
            )
        ],
        "Load attempts since start: startup, alias polls and admin reloads; failures keep the old model.",
    ),
    Panel(
        "Answer source mix",
        "reqps",
        [
            Query(
                f"sum by (source) (rate(recsys_recommendations_total{{{SVC}}}[{RATE}]))",
                "{{source}}",
            )
        ],
        "Where answers come from: the served policy for known visitors, fold_in or popular otherwise.",
        stacked=True,
    ),
    Panel(
        "Fallback share",
        "percentunit",
        [
            Query(
                f"sum(rate(recsys_fallback_total{{{SVC}}}[{RATE}])) / sum(rate(recsys_recommendations_total{{{SVC}}}[{RATE}]))",
                "fallback share",
            )
        ],
        "Answers for visitors the model does not know (alert over 90%).",
        thresholds=[(0.9, "red")],
    ),
    Panel(
        "Score distribution (p10 / p50 / p90) by source",
        "none",
        [
            Query(
                f"histogram_quantile({q}, sum by (source, le) (rate(recsys_recommendation_score_bucket{{{SVC}}}[{RATE}])))",
                f"p{round(q * 100)} {{{{source}}}}",
            )
            for q in (0.1, 0.5, 0.9)
        ],
        "Scores of recommended items: a shift after a reload means the model changed its scale.",
    ),
    Panel(
        "Catalogue coverage of served items",
        "percentunit",
        [
            Query(
                f"recsys_served_items{{{SVC}}} / recsys_model_catalogue_items{{{SVC}}}",
                "{{instance}}",
            )
        ],
        "Distinct items recommended since the model loaded, over the items it can recommend.",
    ),
    Panel(
        "Registry reachable and alias polls",
        "short",
        [
            Query(f"recsys_registry_reachable{{{SVC}}}", "reachable {{instance}}"),
            Query(
                f"rate(recsys_model_polls_total{{{SVC}}}[{RATE}]) * 60", "polls/min {{instance}}"
            ),
        ],
        "1 while the last MLflow registry lookup worked (a local bundle counts as reachable).",
    ),
    Panel(
        "Visitors with an online history",
        "short",
        [Query(f"recsys_online_history_visitors{{{SVC}}}", "{{instance}}")],
        "Visitors whose posted events are kept in memory for live ranking and fold-in.",
    ),
)

#: experiment filter of the business panels; replicas export the same gauges: max() keeps one
EXP = 'experiment=~"$experiment"'

BUSINESS_PANELS = (
    Panel(
        "Add-to-cart conversion by variant",
        "percentunit",
        [Query(f"max by (variant) (recsys_ab_addtocart_conversion{{{EXP}}})", "{{variant}}")],
        "Visitors who added at least one item to cart / visitors exposed to the variant.",
    ),
    Panel(
        "Add-to-cart conversion vs control (z statistic)",
        "none",
        [
            Query(
                f'experiment_variant:recsys_ab_addtocart_conversion:zscore_vs_control{{{EXP},variant!="control"}}',
                "{{variant}}",
            )
        ],
        "Two-proportion z of (variant - control); the alert fires under -3 with a 5% relative drop.",
        thresholds=[(-3, "red")],
    ),
    Panel(
        "Average items added per user",
        "short",
        [Query(f"max by (variant) (recsys_ab_items_added_per_user{{{EXP}}})", "{{variant}}")],
        "Items added to cart / visitors who added any.",
    ),
    Panel(
        "Cart-to-purchase conversion by variant",
        "percentunit",
        [
            Query(
                f"max by (variant) (recsys_ab_cart_to_purchase_conversion{{{EXP}}})",
                "{{variant}}",
            )
        ],
        "Visitors who bought / visitors who added to cart.",
    ),
    Panel(
        "Exposures and exposed visitors by variant",
        "short",
        [
            Query(f"max by (variant) (recsys_ab_exposures{{{EXP}}})", "exposures {{variant}}"),
            Query(
                f"max by (variant) (recsys_ab_exposed_visitors{{{EXP}}})",
                "visitors {{variant}}",
            ),
        ],
        "Recommendation lists shown, and distinct visitors who saw them.",
    ),
    Panel(
        "Recommended-item share of add-to-carts",
        "percentunit",
        [
            Query(
                f"max by (variant) (recsys_ab_recommended_item_share{{{EXP}}})",
                "{{variant}}",
            )
        ],
        "Share of items added to cart that the visitor had been recommended.",
    ),
    Panel(
        "Events ingested per second by type",
        "reqps",
        [
            Query(
                f'sum by (event) (rate(recsys_events_ingested_total{{job="recsys-api"}}[{RATE}]))',
                "{{event}}",
            )
        ],
        "Events stored by POST /events: what A/B metrics and retraining are computed from.",
        stacked=True,
    ),
    Panel(
        "A/B metrics age",
        "s",
        [Query("time() - max(recsys_ab_metrics_updated_timestamp_seconds)", "age")],
        "Time since the A/B metrics were last computed from the event store.",
        kind="stat",
    ),
)


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, for the three dashboards."""
    experiment = _variable(
        "experiment", "Experiment", "label_values(recsys_ab_exposures, experiment)"
    )
    return {
        "recsys-service.json": build(
            "recsys-service",
            "recsys / Service",
            "HTTP traffic, latency against the SLO, errors and the process of each replica.",
            SERVICE_PANELS,
            [INSTANCE],
        ),
        "recsys-model.json": build(
            "recsys-model",
            "recsys / Model",
            "The served model: version, age, reloads, where answers come from, scores, coverage.",
            MODEL_PANELS,
            [INSTANCE],
        ),
        "recsys-business.json": build(
            "recsys-business",
            "recsys / Business (A/B)",
            "Per A/B variant: add-to-cart and purchase conversion, items per user, exposures, events.",
            BUSINESS_PANELS,
            [experiment],
        ),
    }


def render(board: dict[str, Any]) -> str:
    """The JSON text of a dashboard as committed (sorted keys, two-space indent)."""
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write every dashboard's JSON into ``--out`` (default: the provisioned folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, board in dashboards().items():
        (args.out / name).write_text(render(board))
        print(f"wrote {args.out / name} ({len(board['panels'])} panels)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
