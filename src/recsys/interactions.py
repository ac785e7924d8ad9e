"""Events -> sparse interaction matrix and the training data every model consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse


@dataclass
class TrainingData:
    """Everything a model may learn from: only data strictly before ``cutoff_ms``."""

    cutoff_ms: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    interactions: sparse.csr_matrix
    item_features: sparse.csr_matrix
    feature_names: list[str]
    item_category: np.ndarray
    item_available: np.ndarray
    events: pd.DataFrame
