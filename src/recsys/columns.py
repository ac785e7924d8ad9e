"""Column names and fixed vocabularies of the RetailRocket files and the event store.

Every module takes column names from here, never from string literals.
"""

from typing import Final

TIMESTAMP: Final = "timestamp"
VISITOR: Final = "visitorid"
EVENT: Final = "event"
ITEM: Final = "itemid"
TRANSACTION: Final = "transactionid"
PROPERTY: Final = "property"
VALUE: Final = "value"
CATEGORY: Final = "categoryid"
PARENT: Final = "parentid"
AVAILABLE: Final = "available"
REQUEST_ID: Final = "request_id"
#: UTC datetime derived from TIMESTAMP (not a column of the files)
DATETIME: Final = "datetime"

# timestamps are epoch milliseconds
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS

VIEW: Final = "view"
ADDTOCART: Final = "addtocart"
PURCHASE: Final = "transaction"
#: event types in funnel order; the categorical dtype uses this order
EVENT_TYPES: Final = (VIEW, ADDTOCART, PURCHASE)

EVENTS_COLUMNS: Final = (TIMESTAMP, VISITOR, EVENT, ITEM, TRANSACTION)
PROPERTIES_COLUMNS: Final = (TIMESTAMP, ITEM, PROPERTY, VALUE)
CATEGORY_TREE_COLUMNS: Final = (CATEGORY, PARENT)

EVENTS_FILE: Final = "events.csv"
PROPERTIES_FILES: Final = ("item_properties_part1.csv", "item_properties_part2.csv")
CATEGORY_TREE_FILE: Final = "category_tree.csv"
#: Kaggle splits the property log after this many data rows into part 1
PROPERTIES_PART1_ROWS: Final = 10_999_999

# exposures table (event store)
EXPERIMENT: Final = "experiment"
VARIANT: Final = "variant"
MODEL_VERSION: Final = "model_version"
ITEM_IDS: Final = "item_ids"
#: an exposures row, in table order
EXPOSURES_COLUMNS: Final = (
    REQUEST_ID,
    TIMESTAMP,
    VISITOR,
    EXPERIMENT,
    VARIANT,
    MODEL_VERSION,
    ITEM_IDS,
)
