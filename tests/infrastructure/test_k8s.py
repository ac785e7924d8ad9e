"""Kubernetes manifests (``infrastructure/k8s``): built, validated and checked against the code.

No cluster runs here (none can be installed on these machines): every overlay is built with
``kubectl kustomize`` and each object validated offline by ``kubernetes-validate --strict``
against the Kubernetes 1.32 schemas. It has no schemas for the Prometheus Operator's
ServiceMonitor and PrometheusRule: those are checked against the subset of their CRD schemas the
manifests use, and the rules with ``promtool``. The rest ties the manifests to the code they
deploy: routes, settings, Dockerfile, alert rules. What a cluster would do with them (scheduling,
probe timing, autoscaling) is not tested.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.routing import APIRoute
from monitoring.servers import RULES, ToolMissing, program
from pydantic import AliasChoices

from fastapi_service.routes import router
from fastapi_service.settings import ServiceSettings
from recsys.config import Settings

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infrastructure" / "k8s"
BASE = K8S / "base"
OVERLAYS = ("dev", "prod")
DOCKERFILE = REPO / "fastapi_service" / "Dockerfile"
COMPOSE = REPO / "fastapi_service" / "compose.yaml"
GUIDE = REPO / "docs" / "deploy-kubernetes.md"
KUBERNETES_VERSION = "1.32.0"
#: kinds of the Prometheus Operator: no schema in kubernetes-validate, checked below
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
#: README benchmarks, full-scale model, 1 worker: RSS once ready and peak after load (GiB)
READY_RSS_GIB = 0.84
PEAK_RSS_GIB = 1.03
NAME = "recsys-api"

# --- building ---------------------------------------------------------------------------


def _kubectl() -> str:
    """kubectl, installed by monitoring/install.sh when missing: a failure in CI, else a skip."""
    try:
        return program("kubectl")
    except ToolMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(f"kubectl is not installed and could not be: {exc}")


@functools.cache
def _build_text(folder: Path) -> str:
    run = subprocess.run(
        [_kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"kubectl kustomize {folder} failed:\n{run.stderr}"
    return run.stdout


def build(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize folder`` renders (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_build_text(folder)) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def folder(name: str) -> Path:
    return BASE if name == "base" else K8S / "overlays" / name


def quantity(value: str | int) -> float:
    """A Kubernetes quantity in base units (bytes, cores): ``1536Mi`` -> 1610612736.0.

    >>> quantity("1536Mi"), quantity("500m"), quantity("1"), quantity("1Gi") / 2**30
    (1610612736.0, 0.5, 1.0, 1.0)
    """
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?", str(value))
    assert match, f"not a quantity: {value!r}"
    factor = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    factor |= {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}
    return float(match[1]) * factor[match[2] or ""]


def seconds(duration: str) -> float:
    """A Prometheus duration in seconds: ``1m30s`` -> 90.0.

    >>> seconds("1m30s"), seconds("15s"), seconds("500ms")
    (90.0, 15.0, 0.5)
    """
    units = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"([0-9]+)(ms|[smhdwy])", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return float(sum(int(n) * units[u] for n, u in parts))


# --- schemas ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """``kubernetes-validate --strict`` over base and every overlay (one run: ~3 s to start).

    Returns each build's output lines, keyed by its name.
    """
    root = tmp_path_factory.mktemp("k8s")
    files = {}
    for name in ("base", *OVERLAYS):
        files[name] = root / f"{name}.yaml"
        files[name].write_text(_build_text(folder(name)))
    validator = Path(sys.executable).with_name("kubernetes-validate")
    run = subprocess.run(
        [str(validator), "--strict", "-k", KUBERNETES_VERSION, *map(str, files.values())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (run.stdout + run.stderr).splitlines()
    by_name = {
        name: [line for line in lines if line.split(" ", 2)[1:2] == [str(path)]]
        for name, path in files.items()
    }
    unattributed = set(lines) - {line for found in by_name.values() for line in found}
    assert not unattributed, "\n".join(lines)
    assert (run.returncode == 0) == all(not line.startswith("ERROR") for line in lines), (
        f"rc {run.returncode}:\n" + "\n".join(lines)
    )
    return by_name


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_builds_and_validates_strictly(name: str, validation: dict[str, list[str]]) -> None:
    lines = validation[name]
    output = "\n".join(lines)
    errors = [line for line in lines if line.startswith("ERROR")]
    assert not errors, "\n".join(errors)
    # a misspelled apiVersion or kind is only a warning to it: accept none but the CRDs
    unknown = set(re.findall(r"Couldn't find schema for kind (\S+)", output))
    assert unknown == CRD_KINDS, output
    passed = sum(line.startswith("INFO") and " passed for resource " in line for line in lines)
    assert passed == sum(obj["kind"] not in CRD_KINDS for obj in build(folder(name))), output


_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": _STRING_MAP},
}
#: the fields of the Prometheus Operator's CRDs (monitoring.coreos.com/v1) these manifests may
#: use, with the CRDs' types; an unknown field is an error, as the API server would report it
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"matchLabels": _STRING_MAP},
                    },
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "limit": {"type": "integer"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "oneOf": [
                                            {"required": ["alert"]},
                                            {"required": ["record"]},
                                        ],
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": _STRING_MAP,
                                            "annotations": _STRING_MAP,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_operator_objects_match_their_crds(overlay: str) -> None:
    objects = build(folder(overlay))
    for kind, schema in CRD_SCHEMAS.items():
        jsonschema.validate(one(objects, kind), schema)
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert seconds(endpoint["scrapeTimeout"]) < seconds(endpoint["interval"])


def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    rule = one(build(folder("prod")), "PrometheusRule")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    try:
        promtool = program("promtool")
    except ToolMissing as exc:
        pytest.fail(str(exc))  # as in tests/monitoring: CI installs it (make monitoring-tools)
    run = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# --- one source for the alert rules -----------------------------------------------------


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("prometheusrule", K8S / "prometheusrule.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_prometheus_rule_is_generated_from_the_rules_file() -> None:
    generator = _generator()
    assert generator.RULES == RULES
    assert generator.OUTPUT.read_text() == generator.render(RULES.read_text()), (
        "infrastructure/k8s/base/prometheusrule.yaml drifted from "
        "monitoring/prometheus/rules/recsys.yml: run make k8s-rules"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_is_the_repository_rules(overlay: str) -> None:
    objects = build(folder(overlay))
    assert one(objects, "PrometheusRule")["spec"] == yaml.safe_load(RULES.read_text())
    # the Operator names the job after the Service (no jobLabel): the rules' job="recsys-api"
    service = one(objects, "Service")
    assert "jobLabel" not in one(objects, "ServiceMonitor")["spec"]
    jobs = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    assert jobs == {service["metadata"]["name"]}


# --- the manifests and the code they deploy ------------------------------------------------


def _route_paths() -> set[str]:
    return {route.path for route in router.routes if isinstance(route, APIRoute)}


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_probes_and_scrapes_hit_real_routes(name: str) -> None:
    objects = build(folder(name))
    api = container(objects)
    routes = _route_paths()
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert api["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = api[probe]["httpGet"]
        assert get["path"] in routes
        assert get["port"] in ports
    # annotation-based discovery
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes
    assert int(annotations["prometheus.io/port"]) in ports.values()
    # Service -> container port; ServiceMonitor -> Service port, /metrics
    service = one(objects, "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] in routes


def _setting_env_names() -> set[str]:
    """Every environment variable the service's settings (and the library's) read."""
    names = set()
    for settings in (ServiceSettings, Settings):
        prefix = settings.model_config.get("env_prefix", "")
        for field_name, field in settings.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names |= {str(choice).upper() for choice in alias.choices}
            elif isinstance(alias, str):
                names.add(alias.upper())
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


def _environment(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment: its ConfigMap and Secret (when rendered) and ``env``."""
    env: dict[str, str] = {}
    api = container(objects)
    by_name = {obj["metadata"]["name"]: obj for obj in objects}
    for source in api.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        obj = by_name.get(ref["name"])
        if obj is None:
            continue  # prod: the Secret is created out of band
        env |= _data(obj)
    env |= {item["name"]: item.get("value", "") for item in api.get("env", [])}
    return env


def _data(obj: dict[str, Any]) -> dict[str, str]:
    """The keys and values of a ConfigMap or a Secret (decoded)."""
    data = obj.get("data", {})
    if obj["kind"] == "Secret":
        data = {key: base64.b64decode(value).decode() for key, value in data.items()}
    return data | obj.get("stringData", {})


def _secret_keys_in_guide() -> set[str]:
    return set(re.findall(r"--from-literal=(\w+)=", GUIDE.read_text()))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_environment_is_the_service_settings(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = build(folder(overlay))
    env = _environment(objects)
    known = _setting_env_names()
    recsys = {name for name in env if name.startswith("RECSYS_")}
    assert recsys <= known, f"not settings of the service: {sorted(recsys - known)}"
    # the others are MLflow client variables the compose file passes the same way
    compose_env = yaml.safe_load(COMPOSE.read_text())["services"]["api"]["environment"]
    assert set(env) - recsys <= set(compose_env), sorted(set(env) - recsys - set(compose_env))
    # the Secret's keys: dev generates them, prod's are created by the guide's command
    secret_refs = [
        s["secretRef"]["name"] for s in container(objects)["envFrom"] if "secretRef" in s
    ]
    assert len(secret_refs) == 1
    secrets = [obj for obj in objects if obj["kind"] == "Secret"]
    guide_keys = _secret_keys_in_guide()
    assert guide_keys <= known
    if overlay == "prod":
        assert not secrets, "no credential is committed for production"
        assert secret_refs == ["recsys-api-secrets"]
        assert {"RECSYS_DB_URL", "RECSYS_ADMIN_TOKEN"} <= guide_keys
    else:
        assert len(secrets) == 1
        assert set(_data(secrets[0])) == guide_keys
    # the values parse, and the state folder is the emptyDir mount
    for name in known:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ServiceSettings()
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    volumes = {
        v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    var_dir = env["RECSYS_VAR_DIR"]
    assert "emptyDir" in volumes[mounts[var_dir]]
    assert settings.cache_dir.is_relative_to(var_dir)
    assert settings.workers == 1  # scale with pods: metrics and history are per process
    if overlay == "dev":
        assert settings.db_url.startswith("postgresql")
        assert settings.admin_token is not None


def _dockerfile() -> dict[str, str]:
    text = DOCKERFILE.read_text()
    runtime = text.rsplit("\nFROM ", 1)[1]  # the last stage is the image
    user = re.search(r"^USER (\d+):(\d+)$", runtime, re.MULTILINE)
    expose = re.search(r"^EXPOSE (\d+)$", runtime, re.MULTILINE)
    var_dir = re.search(r"RECSYS_VAR_DIR=(\S+)", runtime)
    tag = re.search(r"docker build -f fastapi_service/Dockerfile -t (\S+) \.", text)
    assert user and expose and var_dir and tag
    return {
        "uid": user[1],
        "gid": user[2],
        "port": expose[1],
        "var_dir": var_dir[1],
        "image": tag[1],
    }


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_image_port_user_and_filesystem_are_the_dockerfile(name: str) -> None:
    objects = build(folder(name))
    docker = _dockerfile()
    api = container(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    image = api["image"].rsplit("/", 1)[-1].split(":")[0]
    assert image == docker["image"]
    compose_image = yaml.safe_load(COMPOSE.read_text())["services"]["api"]["image"]
    assert compose_image.split(":")[0] == image
    assert [p["containerPort"] for p in api["ports"]] == [int(docker["port"])]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == docker["uid"]
    assert str(pod["securityContext"]["runAsGroup"]) == docker["gid"]
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    assert {m["mountPath"] for m in api["volumeMounts"]} == {docker["var_dir"], "/tmp"}
    assert all("emptyDir" in volume for volume in pod["volumes"])


# --- what each environment promises ---------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_selectors_and_references_agree(name: str) -> None:
    objects = build(folder(name))
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"], pod_labels)
    assert _selects({"matchLabels": one(objects, "Service")["spec"]["selector"]}, pod_labels)
    service_labels = one(objects, "Service")["metadata"]["labels"]
    assert _selects(one(objects, "ServiceMonitor")["spec"]["selector"], service_labels)
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        assert _selects(pdb["spec"]["selector"], pod_labels)
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] in {
        o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"
    }
    assert {o["metadata"]["name"] for o in objects if o["kind"] in {"Deployment", "Service"}} == {
        NAME
    }
    if name != "base":
        namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
        assert namespaces == {one(objects, "Namespace")["metadata"]["name"]}


def test_base_resources_are_sized_from_the_measured_rss() -> None:
    resources = container(build(BASE))["resources"]
    assert quantity(resources["requests"]["memory"]) >= READY_RSS_GIB * 2**30
    assert quantity(resources["limits"]["memory"]) >= PEAK_RSS_GIB * 2**30
    assert quantity(resources["requests"]["cpu"]) <= quantity(resources["limits"]["cpu"])
    deployment = one(build(BASE), "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_dev_is_one_small_replica() -> None:
    objects = build(folder("dev"))
    kinds = {obj["kind"] for obj in objects}
    assert not kinds & {"HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    dev, base = container(objects)["resources"], container(build(BASE))["resources"]
    for bound in ("requests", "limits"):
        assert quantity(dev[bound]["memory"]) < quantity(base[bound]["memory"])


def test_prod_survives_a_lost_node_and_scales() -> None:
    objects = build(folder("prod"))
    deployment = one(objects, "Deployment")
    hpa = one(objects, "HorizontalPodAutoscaler")
    pdb = one(objects, "PodDisruptionBudget")
    replicas = deployment["spec"]["replicas"]
    assert replicas == hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # the budget lets a drain evict one pod at a time, never all
    assert 1 <= pdb["spec"]["minAvailable"] < replicas
    pod = deployment["spec"]["template"]["spec"]
    spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= spread
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert "/" in container(objects)["image"], "prod pulls from a registry"
