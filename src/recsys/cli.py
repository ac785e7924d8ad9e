"""Command line: ``recsys data synth|import|profile``, ``recsys train``, ``recsys serve``,
``recsys ab report``, ``recsys simulate``.

A thin shell: every command parses options, calls one library function and renders its result.

Why one module of this size: it is the command tree; each command is a few lines of argparse
and one call, and one file shows every command and option.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from recsys import columns as C
from recsys.abtest.config import DEFAULT_WINDOW_S
from recsys.config import Settings
from recsys.exceptions import RecsysError
from recsys.pipeline.config import PipelineConfig

app = typer.Typer(
    help="Add-to-cart product recommender (RetailRocket format).", no_args_is_help=True
)
data_app = typer.Typer(
    help="RetailRocket files: synthesize, import, profile.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
ab_app = typer.Typer(help="A/B experiments: reports from the event store.", no_args_is_help=True)
app.add_typer(ab_app, name="ab")
# wide enough for the results table when output is not a terminal (CI logs, pipes)
console = Console(width=max(Console().width, 130))
#: errors: one line on stderr, never wrapped (a script or a log reads one line)
errors = Console(stderr=True, soft_wrap=True, highlight=False)

DirArg = Annotated[Path, typer.Argument(help="Folder with the RetailRocket CSV files.")]


def _fail(problem: Exception | str) -> NoReturn:
    """Print ``error: <what and where>`` as one line on stderr and exit with code 2."""
    errors.print(Text.assemble(("error:", "bold red"), " ", " ".join(str(problem).split())))
    raise typer.Exit(code=2)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Add-to-cart product recommender (RetailRocket format)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option(help="Output folder for the four CSV files.")],
    scale: Annotated[
        float, typer.Option(min=0.0001, max=10.0, help="1 = full RetailRocket size.")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 42,
) -> None:
    """Write realistic synthetic RetailRocket files (exact Kaggle format)."""
    from recsys.data.synth import synthesize

    started = time.perf_counter()
    try:
        paths = synthesize(out, scale=scale, seed=seed, progress=True)
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror or exc}")
    console.print(f"wrote {len(paths)} files to {out} in {time.perf_counter() - started:.1f} s")


@data_app.command("import")
def import_(
    folder: DirArg,
    db: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL; default: RECSYS_DB_URL, else SQLite under var/."),
    ] = None,
) -> None:
    """Load the files into the event store: events.csv, and when present the item property
    parts (the category/availability rows training reads) and category_tree.csv.
    Idempotent: re-imports add nothing."""
    from recsys.data import EventStore, schema
    from recsys.data.store import safe_url

    url = db or Settings().resolved_db_url
    try:
        store = EventStore(url)
        store.create_schema()
        started = time.perf_counter()
        added = store.import_folder(folder)
    except RecsysError as exc:
        _fail(exc)
    console.print(
        f"stored {added.events:,} new events, {added.item_properties:,} new property rows and "
        f"{added.category_tree:,} new or changed categories in {safe_url(url)} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    if added.future_events:
        console.print(
            f"[yellow]warning:[/] {added.future_events:,} event(s) dated more than "
            f"{schema.FUTURE_TOLERANCE_MS // 1000} s after this machine's clock: stored, but "
            "training ignores them (a clock or unit error where the file was made?)"
        )


@data_app.command("profile")
def profile(
    folder: DirArg,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the profile as JSON.")
    ] = None,
) -> None:
    """Print the dataset profile (counts, funnel, activity, long tail, time span, tree)."""
    from recsys.data import load_dataset
    from recsys.data.profile import profile_dataset, render_profile

    try:
        result = profile_dataset(load_dataset(folder))
    except RecsysError as exc:
        _fail(exc)
    for table in render_profile(result):
        console.print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, default=str))
        console.print(f"profile written to {json_out}")


_DEFAULTS = PipelineConfig()


def _help(field: str) -> str:
    return PipelineConfig.model_fields[field].description or ""


@app.command()
def train(
    db: Annotated[str | None, typer.Option(help=_help("db_url"))] = None,
    window_days: Annotated[int | None, typer.Option(help=_help("window_days"))] = None,
    trials: Annotated[int, typer.Option(help=_help("trials"))] = _DEFAULTS.trials,
    timeout: Annotated[float | None, typer.Option(help=_help("timeout_s"))] = _DEFAULTS.timeout_s,
    holdout_days: Annotated[int, typer.Option(help=_help("holdout_days"))] = _DEFAULTS.holdout_days,
    validation_days: Annotated[
        int, typer.Option(help=_help("validation_days"))
    ] = _DEFAULTS.validation_days,
    k: Annotated[int, typer.Option("--k", help=_help("k"))] = _DEFAULTS.k,
    epochs: Annotated[
        int | None, typer.Option(help="LightFM epochs of untuned runs (default: 10).")
    ] = None,
    components: Annotated[
        int | None, typer.Option(help="LightFM components of untuned runs (default: 32).")
    ] = None,
    promote: Annotated[bool, typer.Option(help=_help("promote"))] = _DEFAULTS.promote,
    holdback_days: Annotated[
        int,
        typer.Option(
            min=0,
            help="Leave the newest N days out of the run altogether (the served model never "
            "sees them), e.g. to replay them against the service with `recsys simulate`.",
        ),
    ] = 0,
    seed: Annotated[int, typer.Option()] = _DEFAULTS.seed,
) -> None:
    """Train on the event store: evaluate on the time holdout, gate, refit on every event,
    register and promote (the served model's cutoff is the newest event + 1 ms, or
    --holdback-days before it)."""
    from pydantic import ValidationError

    from recsys.data import EventStore
    from recsys.data.check import interval_end, iso
    from recsys.pipeline import run_pipeline

    lightfm = dict(_DEFAULTS.lightfm)
    lightfm.update({"epochs": epochs} if epochs is not None else {})
    lightfm.update({"no_components": components} if components is not None else {})
    try:
        end_ms = None
        if holdback_days:
            store = EventStore(db or Settings().resolved_db_url)
            end_ms = interval_end(store, None) - holdback_days * C.DAY_MS
            store.engine.dispose()
        cfg = PipelineConfig(
            db_url=db,
            end_ms=end_ms,
            window_days=window_days,
            trials=trials,
            timeout_s=timeout,
            holdout_days=holdout_days,
            validation_days=validation_days,
            k=k,
            lightfm=lightfm,
            promote=promote,
            seed=seed,
        )
        result = run_pipeline(cfg)
    except ValidationError as exc:
        _fail("; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except RecsysError as exc:
        _fail(exc)
    console.print(results_table(result.results, cfg.k))
    console.print(
        f"run [bold]{result.run_id}[/] -> {Settings().model_name} version "
        f"[bold]{result.model_version}[/] alias [bold]{result.alias}[/] (policy {result.policy})\n"
        f"gate: {result.decision.reason}\n"
        f"evaluated model: trained before {iso(result.evaluated_cutoff_ms)} (holdout start); "
        f"served model: refitted on every event before {iso(result.cutoff_ms)}"
    )


def results_table(results: pd.DataFrame, k: int) -> Table:
    """The pipeline's results (model x target x segment) as a compact table."""
    table = Table(title=f"Holdout results (time split; k={k})")
    for name in results.index.names:
        table.add_column(str(name), no_wrap=True)
    for name in results.columns:
        table.add_column(str(name).replace("hitrate", "hit"), justify="right", no_wrap=True)
    for idx, row in results.iterrows():
        cells = [f"{v:,.0f}" if col == "users" else f"{v:.4f}" for col, v in row.items()]
        table.add_row(*map(str, idx), *cells)
    return table


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="RECSYS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, envvar="RECSYS_PORT")] = 8000,
) -> None:
    """Run the recommendation service: an alias of ``recsys-api`` / ``python -m fastapi_service``
    (the Docker image's command). Every other setting comes from RECSYS_* variables."""
    # the service is its own program: replace this process rather than import the HTTP shell
    os.environ.update(RECSYS_HOST=host, RECSYS_PORT=str(port))
    os.execv(sys.executable, [sys.executable, "-m", "fastapi_service"])


class ReportFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    PNG = "png"


def _epoch_ms(text: str | None, option: str) -> int | None:
    """An ISO 8601 time (UTC unless it says otherwise) as epoch ms."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{option}: not an ISO 8601 time: {text!r} (e.g. 2026-12-01T00:00:00Z)")
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@ab_app.command("report")
def ab_report(
    experiment: Annotated[str, typer.Option(help="Experiment name (as in the experiments file).")],
    since: Annotated[
        str | None, typer.Option(help="Analyse exposures from this ISO time (default: all).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="...and before this ISO time (events too).")
    ] = None,
    format_: Annotated[
        ReportFormat, typer.Option("--format", help="table, json or png.")
    ] = ReportFormat.TABLE,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the report here (default: print it; png: ab-report.png)."),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="Event store URL; default: RECSYS_DB_URL or var/.")
    ] = None,
    experiments_file: Annotated[
        Path | None,
        typer.Option(
            "--experiments",
            envvar="RECSYS_EXPERIMENTS_FILE",
            help="Experiments file: variant order (the control first) and weights.",
        ),
    ] = None,
    window_s: Annotated[
        float,
        typer.Option(
            envvar="RECSYS_ATTRIBUTION_WINDOW_S",
            help="Attribution window after a visitor's first exposure (events without request id).",
        ),
    ] = DEFAULT_WINDOW_S,
    cuped_days: Annotated[
        float | None,
        typer.Option(
            help="CUPED covariate: events in this many days before the start (default: all)."
        ),
    ] = None,
) -> None:
    """Per-variant business metrics with intervals, lifts, p-values, SRM check, MDE and CUPED."""
    from recsys.abtest import load_experiments
    from recsys.abtest.report import build_report, format_table, plot_report
    from recsys.data import EventStore

    config = None
    try:
        if experiments_file is not None:
            declared = {e.name: e for e in load_experiments(experiments_file)}
            config = declared.get(experiment)
            if config is None:
                _fail(
                    f"{experiments_file}: no experiment {experiment!r} (it has: {', '.join(declared) or 'none'})"
                )
        store = EventStore(db or Settings().resolved_db_url)
        report = build_report(
            store,
            experiment,
            config,
            _epoch_ms(since, "--since"),
            _epoch_ms(until, "--until"),
            window_s,
            cuped_days,
        )
    except (RecsysError, LookupError) as exc:
        _fail(exc)
    if format_ is ReportFormat.PNG:
        path = plot_report(report, out or Path("ab-report.png"))
        console.print(f"report written to {path}")
        return
    text = (
        json.dumps(report.to_dict(), indent=2)
        if format_ is ReportFormat.JSON
        else format_table(report)
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        console.print(f"report written to {out}")
    else:
        # plain print: the table is already laid out, and JSON must stay parseable
        print(text)


@app.command()
def simulate(
    url: Annotated[
        str, typer.Option(help="The running service (loopback only).")
    ] = "http://127.0.0.1:8000",
    visitors: Annotated[int, typer.Option(min=1, help="Most visitors simulated.")] = 1000,
    duration: Annotated[
        float, typer.Option(min=0.1, help="Seconds after which no visitor starts.")
    ] = 300.0,
    seed: Annotated[int, typer.Option(help="Sampling and behaviour seed.")] = 0,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="RetailRocket folder to read events.csv from (default: the event store)."
        ),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="Event store URL; default: RECSYS_DB_URL or var/.")
    ] = None,
    population: Annotated[
        str, typer.Option(help="all holdout visitors, or shoppers (those who added to cart).")
    ] = "all",
    concurrency: Annotated[int, typer.Option(min=1, max=32, help="Visitors at once.")] = 4,
    holdout_days: Annotated[
        int, typer.Option(min=1, help="Days after the served model's cutoff to draw visitors from.")
    ] = 7,
    hit: Annotated[
        float, typer.Option(help="P(add) of a shown item the visitor wants, 1st slot.")
    ] = 0.5,
    miss: Annotated[
        float, typer.Option(help="P(add) of a shown item they do not want, 1st slot.")
    ] = 0.002,
    decay: Annotated[
        float, typer.Option(help="Position bias: chances shrink by this per slot.")
    ] = 0.8,
    organic: Annotated[
        float, typer.Option(help="P(add) of a wanted item that was not shown.")
    ] = 0.15,
    purchase: Annotated[
        float | None,
        typer.Option(help="P(buy | added); default: the data's cart-to-purchase rate."),
    ] = None,
) -> None:
    """Drive a running service with the holdout's visitors (behaviour model: see README)."""
    from tqdm import tqdm

    from recsys.data import EventStore, load_events
    from recsys.simulate import Behaviour
    from recsys.simulate import simulate as run

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if population not in ("all", "shoppers"):
        _fail(f"--population: expected all or shoppers, got {population!r}")
    try:
        behaviour = Behaviour(hit=hit, miss=miss, decay=decay, organic=organic, purchase=purchase)
        events = (
            load_events(data_dir / C.EVENTS_FILE)
            if data_dir is not None
            else EventStore(db or Settings().resolved_db_url).read_events()
        )
        with tqdm(total=visitors, unit="visitor", desc="simulating") as bar:
            result = run(
                url,
                events,
                visitors,
                duration,
                seed,
                behaviour,
                population,  # type: ignore[arg-type]
                concurrency,
                holdout_days,
                progress=bar.update,
            )
    except RecsysError as exc:
        _fail(exc)
    except OSError as exc:  # the service is not there
        _fail(f"{url}: {exc}")
    table = Table(title=f"Simulation ({result.elapsed_s:.1f} s, {result.requests:,} requests)")
    for column in ("experiment", "variant", "visitors"):
        table.add_column(column, justify="right" if column == "visitors" else "left")
    for (experiment, variant), count in sorted(result.variants.items()):
        table.add_row(experiment, variant, f"{count:,}")
    console.print(table)
    console.print(
        f"{result.visitors:,} visitors, {result.recommended_carts:,} add-to-carts of recommended "
        f"items, {result.organic_carts:,} organic, {result.purchases:,} purchases (purchase "
        f"probability {result.purchase_rate:.3f}); failures {result.failures}"
    )
    for error in result.errors:
        console.print(f"[red]{error}[/]")
    if result.failures:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
