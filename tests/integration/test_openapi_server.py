"""The OpenAPI document served by a real server (R): valid, behind sign-in, and true (its
examples score; schemathesis finds no server error). The document built from schemas alone is
tested in tests/unit/test_openapi.py.

schemathesis runs against its own server: it sends wrong passwords to /login, and the sign-in
throttle would then lock 127.0.0.1 out of the shared server for a minute.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate

from serverproc import ADMIN, SCORER, Server, copy_models



# -- the real server ----------------------------------------------------------------------------------
@pytest.mark.r
def test_served_document_is_valid_and_needs_sign_in(server):
    assert requests.get(server.url + "/openapi.json", timeout=10).status_code == 401
    r = server.get("/openapi.json", auth=SCORER)
    assert r.status_code == 200, r.text
    spec = r.json()
    validate(spec)
    cyl = spec["components"]["schemas"]["cars.Row"]["properties"]["cyl"]
    assert cyl["enum"] == ["4", "6", "8", None]      # null is NA, which predict.lm answers with NA
    assert {"/models/cars/predict", "/models/iris/predict", "/login", "/status", "/metrics"} <= set(spec["paths"])
    one = server.get("/models/cars/openapi.json", auth=SCORER)
    assert one.status_code == 200
    validate(one.json())
    assert [p for p in one.json()["paths"] if p.endswith("/predict")] == ["/models/cars/predict"]
    assert server.get("/models/nope/openapi.json", auth=SCORER).json()["error"]["code"] == "unknown_model"


@pytest.mark.r
def test_examples_in_the_document_score(server):
    spec = server.get("/openapi.json", auth=SCORER).json()
    for name in ("cars", "iris"):
        content = spec["paths"][f"/models/{name}/predict"]["post"]["requestBody"]["content"]
        for example in content["application/json"]["examples"].values():
            r = server.post(f"/models/{name}/predict", example["value"], auth=SCORER)
            assert r.status_code == 200, (name, example, r.text)
            assert len(r.json()["predictions"]) == 2
        r = server.post(f"/models/{name}/predict", auth=SCORER, data=content["text/csv"]["example"],
                        headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def fuzz_server(small_models, tmp_path_factory):
    models = copy_models(small_models, tmp_path_factory.mktemp("fuzz-models"), ["cars", "iris"])
    with Server(models, tmp_path_factory.mktemp("fuzz"), "--workers", "2", "--timeout", "20") as s:
        yield s


@pytest.mark.r
@pytest.mark.slow
def test_schemathesis_finds_no_server_error(fuzz_server, tmp_path):
    """Generated requests (valid and invalid) against every operation: no 500, answers as documented."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    token = fuzz_server.post("/login", {"username": ADMIN[0], "password": ADMIN[1]}, auth=None).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    spec = requests.get(fuzz_server.url + "/openapi.json", headers=headers, timeout=10).json()
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_schema_conformance,response_headers_conformance,unsupported_method")
    cmd = [cli, "run", str(tmp_path / "openapi.json"),
           "--url", fuzz_server.url, "-H", f"Authorization: {headers['Authorization']}",
           "--checks", checks, "--max-examples", "20", "--seed", "1", "--workers", "2",
           "--request-timeout", "30", "--no-color",
           # Management calls (publish, activate, delete) each start an R worker and change what is served:
           # tests/integration/test_publish.py and tests/unit/test_manage.py cover them.
           "--exclude-tag", "manage"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "internal error on" not in fuzz_server.log_text()
