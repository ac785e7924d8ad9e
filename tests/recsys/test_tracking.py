"""recsys.tracking.configure: the experiment a user opens in the MLflow UI."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from recsys.config import Settings
from recsys.tracking import (
    EXPERIMENT_KIND_TAG,
    HEADLINE_VIEW,
    NOTE_TAG,
    TRAINING_KIND,
    VIEW_TAG_PREFIX,
    configure,
)

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_configure_makes_new_and_old_experiments_training_ones(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    # an experiment created by an older version: no tags at all
    old = mlflow.create_experiment(settings.experiment_name)
    client = configure(settings)
    tags = client.get_experiment(old).tags
    assert tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND and tags[NOTE_TAG]
    assert VIEW_TAG_PREFIX + HEADLINE_VIEW not in tags

    configure(settings, "served_precision_at_5", ["params.`policy`"])
    view = json.loads(client.get_experiment(old).tags[VIEW_TAG_PREFIX + HEADLINE_VIEW])
    state = json.loads(view["state"])
    assert state["orderByKey"] == "metrics.`served_precision_at_5`"
    assert "params.`policy`" in state["selectedColumns"]
    # unchanged view: not rewritten (its creation time stays)
    configure(settings, "served_precision_at_5", ["params.`policy`"])
    again = json.loads(client.get_experiment(old).tags[VIEW_TAG_PREFIX + HEADLINE_VIEW])
    assert again == view
