"""Command line: ``recsys data synth|import|profile``, ``recsys train``, ``recsys serve``.

A thin shell: every command parses options, calls one library function and renders its result.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from recsys.config import Settings
from recsys.exceptions import RecsysError

app = typer.Typer(
    help="Add-to-cart product recommender (RetailRocket format).", no_args_is_help=True
)
data_app = typer.Typer(
    help="RetailRocket files: synthesize, import, profile.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
# wide enough for the results table when output is not a terminal (CI logs, pipes)
console = Console(width=max(Console().width, 130))

DirArg = Annotated[Path, typer.Argument(help="Folder with the RetailRocket CSV files.")]


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2) from exc


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
    paths = synthesize(out, scale=scale, seed=seed, progress=True)
    console.print(f"wrote {len(paths)} files to {out} in {time.perf_counter() - started:.1f} s")


@data_app.command("import")
def import_(
    folder: DirArg,
    db: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL; default: SQLite under var/.")
    ] = None,
) -> None:
    """Load events.csv into the event store (idempotent: re-imports add nothing)."""
    from recsys.data import EventStore
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
        f"stored {added:,} new events in {safe_url(url)} ({time.perf_counter() - started:.1f} s)"
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


@app.command()
def train(
    data_dir: Annotated[Path, typer.Option(help="Folder with the RetailRocket CSV files.")] = Path(
        "data/raw"
    ),
    db: Annotated[str | None, typer.Option(help="Read events from this event store URL.")] = None,
    trials: Annotated[
        int, typer.Option(min=0, help="Optuna trials (0 = defaults, no tuning).")
    ] = 10,
    timeout: Annotated[float, typer.Option(min=1, help="Tuning time budget in seconds.")] = 900,
    holdout_days: Annotated[int, typer.Option(min=1)] = 7,
    validation_days: Annotated[int, typer.Option(min=1)] = 7,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="LightFM epochs (untuned runs).")
    ] = None,
    components: Annotated[int | None, typer.Option(min=1, help="LightFM components.")] = None,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Train LightFM + baselines, evaluate on the time holdout, log, register, gate."""
    from recsys.pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig(
        data_dir=data_dir,
        db_url=db,
        trials=trials,
        timeout_s=timeout,
        holdout_days=holdout_days,
        validation_days=validation_days,
        seed=seed,
    )
    if epochs is not None:
        cfg.lightfm["epochs"] = epochs
    if components is not None:
        cfg.lightfm["no_components"] = components
    try:
        result = run_pipeline(cfg)
    except RecsysError as exc:
        _fail(exc)
    console.print(results_table(result.results))
    console.print(
        f"run [bold]{result.run_id}[/] -> {Settings().model_name} version "
        f"[bold]{result.model_version}[/] alias [bold]{result.alias}[/] (policy {result.policy})\n"
        f"gate: {result.decision.reason}"
    )


def results_table(results: pd.DataFrame) -> Table:
    """The pipeline's results (model x target x segment) as a compact table."""
    table = Table(title="Holdout results (time split; k=5)")
    for name in ("model", "target", "segment"):
        table.add_column(name, no_wrap=True)
    for name in results.columns:
        table.add_column(str(name).replace("hitrate", "hit"), justify="right", no_wrap=True)
    for idx, row in results.iterrows():
        cells = [f"{v:,.0f}" if col == "users" else f"{v:.4f}" for col, v in row.items()]
        table.add_row(*map(str, idx), *cells)
    return table


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="RECSYS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, envvar="RECSYS_PORT")] = 8000,
) -> None:
    """Run the recommendation service (what the Docker image runs: python -m fastapi_service).

    Every other setting comes from RECSYS_* variables (fastapi_service/settings.py).
    """
    import os

    from fastapi_service.__main__ import main as run_service

    os.environ.update(RECSYS_HOST=host, RECSYS_PORT=str(port))
    run_service()


if __name__ == "__main__":
    app()
