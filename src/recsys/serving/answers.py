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
        ``min(recent_slots, k')`` history items, the model or the scorer ranks the rest
        canonically), so one table serves every request size up to ``k``.
    chunk : int
        Visitors ranked together.

    Returns
    -------
    ServedAnswers
        Items, reason codes and scores of every known visitor's list (-1 where fewer than
        ``k`` items are allowed).

    Raises
    ------
    ConfigurationError
        If the recommender's ranking is approximate (``candidates`` set).
    """
    if recommender.candidates is not None:
        raise ConfigurationError("precomputed answers must be exact: use candidates=None")
    b = recommender.bundle
    items = np.full((b.n_users, k), -1, dtype=np.int32)
    reasons = np.zeros((b.n_users, k), dtype=np.int8)
    scores = np.full((b.n_users, k), np.nan)
    with single_threaded_blas():
        for s in range(0, b.n_users, chunk):
            users = np.arange(s, min(s + chunk, b.n_users))
            ranked, codes, values = recommender.rank_known(users, k)
            items[users] = ranked.items
            reasons[users] = codes
            scores[users] = values
    return ServedAnswers(
        items, reasons, scores, policy=recommender.policy, recent_slots=recommender.recent_slots
    )
