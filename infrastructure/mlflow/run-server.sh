#!/usr/bin/env bash
# Shared MLflow tracking server for a team: PostgreSQL backend store + an artifact root.
#
#   MLFLOW_BACKEND_STORE_URI      postgresql+psycopg://USER@HOST:5432/DB   (required)
#   MLFLOW_ARTIFACTS_DESTINATION  a local folder, or s3://bucket/prefix for an S3-compatible
#                                 store (then also MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
#                                 AWS_SECRET_ACCESS_KEY; install boto3)   (default ./var/mlflow-artifacts)
#   MLFLOW_HOST / MLFLOW_PORT     bind address (default 127.0.0.1:5000)
#   MLFLOW_ALLOWED_HOSTS          Host headers to accept behind a proxy/compose (default: host:port)
#
# Clients set RECSYS_MLFLOW_TRACKING_URI=http://HOST:PORT; artifacts are proxied by the server,
# so clients need no storage credentials.
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:=./var/mlflow-artifacts}"
: "${MLFLOW_HOST:=127.0.0.1}"
: "${MLFLOW_PORT:=5000}"
: "${MLFLOW_ALLOWED_HOSTS:=${MLFLOW_HOST}:${MLFLOW_PORT},localhost:${MLFLOW_PORT}}"
# the job-execution feature starts ~10 processes / 2.3 GB; the registry does not need it
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec mlflow server \
  --backend-store-uri "${MLFLOW_BACKEND_STORE_URI}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION}" \
  --host "${MLFLOW_HOST}" --port "${MLFLOW_PORT}" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS}" \
  --workers "${MLFLOW_WORKERS:-2}"
