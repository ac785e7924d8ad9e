"""A/B experiments: declared in a file, assigned by hash, attributed, measured, reported.

* :mod:`.config`: the experiments file (schema and validation);
* :mod:`.assignment`: ``sha256(salt:user_id)`` buckets and the request path's :class:`Router`;
* :mod:`.attribution`: events to variants (by request id, else by a window after the first
  exposure) and the per-variant business metrics, from the event store;
* :mod:`.stats`: intervals, tests, sample-ratio check, MDE and CUPED;
* :mod:`.report`: the report of ``recsys ab report`` (table, JSON, PNG).

Only configuration and assignment are imported here: what the service's request path calls
(one hash and tuple lookups per request, no pandas); the rest loads where it is used.
"""

from recsys.abtest.assignment import Assignment, Router, assign, bucket
from recsys.abtest.config import (
    Experiment,
    Variant,
    load_experiments,
    model_references,
    parse_experiments,
)

__all__ = [
    "Assignment",
    "Experiment",
    "Router",
    "Variant",
    "assign",
    "bucket",
    "load_experiments",
    "model_references",
    "parse_experiments",
]
