"""The retraining DAG, unchanged, on Airflow's CeleryExecutor: ``run-airflow.sh`` with
``AIRFLOW_EXECUTOR=CeleryExecutor`` starts the API server, scheduler, DAG processor and one
Celery worker on loopback; metadata and Celery results live in a fresh PostgreSQL database,
the broker is the local Redis (a db number of its own, and a queue of this test's own).

A run triggered over the REST API succeeds with every task executed by the Celery worker
(each task instance's Celery task id has a SUCCESS result in the result backend, and the
worker logged it), and registers the champion. Everything is stopped and dropped afterwards,
on failure too.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from airflow_testkit import (
    FAST_CONF,
    api_client,
    launcher,
    launcher_env,
    process_groups,
    trigger_and_wait,
)
from mlflow.tracking import MlflowClient
from psycopg import sql

from recsys.config import MODEL_NAME
from tests.fastapi_service.service_testkit import free_port
from tests.helpers import copy_store

#: on a quiet 2-core machine the module takes ~3 minutes; the limit leaves room for a busy one
pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(1500),
]

#: the broker: the local Redis, in a database number no other test of the project uses
#: (flushed before and after; nothing else of Redis is touched)
REDIS_DB = 5
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
RUN_TIMEOUT_S = 900
#: the quick run of the other end-to-end tests, smaller still: what is under test here is
#: where the tasks run, not the model (one candidate policy, five weeks of events)
CELERY_CONF = FAST_CONF | {"candidates": ["lightfm"], "window_days": 35, "epochs": 3}


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """The Redis broker URL, its database empty before and after the module."""
    client = redis.Redis.from_url(BROKER_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # as for PostgreSQL: a failure in CI, else a skip
        message = f"Redis at {BROKER_URL} is not reachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    client.flushdb()
    try:
        yield BROKER_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="module")
def metadata_db(pg_admin_dsn: str) -> Iterator[str]:
    """Name of a fresh PostgreSQL database (Airflow metadata + Celery results), dropped after."""
    name = f"airflow_celery_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def celery_airflow(
    tmp_path_factory: pytest.TempPathFactory, tiny_store: str, broker: str, metadata_db: str
) -> Iterator[dict[str, Any]]:
    """Airflow on CeleryExecutor through the repository's launcher; stopped afterwards."""
    root = tmp_path_factory.mktemp("celery")
    var = root / "var"
    copy_store(tiny_store, var)  # var/events.db: the default store under RECSYS_VAR_DIR
    home = root / "airflow"
    queue = f"recsys-test-{uuid.uuid4().hex[:8]}"
    env = launcher_env(
        home,
        free_port(),
        var,
        AIRFLOW_EXECUTOR="CeleryExecutor",
        AIRFLOW_DB_URL=f"postgresql+psycopg2://postgres@127.0.0.1:5432/{metadata_db}",
        AIRFLOW_CELERY_BROKER_URL=broker,
        AIRFLOW_CELERY_QUEUE=queue,
        AIRFLOW_CELERY_CONCURRENCY="2",
        AIRFLOW_CELERY_HOSTNAME=f"{queue}@%h",
        # manual runs only: unpausing would also queue today's scheduled run (stale data, it
        # fails at the check) ahead of ours
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
    )
    started = launcher("start", env)
    pids = [int(p.read_text()) for p in sorted((home / "pids").glob("*.pid"))]
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield {
            "url": f"http://127.0.0.1:{env['AIRFLOW_PORT']}",
            "home": home,
            "var": var,
            "queue": queue,
            "db": metadata_db,
            "pids": pids,
        }
    finally:
        stopped = launcher("stop", env)
        assert stopped.returncode == 0, stopped.stderr
        assert process_groups(pids) == []


def _metadata(db: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}") as conn:
        return conn.execute(query, args).fetchall()


def test_the_dag_runs_on_the_celery_worker_and_registers_the_champion(
    celery_airflow: dict[str, Any],
) -> None:
    home: Path = celery_airflow["home"]
    assert {p.stem for p in (home / "pids").iterdir()} == {
        "api-server",
        "scheduler",
        "dag-processor",
        "celery-worker",
    }
    run = trigger_and_wait(api_client(celery_airflow["url"], home), CELERY_CONF, RUN_TIMEOUT_S)
    states = {t["task_id"]: t["state"] for t in run["task_instances"]}
    assert run["state"] == "success", states
    assert len(states) == 9 and set(states.values()) == {"success"}, states

    # every task instance went through the Celery queue of this test and has a SUCCESS
    # result in the result backend under the Celery task id the executor recorded (the last
    # task's Celery job ends a moment after the task reported its state)
    def fetch() -> list[tuple[Any, ...]]:
        return _metadata(
            celery_airflow["db"],
            "SELECT ti.task_id, ti.queue, ti.external_executor_id, ti.hostname, r.status"
            " FROM task_instance ti LEFT JOIN celery_taskmeta r"
            " ON r.task_id = ti.external_executor_id WHERE ti.run_id = %s",
            run["dag_run_id"],
        )

    deadline = time.monotonic() + 60
    while any(row[4] == "STARTED" for row in fetch()) and time.monotonic() < deadline:
        time.sleep(1)
    rows = fetch()
    assert {row[0] for row in rows} == set(states)
    for task_id, queue, celery_id, hostname, status in rows:
        assert queue == celery_airflow["queue"], (task_id, queue)
        assert celery_id and status == "SUCCESS", (task_id, celery_id, status)
        assert hostname, task_id
    # ... and the worker (not the scheduler) executed each of them
    worker_log = (home / "logs" / "celery-worker.log").read_text(errors="replace")
    scheduler_log = (home / "logs" / "scheduler.log").read_text(errors="replace")
    assert "CeleryExecutor" in scheduler_log
    for task_id, _, celery_id, _, _ in rows:
        assert celery_id in worker_log and f"task_id='{task_id}'" in worker_log, task_id

    tracking = f"sqlite:///{celery_airflow['var'] / 'mlflow.db'}"
    client = MlflowClient(tracking, tracking)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.tags["gate"].startswith("first model")
    assert client.get_run(champion.run_id).data.tags["airflow_run_id"] == run["dag_run_id"]
