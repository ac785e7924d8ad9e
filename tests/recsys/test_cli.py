"""The command line as a thin shell: options reach the pipeline's configuration."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recsys import cli
from recsys.columns import DAY_MS
from recsys.data import EventStore
from recsys.pipeline.config import PipelineConfig

pytestmark = pytest.mark.data


class _Stop(Exception):
    """Raised by the stand-in pipeline: the test only needs the configuration."""


def _train_config(monkeypatch: pytest.MonkeyPatch, *args: str) -> PipelineConfig:
    seen: list[PipelineConfig] = []

    def run_pipeline(cfg: PipelineConfig) -> None:
        seen.append(cfg)
        raise _Stop

    monkeypatch.setattr("recsys.pipeline.run_pipeline", run_pipeline)
    result = CliRunner().invoke(cli.app, ["train", *args])
    assert isinstance(result.exception, _Stop), result.output
    return seen[0]


def test_holdback_days_end_the_run_before_the_newest_days(
    monkeypatch: pytest.MonkeyPatch, tiny_store: str
) -> None:
    newest = EventStore(tiny_store).newest_event_ms()
    assert newest is not None
    default = _train_config(monkeypatch, "--db", tiny_store)
    held = _train_config(monkeypatch, "--db", tiny_store, "--holdback-days", "7")
    assert default.end_ms is None  # the pipeline resolves it: newest event + 1 ms
    assert held.end_ms == newest + 1 - 7 * DAY_MS


def test_a_negative_holdback_is_refused_by_name() -> None:
    result = CliRunner().invoke(cli.app, ["train", "--holdback-days", "-1"])
    assert result.exit_code == 2
    assert "--holdback-days" in result.output
