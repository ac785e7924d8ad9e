"""The one interface every recommender model implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from recsys.bundle import Bundle, ServingLists
    from recsys.interactions import TrainingData


@runtime_checkable
class Model(Protocol):
    """A model learns from :class:`TrainingData` and exports a servable :class:`Bundle`.

    The bundle is all serving ever sees: a model never runs inside the service.
    """

    #: short identifier, used in metadata, MLflow and result tables
    name: str

    def fit(self, data: TrainingData) -> Model:
        """Learn from ``data``; returns ``self``."""
        ...

    def to_bundle(self, data: TrainingData, lists: ServingLists | None = None) -> Bundle:
        """Export vectors, fallback ranking and histories for ``data`` (the fitted data).

        ``lists``: the data-derived arrays (:func:`recsys.bundle.serving_lists`), shared by
        several bundles of the same data; computed when omitted.
        """
        ...
