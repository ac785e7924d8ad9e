"""Recommender models: one interface (:class:`Model`), LightFM and three baselines.

``LightFMModel`` lives in :mod:`recsys.models.lightfm` and is not imported here, so that
importing the baselines never loads LightFM.
"""

from recsys.models.base import Model
from recsys.models.baselines import PopularityModel, RecentViewsModel

__all__ = ["Model", "PopularityModel", "RecentViewsModel"]
