"""How long the service takes to rebuild its in-process online history from the event store.

At start (and after a rollback) :meth:`fastapi_service.service.Service.sync_history` reads the
events since the served model's cutoff and applies them; this runs that method, unchanged,
against a full-scale store for served models with cutoffs 1, 7 and 30 days before the data's
end (the retraining is daily: 1 day is the normal case, 30 a retraining stalled for a month),
and prints the events read, the visitors kept (recent items), the time and the process's peak RSS.

    .venv/bin/python benchmarks/history_rebuild.py [--db sqlite:///var/bench/events.db]

The store's events are dated in the data's past, so the views' window
(``RECSYS_HISTORY_TTL_S``) is set to cover them; only the cutoff bounds the rebuild here.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi_service.metrics import ServiceMetrics
from fastapi_service.service import Service
from fastapi_service.settings import ServiceSettings
from recsys import columns as C
from recsys.data.store import EventStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite:///var/bench/events.db")
    args = parser.parse_args()
    store = EventStore(args.db)
    end = store.newest_event_ms()
    if end is None:
        sys.exit(f"{args.db} holds no events; run `recsys data import` on full-scale data first")
    print(f"store {args.db}: {sum(store.event_counts().values()):,} events")
    print("| cutoff | events read | visitors kept | seconds |")
    print("|---|---|---|---|")
    for days in (1, 7, 30):
        cutoff = end - days * C.DAY_MS
        settings = ServiceSettings(db_url=args.db, history_ttl_s=20 * 365 * 86400.0)
        model = SimpleNamespace(bundle=SimpleNamespace(metadata={"cutoff_ms": cutoff}), arms={})
        manager = SimpleNamespace(current=model, experiments=())
        service = Service(settings, manager, ServiceMetrics())  # type: ignore[arg-type]
        service.store = store
        started = time.perf_counter()
        read = service.sync_history()
        seconds = time.perf_counter() - started
        print(f"| {days} d | {read:,} | {len(service.history):,} | {seconds:.2f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
