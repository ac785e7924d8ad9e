"""recsys: an add-to-cart product recommender for online shops (RetailRocket format)."""

__version__ = "0.1.0"
