"""Names shared by training, serving and the service: ranking policies and answer sources.

One vocabulary for the pipeline (which policy won offline), the bundle metadata (which policy
serves), :mod:`recsys.serving` (how each policy ranks), the HTTP schemas and the metrics labels.
Nothing here imports numpy, pandas or the serving code, so any module may import it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Policy(StrEnum):
    """A ranking policy: how the served list of a visitor is put together.

    ``popular``: recent event-weighted popularity. ``popular_carts``: recent add-to-cart
    counts. ``recent``: the visitor's own recently viewed or carted items, then popular ones.
    ``recent_views``: the visitor's viewed items, most recent first, then the most carted ones.
    ``covisit``: items co-visited with the visitor's recent items ("visitors who viewed X added
    Y to cart"). ``model``: model scores. ``blend``: a few recent items first, then model
    scores. ``ranker``: a learned ranker over candidates from all of the above.
    """

    POPULAR = "popular"
    POPULAR_CARTS = "popular_carts"
    RECENT = "recent"
    RECENT_VIEWS = "recent_views"
    COVISIT = "covisit"
    MODEL = "model"
    BLEND = "blend"
    RANKER = "ranker"


class Source(StrEnum):
    """Where an answer came from: the ``source`` field of a response and a metrics label.

    A visitor known to the model gets the policy's own name; an unknown visitor gets
    ``fold_in`` (model scores of the items they posted) or ``popular``.
    """

    POPULAR = "popular"
    POPULAR_CARTS = "popular_carts"
    RECENT = "recent"
    RECENT_VIEWS = "recent_views"
    COVISIT = "covisit"
    MODEL = "model"
    BLEND = "blend"
    RANKER = "ranker"
    FOLD_IN = "fold_in"


#: sources that mean "the model does not know this visitor"
FALLBACK_SOURCES: Final = frozenset({Source.FOLD_IN, Source.POPULAR})
#: policy served when a bundle's metadata names none
DEFAULT_POLICY: Final = Policy.BLEND
#: leading slots of ``blend`` (and of a session fold-in) taken by the visitor's recent items
DEFAULT_RECENT_SLOTS: Final = 5
