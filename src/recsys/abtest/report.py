"""The experiment report: every metric per variant with its statistics, as a table, JSON or PNG.

:func:`build_report` reads an experiment from the event store (:mod:`.attribution`), computes
per variant each business metric with its 95% interval, its difference and lift against the
control with intervals and p-values, the minimum detectable effect at 80% power for the
current sample, the sample-ratio-mismatch check and the CUPED-adjusted comparison of the
add-to-cart conversion (:mod:`.stats`). :func:`format_table`, :meth:`Report.to_dict` and
:func:`plot_report` render it.

Why one module of this size: the table, JSON and PNG render the same :class:`Report`, and
building it is where the statistics of :mod:`.stats` meet the attribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from recsys import columns as C
from recsys.abtest import attribution as A
from recsys.abtest import stats as S
from recsys.abtest.config import Experiment
from recsys.data.store import EventStore

#: ratio metrics that are shares (their intervals are clipped to [0, 1])
BOUNDED: Final = frozenset({A.CART_TO_PURCHASE, "cart_to_purchase_items", A.RECOMMENDED_SHARE})
#: the metrics of the report: key, label, kind (proportion or ratio), numerator, denominator
METRICS: Final = (
    (A.ADDTOCART_CONVERSION, "Add-to-cart conversion", "proportion", A.ADDED, None),
    (A.ITEMS_PER_USER, "Items added per adding visitor", "ratio", A.ITEMS_ADDED, A.ADDED),
    (A.CART_TO_PURCHASE, "Cart-to-purchase (visitors)", "ratio", A.BOUGHT, A.ADDED),
    (
        "cart_to_purchase_items",
        "Cart-to-purchase (recommended items)",
        "ratio",
        A.RECOMMENDED_PAIRS_BOUGHT,
        A.RECOMMENDED_PAIRS,
    ),
    (A.RECOMMENDED_SHARE, "Recommended-item share", "ratio", A.RECOMMENDED_ADDED, A.ITEMS_ADDED),
)


@dataclass(frozen=True)
class MetricResult:
    """One metric of one variant: estimate and interval; against the control for the others."""

    metric: str
    label: str
    variant: str
    value: float
    low: float
    high: float
    #: minimum detectable absolute difference at 80% power (vs the control, current sample)
    mde: float
    comparison: S.Comparison | None = None

    @property
    def mde_relative(self) -> float:
        """The MDE relative to the control's value."""
        control = self.comparison.control if self.comparison else self.value
        return self.mde / control if control else float("nan")


@dataclass(frozen=True)
class CupedResult:
    """The CUPED-adjusted add-to-cart conversion of one treatment against the control."""

    variant: str
    theta: float
    variance_reduction: float
    comparison: S.Comparison


@dataclass
class Report:
    """Everything ``recsys ab report`` shows about one experiment."""

    experiment: str
    control: str
    variants: list[str]
    weights: dict[str, float]
    since_ms: int | None
    until_ms: int | None
    window_s: float
    counts: pd.DataFrame
    metrics: list[MetricResult]
    srm: S.SampleRatio
    cuped: list[CupedResult] = field(default_factory=list)
    #: visitors whose exposures carry more than one variant (a changed file)
    crossovers: int = 0
    #: CUPED covariate: events per visitor in this many days before their first exposure
    #: (None: all their history before it)
    cuped_days: float | None = None

    def metric(self, key: str, variant: str) -> MetricResult:
        """The result of ``key`` for ``variant``."""
        for result in self.metrics:
            if result.metric == key and result.variant == variant:
                return result
        raise KeyError((key, variant))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN and infinities as None)."""
        return _json_safe(
            {
                "experiment": self.experiment,
                "control": self.control,
                "variants": self.variants,
                "weights": self.weights,
                "since_ms": self.since_ms,
                "until_ms": self.until_ms,
                "attribution_window_s": self.window_s,
                "counts": {
                    str(v): {str(k): _number(x) for k, x in row.items()}
                    for v, row in self.counts.to_dict(orient="index").items()
                },
                "metrics": [{**asdict(m), "mde_relative": m.mde_relative} for m in self.metrics],
                "srm": {**asdict(self.srm), "mismatch": self.srm.mismatch},
                "cuped": [asdict(c) for c in self.cuped],
                "cuped_covariate": {
                    "events_before_first_exposure": True,
                    "days": self.cuped_days,
                },
                "crossover_visitors": self.crossovers,
            }
        )


def _number(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def analyse(
    visitors: pd.DataFrame,
    exposures: pd.DataFrame,
    variants: Sequence[str],
    weights: Mapping[str, float],
    confidence: float = 1 - S.ALPHA,
) -> tuple[pd.DataFrame, list[MetricResult], S.SampleRatio, list[CupedResult]]:
    """Counts, per-metric results, sample-ratio check and CUPED of a visitor table.

    Parameters
    ----------
    visitors
        :func:`~recsys.abtest.attribution.visitor_outcomes`, with ``pre_events`` for CUPED.
    exposures
        The exposure rows.
    variants
        Variant names, the control first.
    weights
        Configured share of each variant (for the sample-ratio check).
    """
    counts = A.variant_counts(visitors, exposures, variants)
    control = variants[0]
    by_variant = {
        v: visitors.loc[(visitors[C.VARIANT] == v).to_numpy(dtype=bool)] for v in variants
    }
    q = S.z_critical(confidence)
    results: list[MetricResult] = []
    for key, label, kind, num, den in METRICS:
        base = by_variant[control]
        n_c = len(base)
        for variant in variants:
            part = by_variant[variant]
            n = len(part)
            if kind == "proportion":
                x = int(part[num].sum())
                value = x / n if n else float("nan")
                low, high = S.wilson_interval(x, n, confidence)
                p_c = base[num].mean() if n_c else float("nan")
                spread = math.sqrt(p_c * (1 - p_c)) if n_c else float("nan")
                comparison = S.proportion_test(int(base[num].sum()), n_c, x, n, confidence)
            else:
                value, variance = S.ratio_estimate(part[num], part[den])
                half = q * math.sqrt(variance) if math.isfinite(variance) else float("nan")
                low, high = value - half, value + half
                if key in BOUNDED:
                    low, high = max(0.0, low), min(1.0, high)
                # per-visitor spread pooled over both groups: a small control can show none
                var_c = S.ratio_estimate(base[num], base[den])[1]
                pooled = (var_c * n_c**2 + variance * n**2) / (n_c + n)
                spread = math.sqrt(pooled) if math.isfinite(pooled) else float("nan")
                comparison = S.ratio_test(base[num], base[den], part[num], part[den], confidence)
            results.append(
                MetricResult(
                    metric=key,
                    label=label,
                    variant=variant,
                    value=value,
                    low=low,
                    high=high,
                    mde=S.mde(spread, n_c, n),
                    comparison=None if variant == control else comparison,
                )
            )
    srm = S.srm_test(
        [int(counts.loc[v, A.EXPOSED_VISITORS]) for v in variants], [weights[v] for v in variants]
    )
    cuped: list[CupedResult] = []
    if A.PRE_ACTIVITY in visitors.columns:
        for variant in variants[1:]:
            pair = pd.concat([by_variant[control], by_variant[variant]])
            adjusted = S.cuped(pair[A.ADDED], pair[A.PRE_ACTIVITY])
            split = len(by_variant[control])
            cuped.append(
                CupedResult(
                    variant=variant,
                    theta=adjusted.theta,
                    variance_reduction=adjusted.variance_reduction,
                    comparison=S.mean_test(
                        adjusted.adjusted[:split], adjusted.adjusted[split:], confidence
                    ),
                )
            )
    return counts, results, srm, cuped


def build_report(
    store: EventStore,
    experiment: str,
    config: Experiment | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    window_s: float = A.DEFAULT_WINDOW_S,
    cuped_days: float | None = None,
) -> Report:
    """Read an experiment from the store and compute its report.

    Parameters
    ----------
    store
        The event store the service writes exposures and events to.
    experiment
        Its name.
    config
        Its declaration: variant order (the first is the control), weights (for the
        sample-ratio check) and start. Without it the variants are those exposed, the control
        is ``control`` if there is one (else the first by name) and the weights are equal.
    since_ms, until_ms
        Analysed period: exposures in it, events before ``until_ms``.
    window_s
        Attribution window after a visitor's first exposure, for events without request id.
    cuped_days
        CUPED covariate: each visitor's events in this many days before their first exposure
        in the experiment; None = all their history before it.
    """
    data = A.load_experiment(store, experiment, since_ms, until_ms, window_s)
    visitors = A.visitor_outcomes(data)
    exposed = sorted(set(data.exposures[C.VARIANT]))
    if config is not None:
        variants = [v.name for v in config.variants]
        variants += [v for v in exposed if v not in variants]
        weights = {v: config.weights().get(v, 0.0) for v in variants}
    else:
        variants = sorted(exposed, key=lambda v: (v != "control", v))
        weights = dict.fromkeys(variants, 1.0)
    if not variants:
        raise LookupError(f"experiment {experiment!r} has no exposures in the store")
    visitors = A.with_pre_activity(store, experiment, visitors, cuped_days)
    counts, results, srm, cuped = analyse(visitors, data.exposures, variants, weights)
    return Report(
        experiment=experiment,
        control=variants[0],
        variants=variants,
        weights=weights,
        since_ms=since_ms,
        until_ms=until_ms,
        window_s=window_s,
        counts=counts,
        metrics=results,
        srm=srm,
        cuped=cuped,
        crossovers=int((visitors[A.VARIANTS_SEEN] > 1).sum()),
        cuped_days=cuped_days,
    )


# ---------------------------------------------------------------------------- rendering


def _pct(value: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _when(ms: int | None) -> str:
    if ms is None:
        return "open"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def report_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the metrics table (one row per metric and variant)."""
    header = [
        "metric",
        "variant",
        "value [95% CI]",
        "lift vs control [95% CI]",
        "p-value",
        "MDE (rel.)",
    ]
    rows = []
    for m in report.metrics:
        as_pct = m.metric != A.ITEMS_PER_USER
        fmt = _pct if as_pct else _num
        value = f"{fmt(m.value)} [{fmt(m.low)}, {fmt(m.high)}]"
        if m.comparison is None:
            lift, p = "(control)", ""
        else:
            c = m.comparison
            lift = f"{_pct(c.lift, 1)} [{_pct(c.lift_low, 1)}, {_pct(c.lift_high, 1)}]"
            p = _p(c.p_value) + (" *" if c.significant() else "")
        mde = _pct(m.mde_relative, 1) if m.comparison is not None else ""
        rows.append([m.label, m.variant, value, lift, p, mde])
    return header, rows


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return [row.rstrip() for row in out]


def format_table(report: Report) -> str:
    """The report as plain text: traffic, sample-ratio check, metrics, CUPED."""
    period = (
        "all exposures"
        if report.since_ms is None and report.until_ms is None
        else f"exposures {_when(report.since_ms)} .. {_when(report.until_ms)}"
    )
    lines = [
        f"Experiment {report.experiment!r}: control {report.control!r}; {period}; attribution "
        f"window {report.window_s:g} s",
        "",
    ]
    counts = report.counts
    traffic = [
        [
            v,
            f"{report.weights.get(v, 0):.0%}",
            f"{int(counts.loc[v, A.EXPOSURES]):,}",
            f"{int(counts.loc[v, A.EXPOSED_VISITORS]):,}",
            f"{int(counts.loc[v, A.ADDTOCART_VISITORS]):,}",
            f"{int(counts.loc[v, A.ITEMS_ADDED]):,}",
            f"{int(counts.loc[v, A.BUYER_VISITORS]):,}",
        ]
        for v in report.variants
    ]
    lines += _grid(
        ["variant", "weight", "exposures", "visitors", "adders", "items added", "buyers"], traffic
    )
    srm = report.srm
    verdict = (
        f"!!! SAMPLE RATIO MISMATCH (p = {_p(srm.p_value)} < {S.SRM_ALPHA}): the split is "
        "broken; do not trust these results !!!"
        if srm.mismatch
        else f"sample ratio check: chi2 = {_num(srm.chi2)}, p = {_p(srm.p_value)} (ok)"
    )
    lines += ["", verdict]
    if report.crossovers:
        lines.append(
            f"warning: {report.crossovers} visitor(s) were exposed to more than one variant "
            "(counted in their first)"
        )
    lines += ["", *_grid(*report_rows(report))]
    lines.append(
        "* p < 0.05. Intervals: Wilson (conversion), delta method (ratios); tests: "
        "two-proportion z (conversion), delta-method z (ratios). MDE: relative difference "
        "detectable at 80% power, alpha 0.05, with these samples."
    )
    if report.cuped:
        days = "all history" if report.cuped_days is None else f"last {report.cuped_days:g} days"
        lines += [
            "",
            f"CUPED (covariate: each visitor's events before their first exposure, {days}):",
        ]
        for c in report.cuped:
            cmp = c.comparison
            lines.append(
                f"  {c.variant} vs {report.control}: add-to-cart conversion difference "
                f"{_pct(cmp.diff)} [{_pct(cmp.diff_low)}, {_pct(cmp.diff_high)}], "
                f"p = {_p(cmp.p_value)}; variance reduction {_pct(c.variance_reduction, 1)} "
                f"(theta {_num(c.theta, 4)})"
            )
    return "\n".join(lines)


def plot_report(report: Report, path: str | Path) -> Path:
    """A PNG of the report: each metric per variant with its 95% interval and p-value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [key for key, *_ in METRICS]
    fig, grid = plt.subplots(2, 3, figsize=(13, 8))
    axes = grid.ravel()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes, keys, strict=False):
        results = [report.metric(key, v) for v in report.variants]
        scale = 1.0 if key == A.ITEMS_PER_USER else 100.0
        values = np.array([r.value for r in results]) * scale
        lows = np.array([r.low for r in results]) * scale
        highs = np.array([r.high for r in results]) * scale
        errors = np.nan_to_num(np.vstack([values - lows, highs - values]), nan=0.0)
        x = np.arange(len(results))
        ax.bar(x, np.nan_to_num(values), yerr=errors, capsize=6, color=colors[: len(x)], alpha=0.85)
        ax.set_xticks(x, [r.variant for r in results])
        ax.set_title(results[0].label, fontsize=10)
        ax.set_ylabel("items" if scale == 1.0 else "%")
        for i, r in enumerate(results):
            if r.comparison is not None and math.isfinite(r.comparison.p_value):
                ax.annotate(
                    f"p={_p(r.comparison.p_value)}\nlift {_pct(r.comparison.lift, 1)}",
                    (i, np.nan_to_num(highs[i])),
                    textcoords="offset points",
                    xytext=(0, 4),
                    ha="center",
                    fontsize=8,
                )
        ax.margins(y=0.25)
    summary = axes[-1]
    summary.axis("off")
    srm = report.srm
    lines = [
        f"control: {report.control}",
        *(
            f"{v}: {int(report.counts.loc[v, A.EXPOSED_VISITORS]):,} visitors, "
            f"{int(report.counts.loc[v, A.EXPOSURES]):,} exposures"
            for v in report.variants
        ),
        "",
        "SAMPLE RATIO MISMATCH: do not trust"
        if srm.mismatch
        else f"sample ratio check: p = {_p(srm.p_value)} (ok)",
        *(
            f"CUPED {c.variant}: conversion diff {_pct(c.comparison.diff)},"
            f" p = {_p(c.comparison.p_value)},\n  variance reduction {_pct(c.variance_reduction, 1)}"
            for c in report.cuped
        ),
        "",
        "bars: 95% intervals (Wilson; delta method)",
        "p: two-proportion z / delta-method z vs control",
    ]
    summary.text(0.0, 1.0, "\n".join(lines), va="top", fontsize=10, family="monospace")
    fig.suptitle(f"A/B experiment {report.experiment!r}", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
