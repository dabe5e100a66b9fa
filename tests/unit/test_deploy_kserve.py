"""Offline checks of the KServe and KEDA parts of deploy/ (no cluster runs here):

- components/keda (with the AKS and the local overlay) and overlays/kserve (components/kserve
  plus an InferenceService) render with `kubectl kustomize`;
- their built-in kinds pass `kubernetes-validate --strict`, their custom resources the
  openAPIV3Schema of KServe's and KEDA's own CRDs (tests/fixtures/crds/, README there), strict
  about unknown fields as the API server is; manifests broken on purpose fail that check;
- they agree with the code: the ServingRuntime's port, models folder, probe paths, RBRIDGE_*
  settings, user and Secret as the server and the image have them; the InferenceService gets
  that runtime; the ScaledObject's query names metrics the server exports, in the namespace it
  runs in, and KEDA's HPA replaces the base's.

Rendering and the checks shared with tests/unit/test_deploy.py are in tests/manifests.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from manifests import (DEPLOY, check_auth_secret_folder, check_container_security,
                       check_pod_security, check_resources, check_tmpdir, container_env,
                       crd_errors, docs, dockerfile_uid_gid, known_env, kubernetes_validate, one,
                       rendered, server_routes, yaml)

KEDA = ["aks+keda", "local+keda"]
KSERVE = "kserve"
CRD_FILES = {
    ("serving.kserve.io", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml",
}
CUSTOM_KINDS = {("cert-manager.io/v1", "ClusterIssuer"),
                ("keda.sh/v1alpha1", "ScaledObject"),
                ("serving.kserve.io/v1alpha1", "ServingRuntime"),
                ("serving.kserve.io/v1beta1", "InferenceService")}
# Where KServe puts an InferenceService's storageUri (pkg/constants DefaultModelLocalMountPath)
# and the port it routes to (InferenceServiceDefaultHttpPort).
KSERVE_MODELS = "/mnt/models"
KSERVE_PORT = 8080


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kustomize")


def _crd_file(obj: dict) -> str:
    return CRD_FILES[(obj["apiVersion"].split("/")[0], obj["kind"])]


def _custom(objs: list[dict]) -> list[dict]:
    return [o for o in objs if (o["apiVersion"].split("/")[0], o["kind"]) in CRD_FILES]


def _runtime(objs) -> tuple[dict, dict]:
    runtime = one(objs, "ServingRuntime")
    (container,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    return runtime, container


# ---------------------------------------------------------------- render and validate
@pytest.mark.parametrize("name", KEDA)
def test_keda_renders_and_replaces_the_cpu_hpa(name, tmp_root):
    objs = docs(name, tmp_root)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ScaledObject"} <= kinds
    # KEDA makes its own HPA for the ScaledObject: a second one on the Deployment would fight it.
    assert "HorizontalPodAutoscaler" not in kinds


def test_kserve_renders_runtime_and_inference_service(tmp_root):
    kinds = sorted(o["kind"] for o in docs(KSERVE, tmp_root))
    # KServe makes the Deployment, Services, routes and HPA itself.
    assert kinds == sorted(["Namespace", "ServiceAccount", "PodDisruptionBudget",
                            "ServingRuntime", "InferenceService"])


@pytest.mark.parametrize("name", KEDA + [KSERVE])
def test_builtin_kinds_validate_strict(name, tmp_root, tmp_path):
    validated = kubernetes_validate(rendered(name, tmp_root), "1.30.0", CUSTOM_KINDS, tmp_path)
    builtin = {o["kind"].lower() for o in docs(name, tmp_root)
               if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS}
    assert builtin and builtin <= validated, f"not validated: {builtin - validated}"


@pytest.mark.parametrize("name", KEDA + [KSERVE])
def test_custom_resources_validate_against_their_crds(name, tmp_root):
    custom = _custom(docs(name, tmp_root))
    assert custom
    for obj in custom:
        errors = crd_errors(obj, _crd_file(obj))
        assert not errors, f"{obj['kind']} {obj['metadata']['name']}:\n" + "\n".join(errors)


def test_runtime_also_validates_as_a_cluster_serving_runtime(tmp_root):
    """deploy/components/kserve/servingruntime.yaml says: change the kind to share it."""
    runtime, _ = _runtime(docs(KSERVE, tmp_root))
    cluster = copy.deepcopy(runtime)
    cluster["kind"] = "ClusterServingRuntime"
    del cluster["metadata"]["namespace"]
    assert crd_errors(cluster, _crd_file(cluster)) == []


def _set(obj: dict, path: str, value) -> dict:
    broken = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = broken
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return broken


_DELETE = object()
BROKEN = [
    # (kind, path, value, what the error names)
    ("ServingRuntime", "spec.containers.0.prots", [{"containerPort": 8080}], "prots"),
    ("ServingRuntime", "spec.supportedModelFormats.0.autoSelect", "yes", "autoSelect"),
    ("ServingRuntime", "spec.containers", _DELETE, "containers"),
    ("ServingRuntime", "spec.containers.0.securityContext.runAsUser", "10001", "runAsUser"),
    ("InferenceService", "spec.predictor.model.storageURI", "pvc://x/y", "storageURI"),
    ("InferenceService", "spec.predictor.minReplicas", "two", "minReplicas"),
    ("InferenceService", "spec.predictor.autoScaling.metrics.0.type", "Cpu", "type"),
    ("ScaledObject", "spec.minReplicaCount", "2", "minReplicaCount"),
    ("ScaledObject", "spec.triggers.0.type", _DELETE, "type"),
    ("ScaledObject", "spec.scaleTargetRef.nme", "rbridge", "nme"),
]


@pytest.mark.parametrize("kind, path, value, named", BROKEN, ids=[f"{k}:{p}" for k, p, _, _ in BROKEN])
def test_a_broken_custom_resource_fails_validation(kind, path, value, named, tmp_root):
    objs = docs(KSERVE, tmp_root) + docs("aks+keda", tmp_root)
    obj = one(objs, kind)
    assert crd_errors(obj, _crd_file(obj)) == []
    errors = crd_errors(_set(obj, path, value), _crd_file(obj))
    assert errors and any(named in e for e in errors), errors


# ---------------------------------------------------------------- KServe: agreement with the code
def test_runtime_settings_port_and_models_folder(tmp_root):
    from rbridge import settings
    runtime, container = _runtime(docs(KSERVE, tmp_root))
    env = container_env(container)
    rbridge = {k: v for k, v in env.items() if k.startswith("RBRIDGE_")}
    assert not set(rbridge) - known_env(), sorted(set(rbridge) - known_env())
    assert set(env) - set(rbridge) <= {"TMPDIR"}
    loaded = settings.load(cli={}, env=rbridge)
    assert loaded.host == "0.0.0.0"
    assert str(loaded.models) == KSERVE_MODELS
    # One declared port (Knative allows no more), the one KServe routes to, the server's.
    (port,) = container["ports"]
    assert port["containerPort"] == loaded.port == KSERVE_PORT and port["name"] == "http1"
    assert container["args"] == ["rbridge", "serve"]
    # The metrics port is undeclared but listened on, and named where Prometheus looks.
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(loaded.metrics_port)
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    assert runtime["spec"]["protocolVersions"] == ["v2"]


def test_runtime_probes_are_server_routes(tmp_root):
    _, container = _runtime(docs(KSERVE, tmp_root))
    routes = server_routes()
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes
        assert get["port"] == KSERVE_PORT
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_runtime_security_secret_and_resources(tmp_root):
    uid, _ = dockerfile_uid_gid()
    runtime, container = _runtime(docs(KSERVE, tmp_root))
    check_container_security(container["securityContext"], uid)
    # Restricted Pod Security Standard: the container itself says so, whatever pod it is in.
    assert container["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["runAsGroup"] == uid
    check_tmpdir(runtime["spec"]["volumes"], container)
    check_auth_secret_folder(runtime["spec"]["volumes"], container)
    check_resources(container)


def test_inference_service_gets_this_runtime(tmp_root):
    objs = docs(KSERVE, tmp_root)
    runtime, _ = _runtime(objs)
    isvc = one(objs, "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert isvc["metadata"]["namespace"] == runtime["metadata"]["namespace"]
    # KServe takes the runtime named in model.runtime, or else picks one that supports the
    # format with autoSelect and the protocol.
    formats = {f["name"]: f for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    if "runtime" in model:
        assert model["runtime"] == runtime["metadata"]["name"]
    else:
        assert formats[model["modelFormat"]["name"]]["autoSelect"] is True
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert re.match(r"(pvc|gs|s3|https|hf|oci)://[^/]+/", model["storageUri"])
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in ("Standard", "RawDeployment")


def test_inference_service_pod_settings(tmp_root):
    from rbridge import settings
    objs = docs(KSERVE, tmp_root)
    uid, gid = dockerfile_uid_gid()
    predictor = one(objs, "InferenceService")["spec"]["predictor"]
    check_pod_security(predictor["securityContext"], uid, gid)
    account = one(objs, "ServiceAccount", predictor["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    assert predictor["automountServiceAccountToken"] is False
    # KServe names the predictor's Service <name>-predictor; its service links would be
    # RBRIDGE_PREDICTOR_* variables, which the server refuses to start with.
    assert predictor["enableServiceLinks"] is False
    links = {"RBRIDGE_PREDICTOR_SERVICE_HOST": "10.0.0.1", "RBRIDGE_PREDICTOR_PORT": "tcp://10.0.0.1:80"}
    with pytest.raises(settings.ConfigError, match="RBRIDGE_PREDICTOR"):
        settings.load(cli={}, env=links)
    _, container = _runtime(objs)
    drain = float(container_env(container)["RBRIDGE_GRACEFUL_TIMEOUT"])
    pre_stop = predictor["model"]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert predictor["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain
    assert predictor["minReplicas"] >= 2, "the PodDisruptionBudget lets one pod go at a time"


def test_pdb_selects_the_runtime_pods(tmp_root):
    objs = docs(KSERVE, tmp_root)
    runtime, _ = _runtime(objs)
    selector = one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= runtime["spec"]["labels"].items()


def test_namespace_stays_restricted(tmp_root):
    labels = one(docs(KSERVE, tmp_root), "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# ---------------------------------------------------------------- KEDA: agreement with the code
def _exported_metrics() -> set[str]:
    """Metric names on the server's /metrics: its Metrics with a pool attached (not started:
    the families are there, worker samples are not)."""
    from prometheus_client.parser import text_string_to_metric_families
    from rbridge import settings
    from rbridge.metrics import Metrics
    from rbridge.pool.pool import Pool

    metrics = Metrics()
    metrics.attach(Pool(settings.load(cli={}, env={}), {}, metrics))
    return {f.name for f in text_string_to_metric_families(metrics.render().decode())}


def _query_selectors(query: str) -> list[tuple[str, dict[str, str]]]:
    """(metric, {label: value}) for each selector in a PromQL query."""
    found = []
    for m in re.finditer(r"\b(rbridge_[a-z_]+)\s*(\{([^}]*)\})?", query):
        labels = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', m.group(3) or ""))
        found.append((m.group(1), labels))
    return found


@pytest.mark.parametrize("name", KEDA)
def test_scaled_object_query_reads_exported_metrics(name, tmp_root):
    from rbridge.metrics import STATES
    objs = docs(name, tmp_root)
    scaled = one(objs, "ScaledObject")
    deployment = one(objs, "Deployment")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    selectors = _query_selectors(trigger["metadata"]["query"])
    names = {metric for metric, _ in selectors}
    assert {"rbridge_queue_depth", "rbridge_worker_state", "rbridge_pool_size"} <= names
    assert names <= _exported_metrics(), names - _exported_metrics()
    for metric, labels in selectors:
        # Only this namespace's pods, each series scraped from the metrics port.
        assert labels.get("namespace") == deployment["metadata"]["namespace"] == scaled["metadata"]["namespace"]
        assert set(labels) <= {"namespace", "state"}
        if "state" in labels:
            assert labels["state"] in STATES
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "RBRIDGE_METRICS_PORT" in container_env(container)
    # The query is a ratio over all pods (load per worker slot): Value, not AverageValue, and a
    # target below 1 (1 would mean scaling only once requests queue).
    assert trigger["metricType"] == "Value"
    assert 0 < float(trigger["metadata"]["threshold"]) < 1
    assert trigger["metadata"]["serverAddress"].startswith("http")


@pytest.mark.parametrize("name", KEDA)
def test_scaled_object_scales_the_deployment_as_the_hpa_did(name, tmp_root):
    objs = docs(name, tmp_root)
    spec = one(objs, "ScaledObject")["spec"]
    deployment = one(objs, "Deployment")
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": deployment["metadata"]["name"]}
    # The CRD's CEL rule, which the schema check cannot run.
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # Scale to zero is not offered: no pod, no queue to measure (deploy/README.md).
    assert spec["minReplicaCount"] >= 1
    base = yaml.safe_load((DEPLOY / "base" / "hpa.yaml").read_text())["spec"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == base["behavior"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (base["minReplicas"], base["maxReplicas"])
