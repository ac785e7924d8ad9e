"""A small real model to serve when no champion is at hand: ``make monitor``, the pictures and
the live dashboard checks.

Synthetic RetailRocket data at a tiny scale, the library's own training data preparation and a
LightFM fit (a few seconds): the service then serves real scores, warm and cold visitors and a
session fold-in, so every panel has something to show.
"""

from __future__ import annotations

from pathlib import Path

#: synthetic data scale: ~14k events, ~7k visitors, ~1.3k items
SCALE = 0.005


def ensure_bundle(path: Path, seed: int = 1) -> Path:
    """The bundle folder at ``path``, trained and saved there first if it does not exist."""
    if (path / "metadata.json").is_file():
        return path
    import tempfile

    from recsys.columns import TIMESTAMP
    from recsys.data import load_dataset
    from recsys.data.synth import synthesize
    from recsys.interactions import prepare_training_data
    from recsys.models.lightfm import LightFMModel

    with tempfile.TemporaryDirectory() as raw:
        synthesize(Path(raw), scale=SCALE, seed=seed, progress=False)
        dataset = load_dataset(raw)
    cutoff = int(dataset.events[TIMESTAMP].max()) + 1
    data = prepare_training_data(
        dataset.events, dataset.item_properties, dataset.category_tree, cutoff
    )
    bundle = LightFMModel(epochs=5, no_components=16).fit(data).to_bundle(data)
    bundle.metadata["model_version"] = "monitoring-demo"
    bundle.save(path)
    return path
