"""Served answers precomputed at export: :func:`precompute_answers`.

Known visitors without online events get the answer stored in the bundle
(:class:`~recsys.bundle.ServedAnswers`), equal bit for bit to the live ranking: it is the same
composition, ranked in batches. The caller attaches it (``bundle.answers = ...``) and saves the
bundle.
"""

from __future__ import annotations

import numpy as np

from recsys.bundle import ServedAnswers
from recsys.exceptions import ConfigurationError
from recsys.serving.index import exact_scores
from recsys.serving.recommender import Recommender
from recsys.serving.search import single_threaded_blas


def precompute_answers(recommender: Recommender, k: int = 10, chunk: int = 2048) -> ServedAnswers:
    """The served answer of every known visitor without session.

    Parameters
    ----------
    recommender : Recommender
        The ranking to store (exact: ``candidates`` must be None).
    k : int
        Items stored per visitor. Any ``k' <= k`` answer is a prefix (the head takes
        ``min(recent_slots, k')`` history items, the model ranks the rest canonically), so
        one table serves every request size up to ``k``.
    chunk : int
        Visitors ranked together.

    Returns
    -------
    ServedAnswers
        Rows the model cannot fill (popular padding) are -1 (scores NaN): those visitors are
        ranked live.

    Raises
    ------
    ConfigurationError
        If the recommender's ranking is approximate (``candidates`` set).
    """
    if recommender.candidates is not None:
        raise ConfigurationError("precomputed answers must be exact: use candidates=None")
    b = recommender.bundle
    items = np.full((b.n_users, k), -1, dtype=np.int32)
    heads = np.zeros(b.n_users, dtype=np.int8)
    scores = np.full((b.n_users, k), np.nan)
    with single_threaded_blas():
        for s in range(0, b.n_users, chunk):
            users = np.arange(s, min(s + chunk, b.n_users))
            out, n_head, n_model = recommender.rank_known(users, k)
            full = n_head + n_model == k
            items[users[full]] = out[full]
            heads[users] = np.minimum(n_head, 127)
            w = b.user_vectors[users[full], None, :]
            scores[users[full]] = exact_scores(w, b.item_vectors[out[full]])
    return ServedAnswers(
        items, heads, scores, policy=recommender.policy, recent_slots=recommender.recent_slots
    )
