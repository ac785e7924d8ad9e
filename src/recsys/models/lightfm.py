"""LightFM (hybrid matrix factorisation with item features), exported as plain vectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.bundle import Bundle, make_bundle
from recsys.names import DEFAULT_POLICY

if TYPE_CHECKING:
    from recsys.interactions import TrainingData


class LightFMModel:
    """LightFM trained on weighted interactions with the training data's item features.

    Interactions enter as binary positives; their summed event weights (view 1, cart 5,
    purchase 10 by default) are the sample weights, capped at ``max_weight`` so that one
    visitor refreshing a page 40 times does not dominate an epoch.

    Parameters
    ----------
    loss : str
        ``"warp"`` (default), ``"bpr"``, ``"warp-kos"`` or ``"logistic"``.
    no_components : int
        Embedding dimension ``d``.
    learning_rate, item_alpha, user_alpha : float
        LightFM optimiser settings (adagrad).
    epochs : int
        Passes over the interactions in :meth:`fit`.
    num_threads : int
        Hogwild threads (results are not bit-reproducible with more than one).
    random_state : int
        Seed of the initialisation and sampling.
    max_weight : float or None
        Cap of the sample weights; None keeps them as they are.
    popularity_window_days : int
        Window of the bundle's popularity ranking (the served fallback and padding).
    """

    name = "lightfm"

    def __init__(
        self,
        loss: str = "warp",
        no_components: int = 64,
        learning_rate: float = 0.05,
        item_alpha: float = 1e-6,
        user_alpha: float = 1e-6,
        epochs: int = 20,
        num_threads: int = 2,
        random_state: int = 42,
        max_weight: float | None = 10.0,
        popularity_window_days: int = 14,
    ) -> None:
        self.loss = loss
        self.no_components = no_components
        self.learning_rate = learning_rate
        self.item_alpha = item_alpha
        self.user_alpha = user_alpha
        self.epochs = epochs
        self.num_threads = num_threads
        self.random_state = random_state
        self.max_weight = max_weight
        self.popularity_window_days = popularity_window_days
        self.model: Any = None
        self.epochs_done = 0

    @property
    def params(self) -> dict[str, Any]:
        """Constructor parameters (logged as metadata)."""
        return {
            "loss": self.loss,
            "no_components": self.no_components,
            "learning_rate": self.learning_rate,
            "item_alpha": self.item_alpha,
            "user_alpha": self.user_alpha,
            "epochs": self.epochs,
            "random_state": self.random_state,
            "max_weight": self.max_weight,
        }

    def fit(
        self,
        data: TrainingData,
        epoch_callback: Callable[[int, LightFMModel], None] | None = None,
    ) -> LightFMModel:
        """Train from scratch for ``epochs`` epochs.

        Parameters
        ----------
        data : TrainingData
            Interactions (summed weights) and item features.
        epoch_callback : callable, optional
            Called as ``epoch_callback(epoch, self)`` after each epoch, ``epoch`` counting
            from 1; :meth:`to_bundle` works inside it (learning curves).

        Returns
        -------
        LightFMModel
            ``self``.
        """
        from lightfm import LightFM

        self.model = LightFM(
            no_components=self.no_components,
            loss=self.loss,
            learning_rate=self.learning_rate,
            item_alpha=self.item_alpha,
            user_alpha=self.user_alpha,
            random_state=self.random_state,
        )
        self.epochs_done = 0
        coo = data.interactions.tocoo()
        weights = coo.data.astype(np.float32)
        if self.max_weight is not None:
            weights = np.minimum(weights, np.float32(self.max_weight))
        positives = coo.copy()
        positives.data = np.ones_like(weights)
        sample_weight = coo.copy()
        sample_weight.data = weights
        features = self._features(data)
        for epoch in range(1, self.epochs + 1):
            self.model.fit_partial(
                positives,
                item_features=features,
                sample_weight=sample_weight,
                epochs=1,
                num_threads=self.num_threads,
            )
            self.epochs_done = epoch
            if epoch_callback is not None:
                epoch_callback(epoch, self)
        return self

    @staticmethod
    def _features(data: TrainingData) -> Any:
        features = data.item_features
        if features is None or features.shape[1] == 0:
            return None  # LightFM then uses one identity feature per item
        return features.tocsr().astype(np.float32, copy=False)

    def item_vectors(self, data: TrainingData) -> np.ndarray:
        """``[item_features @ item_embeddings, item_features @ item_biases]`` as float32."""
        if self.model is None:
            raise RuntimeError("LightFMModel.fit must run before exporting vectors")
        biases, embeddings = self.model.get_item_representations(self._features(data))
        return np.hstack([embeddings, biases[:, None]]).astype(np.float32)

    def user_vectors(self) -> np.ndarray:
        """``[user_embeddings, 1.0]`` as float32 (no user features: the identity)."""
        if self.model is None:
            raise RuntimeError("LightFMModel.fit must run before exporting vectors")
        embeddings = self.model.user_embeddings
        return np.hstack([embeddings, np.ones((len(embeddings), 1))]).astype(np.float32)

    def to_bundle(self, data: TrainingData) -> Bundle:
        """Servable bundle; the default serving policy is :data:`~recsys.names.DEFAULT_POLICY`."""
        return make_bundle(
            data,
            item_vectors=self.item_vectors(data),
            user_vectors=self.user_vectors(),
            popularity_window_days=self.popularity_window_days,
            metadata={
                "model": self.name,
                "policy": DEFAULT_POLICY,
                "params": self.params,
                "epochs_trained": self.epochs_done,
            },
        )
