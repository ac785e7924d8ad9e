#!/usr/bin/env bash
# Airflow 3 for the retraining DAG on this machine: API server (UI) + scheduler + DAG processor
# as separate processes on 127.0.0.1 (not `airflow standalone`, whose log servers bind every
# interface), LocalExecutor, metadata in SQLite under var/ or PostgreSQL. With
# AIRFLOW_EXECUTOR=CeleryExecutor the scheduler queues the tasks on a broker (Redis) and a
# Celery worker started here runs them (more workers, on other hosts too, join the same queue
# with `airflow celery worker -q QUEUE` and the same settings).
#
#   run-airflow.sh [run]   start, print the login, stay in the foreground; Ctrl-C stops all
#   run-airflow.sh start   start in the background and return once healthy (pids in $AIRFLOW_HOME/pids)
#   run-airflow.sh stop    stop what `start` started
#
# Variables (defaults in brackets):
#   AIRFLOW_HOME       [var/airflow]  config, logs, SQLite metadata, generated login and secrets
#   AIRFLOW_PORT       [8080]         API server and UI on 127.0.0.1
#   AIRFLOW_DB_URL     [sqlite under AIRFLOW_HOME]  e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/airflow
#                                     (the database must exist; the schema is migrated here)
#   RECSYS_VAR_DIR     [var]          the project's stores (event store, MLflow), as for the CLI;
#                                     every other RECSYS_* setting passes through to the tasks
#   AIRFLOW_START_TIMEOUT_S [180]     seconds to wait for the API server to answer
#   AIRFLOW_EXECUTOR   [LocalExecutor] or CeleryExecutor (needs AIRFLOW_DB_URL on PostgreSQL)
#   CeleryExecutor only:
#   AIRFLOW_CELERY_BROKER_URL     [redis://127.0.0.1:6379/0]  the broker (a Redis db number of its own)
#   AIRFLOW_CELERY_RESULT_BACKEND [db+AIRFLOW_DB_URL]         where Celery keeps task results
#   AIRFLOW_CELERY_QUEUE          [default]  the queue tasks go to and the worker serves
#   AIRFLOW_CELERY_CONCURRENCY    [2]        task processes of the worker
#   AIRFLOW_CELERY_HOSTNAME       [recsys@%h] the worker's Celery node name (unique per worker)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${AIRFLOW_BIN:-$REPO/.venv/bin}"
MODE="${1:-run}"
export AIRFLOW_HOME="$(realpath -m "${AIRFLOW_HOME:-$REPO/var/airflow}")"
PORT="${AIRFLOW_PORT:-8080}"
URL="http://127.0.0.1:$PORT"
PIDS="$AIRFLOW_HOME/pids"
LOGS="$AIRFLOW_HOME/logs"

stop_all() {
    [[ -n "$(ls -A "$PIDS" 2>/dev/null)" ]] || return 0
    local pidfile pid
    for pidfile in "$PIDS"/*.pid; do
        [[ -e "$pidfile" ]] || continue
        pid="$(cat "$pidfile")"
        # each component leads its own process group: stop it with its children
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pidfile in "$PIDS"/*.pid; do
        [[ -e "$pidfile" ]] || continue
        pid="$(cat "$pidfile")"
        for _ in $(seq 100); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    echo "Airflow stopped."
}

if [[ "$MODE" == "stop" ]]; then
    stop_all
    exit 0
fi
if [[ "$MODE" != "run" && "$MODE" != "start" ]]; then
    echo "usage: $0 [run|start|stop]" >&2
    exit 2
fi
if [[ -n "$(ls -A "$PIDS" 2>/dev/null)" ]]; then
    echo "Airflow already runs from $AIRFLOW_HOME (pids in $PIDS): '$0 stop' first." >&2
    exit 1
fi

mkdir -p "$AIRFLOW_HOME" "$PIDS" "$LOGS"
# a login and secrets generated once and kept (owner-only), so restarts keep sessions valid
umask 077
if [[ ! -f "$AIRFLOW_HOME/passwords.json" ]]; then
    "$BIN/python" -c 'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' \
        >"$AIRFLOW_HOME/passwords.json"
fi
if [[ ! -f "$AIRFLOW_HOME/secrets.env" ]]; then
    "$BIN/python" -c 'import secrets; print(f"JWT_SECRET={secrets.token_urlsafe(32)}\nSECRET_KEY={secrets.token_urlsafe(32)}")' \
        >"$AIRFLOW_HOME/secrets.env"
fi
umask 022
# shellcheck disable=SC1091
source "$AIRFLOW_HOME/secrets.env"

export AIRFLOW__CORE__DAGS_FOLDER="$REPO/airflow_ml_pipeline/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
EXECUTOR="${AIRFLOW_EXECUTOR:-LocalExecutor}"
export AIRFLOW__CORE__EXECUTOR="$EXECUTOR"
# the DAG runs one task at a time (max_active_runs=1): two worker processes, not Airflow's 32
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-2}"
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/passwords.json"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$URL/execution/"
export AIRFLOW__API__BASE_URL="$URL"
export AIRFLOW__API__SECRET_KEY="$SECRET_KEY"
export AIRFLOW__API_AUTH__JWT_SECRET="$JWT_SECRET"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW_DB_URL:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__LOGGING__BASE_LOG_FOLDER="$LOGS"
case "$EXECUTOR" in
LocalExecutor) ;;
CeleryExecutor)
    if [[ "$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" == sqlite* ]]; then
        echo "CeleryExecutor needs a PostgreSQL metadata database: set AIRFLOW_DB_URL" >&2
        exit 2
    fi
    export AIRFLOW__CELERY__BROKER_URL="${AIRFLOW_CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
    export AIRFLOW__CELERY__RESULT_BACKEND="${AIRFLOW_CELERY_RESULT_BACKEND:-db+$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN}"
    # the queue of every task (DAG processor) is the one the worker consumes
    export AIRFLOW__OPERATORS__DEFAULT_QUEUE="${AIRFLOW_CELERY_QUEUE:-default}"
    export AIRFLOW__CELERY__WORKER_CONCURRENCY="${AIRFLOW_CELERY_CONCURRENCY:-2}"
    ;;
*)
    echo "AIRFLOW_EXECUTOR must be LocalExecutor or CeleryExecutor, not $EXECUTOR" >&2
    exit 2
    ;;
esac
# the tasks use the project's stores, resolved here so the task processes' cwd does not matter
export RECSYS_VAR_DIR="$(realpath -m "${RECSYS_VAR_DIR:-$REPO/var}")"
cd "$REPO"

echo "Migrating the metadata database ($(sed -E 's#//[^@/]*@#//***@#' <<<"$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"))..."
"$BIN/airflow" db migrate >"$LOGS/db-migrate.log" 2>&1 || { tail -20 "$LOGS/db-migrate.log"; exit 1; }

start_component() {  # name, command...: own session (process group), output to a log file
    local name="$1"
    shift
    setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name.pid"
}
if [[ "$MODE" == "run" ]]; then
    trap 'stop_all; exit 0' INT TERM
    trap stop_all EXIT
fi
start_component api-server "$BIN/airflow" api-server --host 127.0.0.1 --port "$PORT" --workers 1
start_component scheduler "$BIN/airflow" scheduler --skip-serve-logs
start_component dag-processor "$BIN/airflow" dag-processor
if [[ "$EXECUTOR" == CeleryExecutor ]]; then
    # task logs land in the shared $LOGS, read by the API server: no log server on 8793
    start_component celery-worker "$BIN/airflow" celery worker --skip-serve-logs \
        --queues "$AIRFLOW__OPERATORS__DEFAULT_QUEUE" \
        --concurrency "$AIRFLOW__CELERY__WORKER_CONCURRENCY" \
        --celery-hostname "${AIRFLOW_CELERY_HOSTNAME:-recsys@%h}"
fi

deadline=$((SECONDS + ${AIRFLOW_START_TIMEOUT_S:-180}))
until curl -sf "$URL/api/v2/monitor/health" >/dev/null; do
    for pidfile in "$PIDS"/*.pid; do
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            name="$(basename "$pidfile" .pid)"
            echo "$name exited; its log ($LOGS/$name.log):" >&2
            tail -30 "$LOGS/$name.log" >&2
            stop_all
            exit 1
        fi
    done
    if ((SECONDS > deadline)); then
        echo "Airflow did not answer on $URL in time; logs in $LOGS" >&2
        stop_all
        exit 1
    fi
    sleep 1
done

password="$("$BIN/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$AIRFLOW_HOME/passwords.json")"
cat <<EOF
Airflow is up: $URL  (DAG retrain_recommender; $EXECUTOR; logs in $LOGS)
  login:    admin
  password: $password
  stores:   RECSYS_VAR_DIR=$RECSYS_VAR_DIR (event store and MLflow, as for \`recsys\`)
EOF
if [[ "$MODE" == "start" ]]; then
    echo "Stop it with: $0 stop   (or make airflow-stop)"
    exit 0
fi
echo "Ctrl-C stops the API server, scheduler and DAG processor$([[ "$EXECUTOR" == CeleryExecutor ]] && echo ' and the Celery worker')."
wait
