"""Online ranking from a :class:`~recsys.bundle.Bundle`: pure numpy, no LightFM, no pandas.

One module per job:

* :mod:`~recsys.serving.index`: the cluster index with per-cluster score upper bounds.
* :mod:`~recsys.serving.search`: :class:`ItemSearch`, the exact fast model top-k over a
  bundle's available items (one per bundle, shared by its Recommenders).
* :mod:`~recsys.serving.policies`: the ranking policies by name (:data:`POLICIES`) and the one
  composition of a list (recent head, model, popular padding).
* :mod:`~recsys.serving.recommender`: :class:`Recommender`, the request API (filters,
  fallbacks, fold-in, reasons, batch ranking).
* :mod:`~recsys.serving.answers`: :func:`precompute_answers`, the served answers stored in a
  bundle at export.
* :mod:`~recsys.serving.memo`: :class:`~recsys.serving.memo.Memo`, the bounded LRU that keeps
  exact answers (one row's model top-k, a visitor's live answer until their next event).
"""

from recsys.serving.answers import precompute_answers
from recsys.serving.policies import POLICIES, RankingPolicy, get_policy
from recsys.serving.recommender import (
    REASON_CATEGORY,
    REASON_FOR_YOU,
    REASON_POPULAR,
    REASON_SIMILAR,
    REASON_VIEWED,
    REASONS,
    Recommendation,
    Recommender,
)
from recsys.serving.search import ItemSearch

__all__ = [
    "POLICIES",
    "REASON_CATEGORY",
    "REASON_FOR_YOU",
    "REASON_POPULAR",
    "REASON_SIMILAR",
    "REASON_VIEWED",
    "REASONS",
    "ItemSearch",
    "RankingPolicy",
    "Recommendation",
    "Recommender",
    "get_policy",
    "precompute_answers",
]
