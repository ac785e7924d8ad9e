"""RetailRocket data: loading and validation, the event store."""

from recsys.data.load import (
    Dataset,
    load_category_tree,
    load_dataset,
    load_events,
    load_item_properties,
)
from recsys.data.store import EventStore, Imported

__all__ = [
    "Dataset",
    "EventStore",
    "Imported",
    "load_category_tree",
    "load_dataset",
    "load_events",
    "load_item_properties",
]
