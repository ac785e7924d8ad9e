# recsys — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
RECSYS := $(VENV)/bin/recsys
UV_VERSION := 0.13.8

# `make demo` knobs: synthetic data scale (1 = full RetailRocket size) and seed
SCALE ?= 0.05
SEED ?= 42
TRIALS ?= 3
# days at the end of the data the demo model never sees (`make ab-demo` replays them against it;
# the service then does not rebuild its online history from them)
HOLDBACK ?= 0
DATA_DIR ?= var/demo/raw
HOST ?= 127.0.0.1
PORT ?= 8000
# `make demo EXPERIMENTS=experiments.example.yaml`: serve with A/B experiments (RECSYS_EXPERIMENTS_FILE)
EXPERIMENTS ?=
# `make ab-demo`: simulated visitors against the running demo service, then the experiment's report
AB_EXPERIMENT ?= champion-vs-popular
VISITORS ?= 4000

# `make mlflow-ui`: the folder of the MLflow store shown (var/notebooks: the notebooks' runs)
MLFLOW_STORE ?= var

.PHONY: help install demo ab-demo test test-fast lint format typecheck lock notebooks mlflow-screenshot mlflow-ui \
	airflow airflow-start airflow-stop monitoring-tools monitor dashboards monitoring-pictures up down \
	k8s-tools k8s-check k8s-rules clean

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --python $(PY) -r requirements.txt
	$(UV) pip install --python $(PY) --no-deps -e .
	touch $@

install: $(VENV)/.installed ## Create .venv and install pinned dependencies + the package

demo: install ## Synthetic data -> event store -> train + register champion -> service on $(HOST):$(PORT)
	$(RECSYS) data synth --out $(DATA_DIR) --scale $(SCALE) --seed $(SEED)
	$(RECSYS) data import $(DATA_DIR)
	$(RECSYS) data profile $(DATA_DIR) --json var/demo/profile.json
	$(RECSYS) train --trials $(TRIALS) --holdback-days $(HOLDBACK)
	@$(if $(EXPERIMENTS),RECSYS_EXPERIMENTS_FILE=$(abspath $(EXPERIMENTS)) )$(if $(filter-out 0,$(HOLDBACK)),RECSYS_REBUILD_HISTORY=false )$(RECSYS) serve --host $(HOST) --port $(PORT) & pid=$$!; trap "kill $$pid 2>/dev/null" EXIT INT TERM; \
	for _ in $$(seq 120); do curl -sf http://$(HOST):$(PORT)/health/ready >/dev/null && break; sleep 0.5; done; \
	user=$$($(PY) -c "import pandas as p; e=p.read_csv('$(DATA_DIR)/events.csv'); print(e.visitorid.value_counts().index[0])"); \
	echo "GET /recommendations?user_id=$$user"; curl -s "http://$(HOST):$(PORT)/recommendations?user_id=$$user"; echo; \
	echo "Service answering on http://$(HOST):$(PORT) (docs at /docs). Ctrl-C to stop."; wait $$pid

ab-demo: install ## Simulated holdout visitors against the demo service ($(HOST):$(PORT), EXPERIMENTS set), then `recsys ab report` (table + docs/ab-report.png)
	$(RECSYS) simulate --url http://$(HOST):$(PORT) --data-dir $(DATA_DIR) --visitors $(VISITORS) --duration 600 --seed $(SEED)
	@sleep 2  # the service writes exposures once a second
	$(RECSYS) ab report --experiment $(AB_EXPERIMENT) $(if $(EXPERIMENTS),--experiments $(EXPERIMENTS))
	$(RECSYS) ab report --experiment $(AB_EXPERIMENT) $(if $(EXPERIMENTS),--experiments $(EXPERIMENTS)) --format png --out docs/ab-report.png

test: lint typecheck monitoring-tools k8s-tools ## Lint, type-check and run the whole test suite (needs PostgreSQL on 127.0.0.1:5432)
	$(PY) -m pytest --durations=20

test-fast: install ## The edit-test loop: every test not marked slow, doctests included (< 30 s)
	$(PY) -m pytest -q -m "not slow"

LINTED := src tests fastapi_service airflow_ml_pipeline monitoring benchmarks notebooks/execute.py infrastructure/mlflow/screenshot.py \
	infrastructure/k8s/prometheusrule.py

lint: install ## ruff lint + format check
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

typecheck: install ## mypy on src/, fastapi_service/ and the DAGs
	$(VENV)/bin/mypy

# the images' locks take their versions from requirements.txt (-c): only hashes are added
LOCK := $(UV) pip compile --python-version 3.11 --generate-hashes

lock: ## Re-pin requirements.txt from requirements.in, then the images' locks from it (all with hashes)
	$(LOCK) requirements.in -o requirements.txt
	$(LOCK) fastapi_service/requirements.txt -c requirements.txt -o fastapi_service/requirements.lock
	$(LOCK) pyproject.toml --extra training --extra airflow -c requirements.txt \
		-o airflow_ml_pipeline/requirements.lock
	$(LOCK) infrastructure/mlflow/requirements.txt -c requirements.txt \
		-o infrastructure/mlflow/requirements.lock

notebooks: install ## Re-run notebooks/*.ipynb on demo data (SCALE, SEED) and keep their outputs
	$(RECSYS) data synth --out $(DATA_DIR) --scale $(SCALE) --seed $(SEED)
	rm -rf var/notebooks
	$(PY) notebooks/execute.py notebooks/eda.ipynb
	$(PY) notebooks/execute.py notebooks/modeling.ipynb

mlflow-screenshot: install ## docs/mlflow-*.png: the MLflow UI's run comparison over var/notebooks (headless Chromium)
	@command -v chromium >/dev/null || { echo "needs Debian's chromium: apt-get install -y chromium"; exit 1; }
	$(PY) infrastructure/mlflow/screenshot.py --store var/notebooks --out docs

mlflow-ui: install ## MLflow UI on 127.0.0.1:5000 over $(MLFLOW_STORE)/mlflow.db (default: the local store)
	@echo "runs: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey=headline"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///$(MLFLOW_STORE)/mlflow.db --artifacts-destination $(MLFLOW_STORE)/mlartifacts

airflow: install ## Airflow UI on 127.0.0.1:8080 + scheduler + DAG processor over var/ (login printed; Ctrl-C stops; AIRFLOW_EXECUTOR=CeleryExecutor adds a Celery worker, see docs/scale-out-airflow-s3.md)
	airflow_ml_pipeline/run-airflow.sh run

airflow-start: install ## The same in the background (returns once healthy)
	airflow_ml_pipeline/run-airflow.sh start

airflow-stop: ## Stop what airflow-start started
	airflow_ml_pipeline/run-airflow.sh stop

# `make monitor` / `make up` ports (all on 127.0.0.1) and seconds of generated traffic
PROMETHEUS_PORT ?= 9090
ALERTMANAGER_PORT ?= 9093
TRAFFIC ?= 600

monitoring-tools: ## Install the Debian packages of the monitoring and scale-out checks and the benchmarks when missing (prometheus, alertmanager, nginx, wrk)
	@bash monitoring/install.sh prometheus alertmanager nginx wrk

monitor: install monitoring-tools ## Service + Prometheus + Alertmanager on loopback (no Docker); Ctrl-C stops them
	$(PY) -m monitoring.stack --port $(PORT) --prometheus-port $(PROMETHEUS_PORT) \
		--alertmanager-port $(ALERTMANAGER_PORT) --traffic $(TRAFFIC)

dashboards: install ## Regenerate monitoring/grafana/dashboards/*.json from monitoring/dashboards.py
	$(PY) -m monitoring.dashboards

monitoring-pictures: install monitoring-tools ## monitoring/pictures/*.png: every dashboard drawn from a live Prometheus (headless Chromium)
	@bash monitoring/install.sh chromium
	$(PY) -m monitoring.pictures

up: install ## The stack in Docker (service + Prometheus + Alertmanager), built locally; needs a Docker engine
	$(PY) -c "from pathlib import Path; from monitoring.bundle import ensure_bundle; ensure_bundle(Path('var/monitor/bundle'))"
	RECSYS_BUNDLE_DIR=$(CURDIR)/var/monitor/bundle docker compose -f monitoring/compose.yaml up -d --build --wait
	@echo "service http://127.0.0.1:8000  prometheus http://127.0.0.1:9090  alertmanager http://127.0.0.1:9093"

down: ## Stop the Docker stack of `make up` and remove its volumes
	docker compose -f monitoring/compose.yaml down -v

k8s-tools: ## Install kubectl (Debian package, kustomize built in) when missing
	@bash monitoring/install.sh kubectl

k8s-check: install k8s-tools monitoring-tools ## Build every kustomize overlay of infrastructure/k8s and validate it offline (no cluster)
	$(PY) infrastructure/k8s/prometheusrule.py --check
	$(PY) -m pytest -q tests/infrastructure/test_k8s.py

k8s-rules: install ## Regenerate infrastructure/k8s/base/prometheusrule.yaml from monitoring/prometheus/rules/recsys.yml
	$(PY) infrastructure/k8s/prometheusrule.py

clean: ## Remove local state (var/) and the virtualenv
	rm -rf var $(VENV)
