"""The bundle: what serving loads (plain numpy arrays and JSON metadata, never a pickle).

:mod:`.core` is the :class:`Bundle` and its file format, :mod:`.parts` its optional parts,
:mod:`.build` makes one from training data and a model's exported vectors.
"""

from recsys.bundle.build import (
    ServingLists,
    UserItemLists,
    covisitation,
    item_counts,
    make_bundle,
    popularity_ranking,
    serving_lists,
    user_item_lists,
)
from recsys.bundle.core import ARRAYS_FILE, HISTORY_CAP, METADATA_FILE, Bundle
from recsys.bundle.parts import PARTS, Activity, Covisitation, ObliviousTrees, ServedAnswers

__all__ = [
    "ARRAYS_FILE",
    "HISTORY_CAP",
    "METADATA_FILE",
    "PARTS",
    "Activity",
    "Bundle",
    "Covisitation",
    "ObliviousTrees",
    "ServedAnswers",
    "ServingLists",
    "UserItemLists",
    "covisitation",
    "item_counts",
    "make_bundle",
    "popularity_ranking",
    "serving_lists",
    "user_item_lists",
]
